"""Live mode: the rows to do fan out through the instance (its concurrency limiter and
rate limits), each outcome journaled as it arrives."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from llmkit.base import BaseLLM
from llmkit.calls.fanout import fan_out_iter
from llmkit.jobs.job import Job
from llmkit.jobs.progress import progress_bar
from llmkit.jobs.source import JobRow

__all__ = ["run_live"]


async def run_live(job: Job, llm: BaseLLM, *, concurrency: int, progress: Any) -> None:
    todo = job.todo()
    if not todo:
        return

    async def answer(row: JobRow) -> Any:
        return await llm.chat(row.messages, **row.options)

    bar = progress_bar(progress, total=len(todo), desc=f"{job.provider} batch")
    try:
        results = fan_out_iter(answer, todo, concurrency=concurrency, return_exceptions=True)
        async with aclosing(results) as it:
            async for pos, result in it:
                job.record(todo[pos], result)
                bar.update(1)
    finally:
        bar.close()
