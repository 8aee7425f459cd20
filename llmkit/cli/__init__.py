"""The ``llmkit`` command line (also ``python -m llmkit``).

Subcommands: ``providers``, ``health``, ``models``, ``generate``, ``stream``, ``embed``,
``batch`` and ``pull``. Global flags (before or after the subcommand): ``--provider``,
``--model``, ``--base-url``, ``--config``, ``--max-tokens``, ``--temperature``, ``-v``.
``batch --mode live|provider`` runs a batch job (:mod:`llmkit.jobs`; ``provider``: the
provider's Batch API), ``batch --ray [ADDRESS] --actors N`` runs it on a Ray cluster
(:mod:`llmkit.ray`). Flags are never abbreviated: a prefix of a flag is an error.

The provider is ``--provider``, else the ``provider`` of ``--config``, else the
``LLMKIT_PROVIDER`` environment variable. With none of them the built-in deterministic
``mock`` provider answers, and says so on stderr; a ``--model`` or ``--base-url`` without
a provider is an error. API keys are read from the environment only (``OPENAI_API_KEY``,
``HUGGINGFACE_API_TOKEN`` / ``HF_TOKEN``), never from flags.

Errors are printed as one line, ``error: <type>: <message>``, on stderr. Exit codes:
0 success, 1 an LLM error (or failed items in ``batch``), 2 a usage or configuration
error, 130 interrupted (``batch`` then says how many rows are done and how to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from llmkit.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_LLM,
    EXIT_USAGE,
    UsageError,
    create,
    print_error,
    setup_logging,
)
from llmkit.cli.batch import cmd_batch, cmd_batch_ray, interrupted
from llmkit.cli.commands import (
    cmd_embed,
    cmd_generate,
    cmd_health,
    cmd_models,
    cmd_providers,
    cmd_pull,
    cmd_stream,
)
from llmkit.cli.parser import build_parser

if TYPE_CHECKING:
    from llmkit.base import BaseLLM

__all__ = ["build_parser", "main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace, BaseLLM], Awaitable[int]]] = {
    "health": cmd_health,
    "models": cmd_models,
    "generate": cmd_generate,
    "stream": cmd_stream,
    "embed": cmd_embed,
    "batch": cmd_batch,
    "pull": cmd_pull,
}


async def _run(args: argparse.Namespace) -> int:
    if args.command == "providers":
        return await cmd_providers(args)
    llm = create(args)
    try:
        return await _COMMANDS[args.command](args, llm)
    finally:
        await llm.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from llmkit.core.errors import ConfigError, LLMError, ProviderNotFoundError

    setup_logging(args.verbose)
    try:
        if args.command == "batch" and args.ray is not None:
            return cmd_batch_ray(args)  # Ray drives its own workers; no event loop here
        return asyncio.run(_run(args))
    except (ConfigError, ProviderNotFoundError) as exc:
        print_error(exc.type, exc.message)
        return EXIT_USAGE
    except LLMError as exc:
        print_error(exc.type, exc.message)
        return EXIT_LLM
    except UsageError as exc:
        print_error("usage", str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command == "batch":
            print_error("interrupted", interrupted(args, argv))
        else:
            print_error("interrupted", "stopped by the user")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # silence the exit-time flush
        return EXIT_LLM
    except Exception as exc:
        if os.environ.get("LLMKIT_DEBUG"):
            raise
        print_error("internal", f"{type(exc).__name__}: {exc} (set LLMKIT_DEBUG=1 for a traceback)")
        return EXIT_LLM
