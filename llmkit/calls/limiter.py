"""Per-instance concurrency limiter: at most ``limit`` holders at once, across every event
loop and thread that uses the instance.

The count lives under a :class:`threading.Lock`; a caller that finds no free slot parks an
:class:`asyncio.Future` of its own loop in one FIFO queue shared by all loops. A release
hands its slot straight to the first live waiter and wakes it: directly on the same loop,
with ``loop.call_soon_threadsafe`` from another (no polling). A waiter cancelled after its
slot was handed over passes the slot on, so cancellation never loses or leaks a slot.

:meth:`ConcurrencyLimiter.close` (the instance was closed) wakes every waiter with
:class:`LimiterClosed` and refuses every later wait: a call queued behind a slot that an
idle stream holds does not wait for a stream nobody will finish.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType

__all__ = ["ConcurrencyLimiter", "LimiterClosed"]


class LimiterClosed(Exception):
    """The limiter was closed while (or before) the caller waited for a slot."""


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _refuse(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(LimiterClosed())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(
    waiter: _Waiter,
    how: Callable[[asyncio.Future[None]], None],
    running: asyncio.AbstractEventLoop | None,
) -> bool:
    """``how(waiter.future)`` on the waiter's loop: directly when it is the running one,
    else through that loop. False when its loop is closed (nobody will ever await it)."""
    if waiter.loop is running:
        how(waiter.future)
        return True
    try:
        waiter.loop.call_soon_threadsafe(how, waiter.future)
    except RuntimeError:
        return False
    return True


class ConcurrencyLimiter:
    """A counting semaphore shared by threads and event loops (``async with limiter`` or
    ``await limiter.acquire()`` ... ``limiter.release()``)."""

    __slots__ = ("_closed", "_in_use", "_lock", "_peak", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._in_use = 0
        self._peak = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    def in_use(self) -> int:
        """Slots held now."""
        return self._in_use

    def waiting(self) -> int:
        """Callers queued for a slot."""
        return len(self._waiters)

    def peak(self) -> int:
        """The most slots ever held at once."""
        return self._peak

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued (no await: the common case of a
        caller below the limit costs no coroutine)."""
        with self._lock:
            if self._in_use < self.limit and not self._waiters:
                self._take()
                return True
        return False

    async def acquire(self) -> None:
        with self._lock:
            if self._in_use < self.limit and not self._waiters:
                self._take()
                return
            if self._closed:
                raise LimiterClosed()
            waiter = _Waiter(asyncio.get_running_loop())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                if waiter.granted:
                    self._hand_on()  # the slot reached us as we were cancelled: pass it on
                elif waiter in self._waiters:  # (close() took every waiter off the queue)
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        with self._lock:
            self._hand_on()

    def close(self) -> None:
        """Wake every waiter with :class:`LimiterClosed` (each on its own loop) and refuse
        every later wait. Slots held stay held until released; a free slot is still
        taken without waiting (the caller then finds the instance closed)."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
            self._waiters.clear()
        running = _running_loop()
        for waiter in waiters:
            _settle(waiter, _refuse, running)

    def _take(self) -> None:
        self._in_use += 1
        if self._in_use > self._peak:
            self._peak = self._in_use

    def _hand_on(self) -> None:
        """Give one held slot to the first waiter whose loop is alive, or free it. A waiter
        of the running loop is woken directly; one of another loop through that loop."""
        if not self._waiters:
            self._in_use -= 1
            return
        running = _running_loop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if _settle(waiter, _wake, running):
                waiter.granted = True
                return
        self._in_use -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
