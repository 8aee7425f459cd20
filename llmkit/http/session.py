"""One pooled :class:`aiohttp.ClientSession` per running event loop, closed cleanly.

A session belongs to the loop that created it. Each is paired with a small "keeper"
async generator registered with its loop, so that when the loop shuts down its async
generators (``asyncio.run`` and every standard runner do) the session is closed inside
the loop, its entry is dropped (no closed loop stays referenced) and no "Unclosed client
session" warning is ever emitted.

Closing is final: after :meth:`SessionManager.aclose` no session is ever made again, so a
request in flight during the close cannot be retried on a new pool.
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

from llmkit.core.errors import ConfigError

__all__ = ["SessionManager", "SessionOptions", "connections_opened", "undelivered"]

log = logging.getLogger("llmkit.http.session")


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class _Connector(aiohttp.TCPConnector):
    """Counts the connections it opens, so that a failed request can tell whether it ran
    on a pooled keep-alive connection (no connection opened meanwhile). Nothing is added
    to a request that reuses a connection (a TraceConfig would cost ~15 us per request)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opened = 0

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        self.opened += 1
        return await super()._create_connection(req, traces, timeout)


def connections_opened(session: aiohttp.ClientSession) -> int:
    """How many connections ``session`` has opened so far (-1 when it cannot tell)."""
    connector = session.connector
    return connector.opened if isinstance(connector, _Connector) else -1


def undelivered(exc: BaseException, session: aiohttp.ClientSession, opened_before: int) -> bool:
    """True when a request failed before the server could have read it: the write hit a
    closing transport, or a pooled keep-alive connection that the server had closed
    meanwhile was dropped without a byte of response (no connection was opened since the
    request started, so it ran on a pooled one). Such a request is resent once, whatever
    the retry settings (as httpx and urllib3 do)."""
    if isinstance(exc, ConnectionResetError):  # aiohttp's "Cannot write to closing transport"
        return True
    dropped = isinstance(exc, aiohttp.ServerDisconnectedError) or (
        # the server closed the pooled connection while the request was being written
        # (llama.cpp does so after a streamed reply): "Can not write request body"
        isinstance(exc, aiohttp.ClientOSError) and "write request body" in str(exc)
    )
    return dropped and opened_before >= 0 and connections_opened(session) == opened_before


@dataclass(frozen=True)
class SessionOptions:
    limit: int = 256
    limit_per_host: int = 0
    ttl_dns_cache: int = 300
    keepalive_timeout: float = 30.0
    verify_ssl: bool = True
    trust_env: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Entry:
    session: aiohttp.ClientSession
    keeper: AsyncGenerator[None, None]

    async def close(self) -> None:
        await self.keeper.aclose()
        if not self.session.closed:  # the keeper never started
            await self.session.close()


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
        connector = _Connector(
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
        """The running loop's session, created on first use (call from a coroutine).
        Raises :class:`ConfigError` once the manager is closed."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None and not entry.session.closed:
            return entry.session
        return self._create(loop)

    def _create(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        with self._lock:
            if self._closed:
                raise ConfigError("instance is closed")
            self._purge_dead()
            entry = self._entries.get(loop)
            if entry is not None and not entry.session.closed:
                return entry.session
            session = self._make(loop)
            keeper = self._keeper(loop, session)
            # The first __anext__() call registers the generator with this loop's
            # async-generator hooks (so loop shutdown finalizes it) at once.
            loop.create_task(self._start_keeper(keeper.__anext__()))
            self._entries[loop] = _Entry(session, keeper)
            return session

    async def _keeper(
        self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                entry = self._entries.get(loop)
                if entry is not None and entry.session is session:
                    del self._entries[loop]
            if not session.closed:
                await session.close()

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
        """Close every session, each on its own loop: the running loop's here, a running
        loop's through that loop, an idle loop's by running that loop in a worker thread."""
        with self._lock:
            entries = list(self._entries.items())
            self._entries.clear()
            self._closed = True
        current = asyncio.get_running_loop()
        for loop, entry in entries:
            if loop is current:
                await entry.close()
            elif not loop.is_closed():
                await _close_on(loop, entry)


def _close_on_idle(loop: asyncio.AbstractEventLoop, entry: _Entry) -> bool:
    """Run ``loop`` (idle, in this worker thread) until ``entry`` is closed."""
    if loop.is_running() or loop.is_closed():
        return False
    closing = entry.close()
    try:
        loop.run_until_complete(closing)
    except RuntimeError:  # it started running meanwhile
        closing.close()
        return False
    return True


async def _close_on(loop: asyncio.AbstractEventLoop, entry: _Entry) -> None:
    try:
        if await asyncio.to_thread(_close_on_idle, loop, entry) or loop.is_closed():
            return
        fut = asyncio.run_coroutine_threadsafe(entry.close(), loop)
        await asyncio.wait_for(asyncio.wrap_future(fut), timeout=5.0)
    except (asyncio.TimeoutError, RuntimeError) as exc:  # pragma: no cover
        log.debug("could not close a session on another loop: %r", exc)
