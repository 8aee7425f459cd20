"""One pooled :class:`aiohttp.ClientSession` per running event loop, closed cleanly.

A session belongs to the loop that created it. Each is paired with a small "keeper"
async generator registered with its loop, so that when the loop shuts down its async
generators (``asyncio.run`` and every standard runner do) the session is closed inside
the loop and no "Unclosed client session" warning is ever emitted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

__all__ = ["SessionManager", "SessionOptions"]

log = logging.getLogger("llmkit.session")


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


@dataclass(frozen=True)
class SessionOptions:
    limit: int = 256
    limit_per_host: int = 0
    ttl_dns_cache: int = 300
    keepalive_timeout: float = 30.0
    verify_ssl: bool = True
    trust_env: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


async def _keeper(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


@dataclass
class _Entry:
    session: aiohttp.ClientSession
    keeper: AsyncGenerator[None, None]


class SessionManager:
    """Hands out the session for the running loop; thread-safe."""

    def __init__(self, options: SessionOptions | None = None) -> None:
        self.options = options or SessionOptions()
        self._entries: dict[asyncio.AbstractEventLoop, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _make(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        o = self.options
        connector = aiohttp.TCPConnector(
            limit=o.limit,
            limit_per_host=o.limit_per_host,
            ttl_dns_cache=o.ttl_dns_cache,
            keepalive_timeout=o.keepalive_timeout,
            ssl=True if o.verify_ssl else False,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers=dict(o.headers),
            json_serialize=_json_dumps,
            trust_env=o.trust_env,
            auto_decompress=True,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    def session_for_running_loop(self) -> aiohttp.ClientSession:
        """The running loop's session, created on first use (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None and not entry.session.closed:
            return entry.session
        return self._create(loop)

    def _create(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        with self._lock:
            self._purge_dead()
            entry = self._entries.get(loop)
            if entry is not None and not entry.session.closed:
                return entry.session
            self._closed = False
            session = self._make(loop)
            keeper = _keeper(session)
            # The first __anext__() call registers the generator with this loop's
            # async-generator hooks (so loop shutdown finalizes it) at once.
            loop.create_task(self._start_keeper(keeper.__anext__()))
            self._entries[loop] = _Entry(session, keeper)
            return session

    @staticmethod
    async def _start_keeper(first: Awaitable[None]) -> None:
        try:
            await first
        except StopAsyncIteration:
            pass

    def _purge_dead(self) -> None:
        for loop in [lp for lp, e in self._entries.items() if lp.is_closed() or e.session.closed]:
            del self._entries[loop]

    def connector(self) -> aiohttp.BaseConnector | None:
        """The running loop's connector, if a session exists (for diagnostics and tests)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        entry = self._entries.get(loop)
        return entry.session.connector if entry is not None else None

    async def aclose(self) -> None:
        """Close every session: the running loop's here, others on their own loops."""
        with self._lock:
            entries = list(self._entries.items())
            self._entries.clear()
            self._closed = True
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, entry in entries:
            if loop is current:
                await entry.session.close()
                await entry.keeper.aclose()
            elif not loop.is_closed() and loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(entry.keeper.aclose(), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(fut), timeout=5.0)
                except (asyncio.TimeoutError, RuntimeError) as exc:  # pragma: no cover
                    log.debug("could not close a session on another loop: %r", exc)
            elif not loop.is_closed():
                # The loop exists but is not running: close on it now.
                try:
                    loop.run_until_complete(entry.keeper.aclose())
                except RuntimeError as exc:  # pragma: no cover
                    log.debug("could not close a session on an idle loop: %r", exc)
