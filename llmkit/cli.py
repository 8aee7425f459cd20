"""The ``llmkit`` command line (also ``python -m llmkit``).

Subcommands: ``providers``, ``health``, ``models``, ``generate``, ``stream``, ``embed``,
``batch`` and ``pull``. Global flags (before or after the subcommand): ``--provider``,
``--model``, ``--base-url``, ``--config``, ``--max-tokens``, ``--temperature``.

The provider is ``--provider``, else the ``provider`` of ``--config``, else the
``LLMKIT_PROVIDER`` environment variable, else ``mock``: the built-in deterministic
provider, which needs no API key and no network. API keys are read from the environment
only (``OPENAI_API_KEY``, ``HUGGINGFACE_API_TOKEN`` / ``HF_TOKEN``), never from flags.

Errors are printed as one line, ``error: <type>: <message>``, on stderr. Exit codes:
0 success, 1 an LLM error (or failed items in ``batch``), 2 a usage or configuration
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from llmkit.base import BaseLLM
    from llmkit.config import LLMConfig

__all__ = ["main"]

DEFAULT_PROVIDER = "mock"
EXIT_OK = 0
EXIT_LLM = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line or input file (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        _print_error("usage", f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


# --------------------------------------------------------------------------- parser


def _add_global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On subcommands the defaults are suppressed, so a flag given before the subcommand
    # is not overwritten by the subcommand's default.
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("provider options")
    group.add_argument(
        "--provider",
        default=default,
        help="provider name (default: $LLMKIT_PROVIDER, else 'mock', which needs no key)",
    )
    group.add_argument("--model", default=default, help="model name")
    group.add_argument("--base-url", default=default, help="server base URL")
    group.add_argument(
        "--config", default=default, metavar="FILE", help="YAML or JSON config file (llmkit.load_config)"
    )
    group.add_argument("--max-tokens", type=int, default=default, help="maximum reply tokens")
    group.add_argument("--temperature", type=float, default=default, help="sampling temperature")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llmkit",
        description="One command line over OpenAI(-compatible), Ollama, Hugging Face and mock providers.",
        epilog=(
            "API keys come from the environment only (OPENAI_API_KEY, HUGGINGFACE_API_TOKEN/HF_TOKEN); "
            "base URLs also from OPENAI_BASE_URL and OLLAMA_HOST. Without --provider the "
            "provider is $LLMKIT_PROVIDER, else 'mock'."
        ),
    )
    from llmkit import __version__

    parser.add_argument("--version", action="version", version=f"llmkit {__version__}")
    _add_global_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        _add_global_flags(p, suppress=True)
        return p

    command("providers", "list the registered providers")
    command("health", "check that the provider is reachable and usable")

    p = command("models", "list the provider's models")
    p.add_argument("query", nargs="?", default=None, help="search text (Hugging Face Hub)")
    p.add_argument("--limit", type=int, default=20, help="at most this many (Hugging Face Hub)")
    p.add_argument("--json", action="store_true", help="print the raw model objects as JSON lines")

    for name, help in (
        ("generate", "generate a reply to a prompt"),
        ("stream", "stream a reply to a prompt, printing text as it arrives"),
    ):
        p = command(name, help)
        p.add_argument("prompt", nargs="?", default=None, help="the prompt ('-' or none: stdin)")
        p.add_argument("--system", default=None, help="a system message")

    p = command("embed", "print the embedding vector(s) of text(s) as JSON")
    p.add_argument("texts", nargs="*", help="texts (none: one text from stdin)")

    p = command("batch", "generate replies for a prompts file (JSONL out, resumable)")
    p.add_argument(
        "input",
        help="prompts file ('-' for stdin): one prompt per line, or JSON lines with "
        '{"prompt": ...} or {"messages": [...]}; blank lines are skipped',
    )
    p.add_argument(
        "-o",
        "--output",
        default="-",
        help="JSONL output file (default stdout). Rerunning with the same file skips the "
        "prompts already answered successfully and retries the failed ones",
    )
    p.add_argument("--concurrency", type=int, default=None, help="requests in flight at most")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    p = command("pull", "download a model (Ollama) with a progress bar")
    p.add_argument("name", help="model name, e.g. llama3.2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


# --------------------------------------------------------------------------- helpers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _print_error(kind: str, message: str) -> None:
    from llmkit.errors import redact

    sys.stderr.write(f"error: {kind}: {_one_line(redact(message))}\n")
    sys.stderr.flush()


def _make_config(args: argparse.Namespace) -> LLMConfig:
    from pydantic import ValidationError

    from llmkit.config import LLMConfig, load_config
    from llmkit.errors import ConfigError

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
        provider = args.provider or os.environ.get("LLMKIT_PROVIDER") or DEFAULT_PROVIDER
        return LLMConfig.from_env(provider, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def _create(args: argparse.Namespace) -> BaseLLM:
    from llmkit.registry import create_llm

    return create_llm(_make_config(args))


def _messages(prompt: str, system: str | None) -> Any:
    if system:
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return prompt


def _read_prompt(value: str | None) -> str:
    if value is None or value == "-":
        if sys.stdin.isatty() and value is None:
            raise UsageError("no prompt given (pass one, or '-' to read stdin)")
        text = sys.stdin.read()
        if not text.strip():
            raise UsageError("empty prompt on stdin")
        return text.rstrip("\n")
    return value


def _write(stream: IO[str], text: str) -> None:
    stream.write(text)
    stream.flush()


def _model_id(item: Any) -> str:
    if isinstance(item, dict):
        for key in ("id", "name", "model", "modelId"):
            if item.get(key):
                return str(item[key])
        return json.dumps(item, default=str)
    return str(item)


def _tqdm(**kwargs: Any) -> Any:
    """A tqdm bar on stderr, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


