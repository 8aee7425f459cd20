"""Per-instance concurrency limiter: at most ``limit`` holders at once on each event loop."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

__all__ = ["ConcurrencyLimiter"]


class ConcurrencyLimiter:
    """An ``asyncio.Semaphore`` per event loop (asyncio primitives belong to one loop),
    so one instance can be shared by tasks and by threads that run their own loops."""

    __slots__ = ("_lock", "_sems", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._sems: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._lock = threading.Lock()

    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            with self._lock:
                for lp in [lp for lp in self._sems if lp.is_closed()]:
                    del self._sems[lp]
                sem = self._sems.setdefault(loop, asyncio.Semaphore(self.limit))
        return sem

    def in_use(self) -> int:
        """Slots held on the running loop."""
        sem = self._sems.get(asyncio.get_running_loop())
        return 0 if sem is None else self.limit - sem._value

    async def acquire(self) -> asyncio.Semaphore:
        sem = self._sem()
        await sem.acquire()
        return sem

    async def __aenter__(self) -> asyncio.Semaphore:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sems[asyncio.get_running_loop()].release()
