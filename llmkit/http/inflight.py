"""What one transport has in flight, so that closing the instance ends all of it at once.

Closing a connection pool does not wake a task that is reading a response body: aiohttp
leaves it parked in the body reader (the per-read timeout is gone with the connection), so
a consumer half-way through a stream would wait forever. The transport therefore tracks
every response whose body is being read, every retry back-off it sleeps through and every
wait for the rate limiter's turn; on :meth:`InFlight.close` each response is closed on its
own event loop (its reader then fails at once, and the transport turns that into "the
instance was closed"), each back-off ends early and each rate-limit wait is interrupted
with the transport's "closed" error. Responses and waits of any number of loops and threads are tracked;
adding and removing is a set operation (no lock, no task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

__all__ = ["InFlight"]

T = TypeVar("T")
_Wait = tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
    """``fn(*args)`` on ``loop``: now when it is the running loop, else scheduled there."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        fn(*args)
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that loop is closed: nothing of it is waiting any more
        pass


class InFlight:
    """Responses being read and back-offs being waited, across loops and threads."""

    def __init__(self) -> None:
        self.closed = False
        self._responses: set[aiohttp.ClientResponse] = set()
        self._pauses: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._waits: set[_Wait] = set()
        self._interrupted: set[_Wait] = set()

    def track(self, resp: aiohttp.ClientResponse) -> None:
        """``resp``'s body is about to be read (call from its loop)."""
        self._responses.add(resp)
        if self.closed:  # closed between the request and its headers
            resp.close()

    def untrack(self, resp: aiohttp.ClientResponse) -> None:
        self._responses.discard(resp)

    async def pause(self, delay: float) -> None:
        """``asyncio.sleep(delay)`` that :meth:`close` ends early."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _wake, waiter)
        entry = (loop, waiter)
        self._pauses.add(entry)
        try:
            await waiter
        finally:
            handle.cancel()
            self._pauses.discard(entry)

    async def interruptible(self, awaitable: Awaitable[T], closed: Callable[[], BaseException]) -> T:
        """``await awaitable``; :meth:`close` interrupts it (the task is cancelled there and
        ``closed()`` is raised instead). For waits that do their own sleeping (the rate
        limiter's turn)."""
        entry = self.wait_entry()
        self._waits.add(entry)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not self.interrupted(entry):
                raise
            raise closed() from None
        finally:
            self._waits.discard(entry)

    # The same in pieces, for a loop that awaits many times (a stream's chunks) without a
    # coroutine per wait: ``entry = wait_entry()`` once, then around each await
    # ``waiting(entry)`` ... ``done_waiting(entry)``, and on ``CancelledError``
    # ``interrupted(entry)`` says whether the close caused it.

    def wait_entry(self) -> _Wait:
        """The running task's entry (call inside a task)."""
        task = asyncio.current_task()
        assert task is not None
        return (asyncio.get_running_loop(), task)

    def waiting(self, entry: _Wait) -> None:
        self._waits.add(entry)

    def done_waiting(self, entry: _Wait) -> None:
        self._waits.discard(entry)

    def interrupted(self, entry: _Wait) -> bool:
        """After a ``CancelledError`` during a wait of ``entry``: True when :meth:`close`
        cancelled it and nobody else did (the task is uncancelled then)."""
        if entry not in self._interrupted:
            return False
        self._interrupted.discard(entry)
        uncancel = getattr(entry[1], "uncancel", None)  # Python 3.11+
        return uncancel is None or uncancel() == 0

    def _interrupt(self, entry: _Wait) -> None:
        """On the task's loop: cancel it if it is still waiting."""
        if entry in self._waits:
            entry[1].cancel()
        else:
            self._interrupted.discard(entry)

    def close(self) -> None:
        """Mark closed, then wake everything in flight (each on its own loop)."""
        self.closed = True
        for resp in list(self._responses):
            loop = getattr(resp, "_loop", None)
            if loop is None:
                resp.close()
            else:
                _on_loop(loop, resp.close)
        for loop, waiter in list(self._pauses):
            _on_loop(loop, _wake, waiter)
        for entry in list(self._waits):
            self._interrupted.add(entry)
            _on_loop(entry[0], self._interrupt, entry)
