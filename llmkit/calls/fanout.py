"""Bounded fan-out: run a coroutine function over many inputs with a fixed window of
worker tasks (never a task per input), results in input order or as completed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

__all__ = ["fan_out", "fan_out_iter"]

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class _Progress:
    def __init__(self, enabled: bool | Any, total: int | None, desc: str) -> None:
        self.bar: Any = None
        if enabled is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req")
        elif enabled not in (False, None):
            self.bar = enabled  # a tqdm-like object supplied by the caller

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None and hasattr(self.bar, "close"):
            self.bar.close()


async def fan_out_iter(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    concurrency: int,
    return_exceptions: bool = False,
    progress: bool | Any = False,
    total: int | None = None,
    desc: str = "batch",
) -> AsyncGenerator[tuple[int, R | BaseException], None]:
    """Yield ``(index, result)`` as results complete. With ``return_exceptions`` an item's
    exception is yielded in place of its result; otherwise the first one is raised and the
    remaining work is cancelled. Stopping the iteration (``aclose()``, or leaving an
    ``async with contextlib.aclosing(...)`` block) cancels the workers; so does cancelling
    the task that iterates, even when it never closes the iterator (the workers never
    block on a reader that is gone)."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    source = iter(enumerate(items))
    # Results wait in an unbounded queue, but a worker takes an item only with a slot, and
    # the reader gives the slot back when it takes the result: at most ``2 * concurrency``
    # results wait. Nothing ever waits to put into the queue, so workers whose reader is
    # gone (it raised, or stopped iterating) end as soon as they are cancelled.
    out: asyncio.Queue[Any] = asyncio.Queue()
    slots = asyncio.Semaphore(concurrency * 2)
    bar = _Progress(progress, total, desc)

    async def worker() -> None:
        while True:
            await slots.acquire()
            try:
                index, item = next(source)  # the shared iterator hands out one item at a time
            except StopIteration:
                slots.release()
                return
            try:
                result: Any = await func(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not return_exceptions:
                    out.put_nowait((index, exc, True))
                    return
                result = exc
            out.put_nowait((index, result, False))

    async def run_workers() -> None:
        try:
            async with asyncio.TaskGroup() if hasattr(asyncio, "TaskGroup") else _Group() as tg:
                for _ in range(concurrency):
                    tg.create_task(worker())
        finally:
            out.put_nowait(_DONE)

    runner = asyncio.ensure_future(run_workers())
    try:
        while True:
            got = await out.get()
            if got is _DONE:
                break
            slots.release()
            index, result, failed = got
            bar.update()
            if failed:
                raise result
            yield index, result
        await runner
    finally:
        bar.close()
        if not runner.done():
            runner.cancel()
            try:
                await runner
            except (asyncio.CancelledError, Exception):
                pass


class _Group:
    """asyncio.TaskGroup stand-in for Python 3.10: cancel the rest on first failure."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> _Group:
        return self

    def create_task(self, coro: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await asyncio.gather(*self.tasks)
        except BaseException:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            raise


async def fan_out(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    concurrency: int,
    return_exceptions: bool = False,
    progress: bool | Any = False,
    desc: str = "batch",
) -> list[R | BaseException]:
    """Results in input order (see :func:`fan_out_iter`)."""
    items = items if hasattr(items, "__len__") else list(items)
    results: list[Any] = [None] * len(items)  # type: ignore[arg-type]
    async for index, result in fan_out_iter(
        func,
        items,
        concurrency=concurrency,
        return_exceptions=return_exceptions,
        progress=progress,
        desc=desc,
    ):
        results[index] = result
    return results
