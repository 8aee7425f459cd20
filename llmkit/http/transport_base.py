"""The transport's common part (:class:`TransportBase`): one base URL's settings, the
pooled sessions, the concurrency slot, what is in flight, the typed errors of a failed
attempt and the opening of a streamed response. Plain requests are
:mod:`llmkit.http.transport`, streams :mod:`llmkit.http.transport_stream`.

Closing it ends everything in flight at once (:mod:`llmkit.http.inflight`): a request fails
with ``ConfigError("instance is closed")``, a stream with a :class:`StreamError` saying
the instance was closed; neither is retried. Calls queued for a slot end too."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import aiohttp

from llmkit.calls.hooks import Hooks
from llmkit.calls.limiter import ConcurrencyLimiter, LimiterClosed
from llmkit.calls.metrics import MetricsRecorder
from llmkit.core.errors import LLMError, instance_closed
from llmkit.core.options import ClientOptions
from llmkit.http.bodies import checked_base_url, read_bounded
from llmkit.http.client_errors import map_client_error
from llmkit.http.error_mapping import error_from_response
from llmkit.http.inflight import InFlight
from llmkit.http.ratelimit import RateLimiter, Ticket
from llmkit.http.retry import RetryPolicy
from llmkit.http.session import SessionManager, SessionOptions, connections_opened, undelivered

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "DEFAULT_MAX_RESPONSE_BYTES", "TransportBase"]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class TransportBase:
    """What requests and streams to one base URL share, for one provider instance."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        limiter: ConcurrencyLimiter | None = None,
        metrics: MetricsRecorder | None = None,
        rate_limiter: RateLimiter | None = None,
        session_options: SessionOptions | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        hooks: Hooks | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = checked_base_url(base_url, provider)
        self.headers = {"Accept": "application/json", **(headers or {})}
        self._post_headers = {**self.headers, "Content-Type": "application/json"}
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or ConcurrencyLimiter(64)
        self.metrics = metrics or MetricsRecorder()
        self.rate_limiter = rate_limiter or RateLimiter(provider=provider)
        # what this server teaches is shared with every instance using it with this key
        self.rate_limiter.share(self.base_url, self.headers)
        self.sessions = SessionManager(session_options)
        self.max_response_bytes = max_response_bytes
        self.max_event_bytes = max_event_bytes
        self.hooks = hooks
        self.inflight = InFlight()
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout
        )

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def aclose(self) -> None:
        self.inflight.close()  # first: what is woken sees the instance closed
        self.limiter.close()  # calls queued for a slot (held by an idle stream) end too
        await self.sessions.aclose()

    async def _waited_for_slot(self) -> bool:
        """Wait for a concurrency slot: True once taken, False when the instance was closed
        while (or before) waiting."""
        try:
            await self.limiter.acquire()
        except LimiterClosed:
            return False
        return True

    def _policy(self, client: ClientOptions) -> RetryPolicy:
        if client.max_retries is None:
            return self.retry
        return dataclasses.replace(self.retry, max_retries=client.max_retries)

    def _closed(self) -> bool:
        return self.inflight.closed or self.sessions.closed

    def _closed_error(self, streaming: bool) -> LLMError:
        return instance_closed(self.provider, streaming=streaming)

    def _client_error(
        self, exc: BaseException, url: str, *, stream: bool, streaming: bool = False
    ) -> LLMError:
        """``stream``: output was already delivered; ``streaming``: a stream's request.

        ``exc`` loses its traceback: aiohttp raises one shared "Connection closed"
        exception for every response closed under its reader, and the traceback of each
        raise would keep that call's frames (its response, its transport) alive for good."""
        exc.__traceback__ = None
        if self._closed():  # the pool was closed under this request: no retry
            return self._closed_error(streaming or stream)
        return map_client_error(exc, self.provider, url, stream=stream)

    async def _open(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str],
        model: str | None,
        params: Mapping[str, Any] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        ticket: Ticket | None = None,
    ) -> aiohttp.ClientResponse:
        session = self.sessions.session_for_running_loop()
        for resend in (True, False):
            opened = connections_opened(session)
            try:
                resp = await session.request(
                    method, url, data=data, headers=headers, params=params,
                    timeout=timeout or self._stream_timeout,
                )
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                if resend and undelivered(exc, session, opened) and not self._closed():
                    continue  # a stale pooled connection: the server never saw this request
                self.rate_limiter.observe(ticket, None, None)
                error = self._client_error(exc, url, stream=False, streaming=True)
            else:
                if resp.status < 400:
                    self.rate_limiter.observe(ticket, resp.headers, resp.status)
                    return resp
                error = await self._error_response(resp, url, model)
                self.rate_limiter.observe(ticket, resp.headers, resp.status, error.message)
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _error_response(
        self, resp: aiohttp.ClientResponse, url: str, model: str | None
    ) -> LLMError:
        self.inflight.track(resp)
        try:
            body = await read_bounded(resp, self.max_response_bytes, self.provider)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            resp.close()
            error = self._client_error(exc, url, stream=False, streaming=True)
            self.inflight.untrack(resp)
        else:
            self.inflight.untrack(resp)
            resp.release()
            return error_from_response(
                resp.status,
                body,
                resp.headers,
                provider=self.provider,
                model=model,
                content_type=resp.content_type,
            )
        return error


def bare(error: LLMError) -> LLMError:
    """``error`` without the exception being handled when it was made in its context."""
    error.__context__ = None
    error.__cause__ = None
    return error


def with_client_options(
    headers: Mapping[str, str], params: Mapping[str, Any] | None, client: ClientOptions
) -> tuple[dict[str, str], Mapping[str, Any] | None]:
    """Headers and query parameters of one call with its ``extra_headers`` and
    ``extra_query`` added (they win over the instance's)."""
    merged = dict(headers)
    if client.extra_headers:
        merged.update(client.extra_headers)
    if client.extra_query:
        params = {**(params or {}), **client.extra_query}
    return merged, params