# --------------------------------------------------------------------------- commands


async def _cmd_providers(args: argparse.Namespace) -> int:
    from llmkit.registry import list_providers

    default = (os.environ.get("LLMKIT_PROVIDER") or DEFAULT_PROVIDER).lower()
    for name in list_providers():
        _write(sys.stdout, f"{name}{'  (default)' if name == default else ''}\n")
    return EXIT_OK


async def _cmd_health(args: argparse.Namespace, llm: BaseLLM) -> int:
    await llm.health_check()
    target = llm.config.base_url or "built-in"
    _write(sys.stdout, f"ok: {llm.provider} model={llm.model} ({target})\n")
    return EXIT_OK


async def _cmd_models(args: argparse.Namespace, llm: BaseLLM) -> int:
    from llmkit.errors import NotSupportedError

    list_models = getattr(llm, "list_models", None)
    search_models = getattr(llm, "search_models", None)
    if callable(search_models):
        items = await search_models(args.query, limit=args.limit)
    elif callable(list_models):
        items = await list_models()
    else:
        raise NotSupportedError(
            f"provider {llm.provider!r} cannot list models", provider=llm.provider
        )
    for item in items:
        line = json.dumps(item, default=str) if args.json else _model_id(item)
        _write(sys.stdout, line + "\n")
    return EXIT_OK


async def _cmd_generate(args: argparse.Namespace, llm: BaseLLM) -> int:
    prompt = _read_prompt(args.prompt)
    text = await llm.generate(_messages(prompt, args.system))
    _write(sys.stdout, text + "\n")
    return EXIT_OK


async def _cmd_stream(args: argparse.Namespace, llm: BaseLLM) -> int:
    prompt = _read_prompt(args.prompt)
    stream = llm.generate_stream(_messages(prompt, args.system))
    try:
        async for delta in stream:
            _write(sys.stdout, delta)
    finally:
        await stream.aclose()
        _write(sys.stdout, "\n")
    return EXIT_OK


async def _cmd_embed(args: argparse.Namespace, llm: BaseLLM) -> int:
    texts: list[str] = list(args.texts)
    if not texts:
        texts = [_read_prompt("-")]
    if len(texts) == 1:
        out: Any = await llm.embed(texts[0])
    else:
        out = await llm.embed_batch(texts)
    _write(sys.stdout, json.dumps(out) + "\n")
    return EXIT_OK


async def _cmd_pull(args: argparse.Namespace, llm: BaseLLM) -> int:
    from llmkit.errors import NotSupportedError

    pull = getattr(llm, "pull_model", None)
    if not callable(pull):
        raise NotSupportedError(
            f"provider {llm.provider!r} cannot pull models (use --provider ollama)",
            provider=llm.provider,
        )
    bar: Any = None
    bar_key: Any = None
    last_status = ""
    progress: AsyncIterator[dict[str, Any]] = pull(args.name)
    try:
        async for event in progress:
            status = str(event.get("status", ""))
            total, completed = event.get("total"), event.get("completed")
            if args.no_progress:
                if status != last_status:
                    _write(sys.stderr, status + "\n")
                last_status = status
                continue
            if isinstance(total, int) and total > 0:
                key = event.get("digest") or status
                if bar is None or key != bar_key:
                    if bar is not None:
                        bar.close()
                    bar = _tqdm(total=total, desc=status[:40], unit="B", unit_scale=True)
                    bar_key = key
                if bar is not None and isinstance(completed, int):
                    bar.update(max(0, completed - bar.n))
            elif status != last_status:
                if bar is not None:
                    bar.close()
                    bar = None
                _write(sys.stderr, status + "\n")
            last_status = status
    finally:
        if bar is not None:
            bar.close()
        aclose = getattr(progress, "aclose", None)
        if aclose is not None:
            await aclose()
    _write(sys.stdout, f"pulled {args.name}\n")
    return EXIT_OK


# --------------------------------------------------------------------------- batch


