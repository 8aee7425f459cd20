"""``llmkit batch``: a prompts file in, JSONL rows out, through :func:`llmkit.jobs.run`
(``--mode live`` or ``--mode provider``) or :func:`llmkit.ray.run_batch` (``--ray``).
Ctrl-C stops it and prints how many rows are done and the command that resumes."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.cli._common import (
    EXIT_LLM,
    EXIT_OK,
    UsageError,
    make_config,
    print_error,
    write,
)

if TYPE_CHECKING:
    from llmkit.base import BaseLLM


def finish(provider: str, model: str, answered: int, failed: int, done: int, total: int) -> int:
    text = (
        f"{provider} {model}: {answered} answered, {failed} failed, {done} already done "
        f"({total} prompts)"
    )
    if failed:
        print_error("batch", f"{failed} of {total} prompts failed; rerun to retry them. {text}")
        return EXIT_LLM
    write(sys.stderr, text + "\n")
    return EXIT_OK


def _source(args: argparse.Namespace) -> Any:
    return sys.stdin.buffer.read() if args.input == "-" else args.input


async def cmd_batch(args: argparse.Namespace, llm: BaseLLM) -> int:
    from llmkit import jobs
    from llmkit.jobs.errors import JobWriteError

    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if args.mode == "provider" and args.output == "-":
        raise UsageError("--mode provider writes to a file: pass -o OUT (its state file sits beside it)")
    try:
        summary = await jobs.run(  # the progress bar: on a terminal only
            _source(args), llm, output=args.output, mode=args.mode,
            concurrency=args.concurrency or llm.config.max_concurrency,
            progress=not args.no_progress, force=args.force,
            poll_interval=args.poll_interval, max_batch_requests=args.max_batch_requests,
            name="stdin",
        )
    except JobWriteError:
        raise  # printed as a configuration error: which file, and why
    except jobs.JobFileError as exc:
        raise UsageError(exc.message) from None
    return finish(summary.provider, summary.model, summary.answered, summary.failed,
                  summary.already_done, summary.rows)


def interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """What Ctrl-C says: the rows done so far and the command that resumes."""
    from llmkit.jobs.jobfile import journal_path, read_rows, state_path

    command = "llmkit " + shlex.join(argv)
    if args.output == "-":
        return f"stopped by the user; rerun to start over: {command}"
    out = Path(args.output)
    try:
        done = {r["index"] for r in read_rows(out) + read_rows(journal_path(out)) if "output" in r}
        total = _rows(args)
    except Exception:  # the note must not hide the interruption
        return f"stopped by the user; resume with: {command}"
    of = f" of {total}" if total is not None else ""
    running = ""
    if args.mode == "provider" and state_path(out).exists():
        running = " (the provider's batches keep running; the rerun collects them, submitting nothing twice)"
    return f"{len(done)}{of} rows done{running}; resume with: {command}"


def _rows(args: argparse.Namespace) -> int | None:
    from llmkit.jobs.source import read_source

    return None if args.input == "-" else len(read_source(args.input))


def cmd_batch_ray(args: argparse.Namespace) -> int:
    """``batch --ray``: the same job on Ray actors (:func:`llmkit.ray.run_batch`)."""
    from llmkit.jobs.errors import JobFileError, JobWriteError

    if args.output == "-" or args.input == "-":
        raise UsageError("--ray reads a prompts file and writes to a file: pass IN and -o OUT")
    if args.mode != "live":
        raise UsageError("--ray runs the job on the cluster's actors; --mode provider is not for --ray")
    if args.actors < 1 or (args.concurrency is not None and args.concurrency < 1):
        raise UsageError("--actors and --concurrency must be >= 1")
    config = make_config(args)
    try:
        from llmkit.ray import run_batch
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'llmkit[ray]'") from None
    try:
        result = run_batch(
            args.input,
            config,
            output=args.output,
            actors=args.actors,
            concurrency_per_actor=args.concurrency or config.max_concurrency,
            force=args.force,
            progress=not args.no_progress and sys.stderr.isatty(),
            address=None if args.ray == "local" else args.ray,
        )
    except JobWriteError:
        raise
    except JobFileError as exc:
        raise UsageError(exc.message) from None
    return finish(
        result.provider, result.model, result.answered, result.failed, result.already_done, result.total
    )
