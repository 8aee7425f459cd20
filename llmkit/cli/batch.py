"""``llmkit batch``: a prompts file in, JSONL records out (see :mod:`llmkit.jobs.jobfile`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llmkit.cli._common import (
    EXIT_LLM,
    EXIT_OK,
    UsageError,
    make_config,
    print_error,
    progress_bar,
    write,
)

if TYPE_CHECKING:
    from llmkit.base import BaseLLM
    from llmkit.jobs.jobfile import Prompt


def load_job(args: argparse.Namespace, provider: str, model: str) -> tuple[list[Prompt], set[int]]:
    """The prompts, and the indexes an earlier run of the same output already answered."""
    from llmkit.jobs.jobfile import BatchFileError, done_indexes, read_prompts, read_records

    try:
        if args.input == "-":
            prompts = read_prompts(sys.stdin.read().splitlines(), "stdin")
        else:
            prompts = read_prompts(args.input)
        if not prompts:
            raise UsageError(f"{args.input if args.input != '-' else 'stdin'} holds no prompts")
        done: set[int] = set()
        if args.output != "-":
            done = done_indexes(
                prompts,
                read_records(Path(args.output)),
                provider=provider,
                model=model,
                output=args.output,
                force=args.force,
            )
    except BatchFileError as exc:
        raise UsageError(exc.message) from None
    return prompts, done


def summary(provider: str, model: str, answered: int, failed: int, done: int, total: int) -> str:
    return (
        f"{provider} {model}: {answered} answered, {failed} failed, {done} already done "
        f"({total} prompts)"
    )


def finish(provider: str, model: str, answered: int, failed: int, done: int, total: int) -> int:
    text = summary(provider, model, answered, failed, done, total)
    if failed:
        print_error("batch", f"{failed} of {total} prompts failed; rerun to retry them. {text}")
        return EXIT_LLM
    write(sys.stderr, text + "\n")
    return EXIT_OK


async def cmd_batch(args: argparse.Namespace, llm: BaseLLM) -> int:
    from llmkit.calls.fanout import fan_out_iter
    from llmkit.jobs.jobfile import compact, make_record, open_output

    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    provider, model = llm.provider, llm.model
    prompts, done = load_job(args, provider, model)
    todo = [p for p in prompts if p.index not in done]
    to_file = args.output != "-"
    out_path = Path(args.output)
    bar: Any = None if args.no_progress else progress_bar(total=len(todo), desc=f"{provider} batch", unit="req")
    failed = 0
    pending: dict[int, str] = {}  # stdout: records waiting for their turn
    next_pos = 0
    out: IO[str]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open_output(out_path)) if to_file else sys.stdout
        try:
            results = fan_out_iter(
                llm.chat,
                (p.payload for p in todo),
                concurrency=args.concurrency or llm.config.max_concurrency,
                return_exceptions=True,
                total=len(todo),
            )
            async for pos, result in results:
                record = make_record(todo[pos], provider, model, result)
                failed += "error" in record
                line = json.dumps(record, ensure_ascii=False) + "\n"
                if to_file:
                    write(out, line)
                else:
                    pending[pos] = line
                    while next_pos in pending:
                        write(out, pending.pop(next_pos))
                        next_pos += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    if to_file:
        compact(out_path, prompts)
    return finish(provider, model, len(todo) - failed, failed, len(done), len(prompts))


def cmd_batch_ray(args: argparse.Namespace) -> int:
    """``batch --ray``: the same job on Ray actors (:func:`llmkit.ray.run_batch`)."""
    from llmkit.jobs.jobfile import BatchFileError

    if args.output == "-" or args.input == "-":
        raise UsageError("--ray reads a prompts file and writes to a file: pass IN and -o OUT")
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
    except BatchFileError as exc:
        raise UsageError(exc.message) from None
    return finish(
        result.provider, result.model, result.answered, result.failed, result.already_done, result.total
    )