def _parse_prompt_line(line: str, lineno: int) -> tuple[str, Any]:
    """(prompt text for the record, what is sent to the model)."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if isinstance(obj.get("prompt"), str):
                return obj["prompt"], obj["prompt"]
            if isinstance(obj.get("messages"), list) and obj["messages"]:
                msgs = obj["messages"]
                last = next(
                    (m for m in reversed(msgs) if isinstance(m, dict) and m.get("role") == "user"),
                    msgs[-1],
                )
                content = last.get("content", "") if isinstance(last, dict) else last
                return (content if isinstance(content, str) else json.dumps(content)), msgs
            raise UsageError(f"line {lineno}: a JSON line needs a 'prompt' string or a 'messages' list")
    return stripped, stripped


def _read_prompts(path: str) -> list[tuple[str, Any]]:
    if path == "-":
        lines: Sequence[str] = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [
        _parse_prompt_line(line, n) for n, line in enumerate(lines, 1) if line.strip()
    ]


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an earlier run (a torn last line is ignored)."""
    records: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return records
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("index"), int):
            records.append(obj)
    return records


def _compact(path: Path, total: int) -> None:
    """Rewrite the output in index order, one record per index (a success wins)."""
    best: dict[int, dict[str, Any]] = {}
    for rec in _read_records(path):
        i = rec["index"]
        if i >= total:
            continue
        if i not in best or "output" in rec or "output" not in best[i]:
            best[i] = rec
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in sorted(best):
            f.write(json.dumps(best[i], ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _open_output(path: Path) -> IO[str]:
    """The output file opened for appending (a torn last line gets its newline)."""
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    out = path.open("a", encoding="utf-8")
    if torn:
        out.write("\n")
    return out


def _error_record(exc: BaseException) -> dict[str, str]:
    from llmkit.errors import LLMError, redact

    if isinstance(exc, LLMError):
        return {"type": exc.type, "message": exc.message}
    return {"type": type(exc).__name__, "message": redact(str(exc))}


async def _cmd_batch(args: argparse.Namespace, llm: BaseLLM) -> int:
    prompts = _read_prompts(args.input)
    to_file = args.output != "-"
    out_path = Path(args.output)
    done: set[int] = set()
    if to_file:
        done = {r["index"] for r in _read_records(out_path) if "output" in r}
    todo = [i for i in range(len(prompts)) if i not in done]
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")

    bar: Any = None
    if not args.no_progress:
        bar = _tqdm(total=len(todo), desc=f"{llm.provider} batch", unit="req")
    failed = 0
    pending: dict[int, str] = {}  # stdout: records waiting for their turn
    next_index = 0
    out: IO[str]
    with contextlib.ExitStack() as stack:
        if to_file:
            out = stack.enter_context(_open_output(out_path))
        else:
            out = sys.stdout
        try:
            results = llm.batch_generate_iter(
                (prompts[i][1] for i in todo),
                concurrency=args.concurrency,
                return_exceptions=True,
            )
            async for pos, result in results:
                index = todo[pos]
                record: dict[str, Any] = {"index": index, "prompt": prompts[index][0]}
                if isinstance(result, BaseException):
                    failed += 1
                    record["error"] = _error_record(result)
                else:
                    record["output"] = result
                line = json.dumps(record, ensure_ascii=False) + "\n"
                if to_file:
                    _write(out, line)
                else:
                    pending[index] = line
                    while next_index < len(todo) and todo[next_index] in pending:
                        _write(out, pending.pop(todo[next_index]))
                        next_index += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    if to_file:
        _compact(out_path, len(prompts))
    summary = (
        f"{len(todo) - failed} answered, {failed} failed, {len(done)} already done "
        f"({len(prompts)} prompts)"
    )
    if failed:
        _print_error("batch", f"{failed} of {len(prompts)} prompts failed; rerun to retry them. {summary}")
        return EXIT_LLM
    _write(sys.stderr, summary + "\n")
    return EXIT_OK


_COMMANDS = {
    "health": _cmd_health,
    "models": _cmd_models,
    "generate": _cmd_generate,
    "stream": _cmd_stream,
    "embed": _cmd_embed,
    "batch": _cmd_batch,
    "pull": _cmd_pull,
}


async def _run(args: argparse.Namespace) -> int:
    if args.command == "providers":
        return await _cmd_providers(args)
    llm = _create(args)
    try:
        return await _COMMANDS[args.command](args, llm)
    finally:
        await llm.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    from llmkit.errors import ConfigError, LLMError, ProviderNotFoundError

    try:
        return asyncio.run(_run(args))
    except (ConfigError, ProviderNotFoundError) as exc:
        _print_error(exc.type, exc.message)
        return EXIT_USAGE
    except LLMError as exc:
        _print_error(exc.type, exc.message)
        return EXIT_LLM
    except UsageError as exc:
        _print_error("usage", str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _print_error("interrupted", "stopped by the user")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # silence the exit-time flush
        return EXIT_LLM
    except Exception as exc:
        if os.environ.get("LLMKIT_DEBUG"):
            raise
        _print_error("internal", f"{type(exc).__name__}: {exc} (set LLMKIT_DEBUG=1 for a traceback)")
        return EXIT_LLM
