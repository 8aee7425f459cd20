"""What every command shares: exit codes, one-line errors, output helpers, and the
provider and configuration the flags, the config file and the environment choose."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from llmkit.base import BaseLLM
    from llmkit.core.config import LLMConfig

MOCK_PROVIDER = "mock"
EXIT_OK = 0
EXIT_LLM = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line or input file (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2, and no abbreviated flags (a prefix
    is never taken for a flag: ``--mode`` is not ``--model``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print_error("usage", f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_error(kind: str, message: str) -> None:
    from llmkit.core.errors import redact

    sys.stderr.write(f"error: {kind}: {one_line(redact(message))}\n")
    sys.stderr.flush()


def write(stream: IO[str], text: str) -> None:
    stream.write(text)
    stream.flush()


def note(text: str) -> None:
    """A line for the user on stderr."""
    write(sys.stderr, f"llmkit: {text}\n")


def progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar on stderr when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def setup_logging(verbose: int) -> None:
    """``-v``: retries and other client events on stderr; ``-vv``: debug detail too."""
    if not verbose:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmkit: %(message)s"))
    logger = logging.getLogger("llmkit")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def chosen_provider(args: argparse.Namespace) -> str | None:
    """``--provider``, else ``$LLMKIT_PROVIDER`` (a config file names its own)."""
    return args.provider or os.environ.get("LLMKIT_PROVIDER") or None


def make_config(args: argparse.Namespace) -> LLMConfig:
    """The configuration from ``--config``, ``--provider`` / ``$LLMKIT_PROVIDER`` and the
    flags. With none of those, the mock provider, said on stderr; a model or base URL
    given without a provider is an error rather than a silent mock run."""
    from pydantic import ValidationError

    from llmkit.core.config import LLMConfig, load_config
    from llmkit.core.errors import ConfigError

    overrides: dict[str, Any] = {
        "model": args.model,
        "base_url": args.base_url,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        if args.config:
            config = load_config(args.config)
            data = config.model_dump()
            data["api_key"] = config.api_key  # model_dump masks it
            if args.provider and args.provider.lower() != config.provider:
                return LLMConfig.from_env(args.provider, **overrides)
            data.update(overrides)
            return LLMConfig.for_provider(data)
        provider = chosen_provider(args)
        if provider is None:
            named = []
            if overrides.get("model", MOCK_PROVIDER) != MOCK_PROVIDER:
                named.append(f"--model {overrides['model']}")
            if "base_url" in overrides:
                named.append("--base-url")
            if named:
                raise UsageError(
                    f"{' and '.join(named)} given but no provider: pass --provider (e.g. "
                    "openai, ollama, huggingface), --config, or set LLMKIT_PROVIDER"
                )
            config = LLMConfig.from_env(MOCK_PROVIDER, **overrides)
            note(
                "no provider given (--provider, --config or LLMKIT_PROVIDER): using the "
                "built-in mock provider, which answers without any model"
            )
            return config
        return LLMConfig.from_env(provider, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def create(args: argparse.Namespace) -> BaseLLM:
    from llmkit.registry import create_llm

    return create_llm(make_config(args))


def messages(prompt: str, system: str | None) -> Any:
    if system:
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return prompt


def read_prompt(value: str | None) -> str:
    if value is None or value == "-":
        if sys.stdin.isatty() and value is None:
            raise UsageError("no prompt given (pass one, or '-' to read stdin)")
        text = sys.stdin.read()
        if not text.strip():
            raise UsageError("empty prompt on stdin")
        return text.rstrip("\n")
    return value
