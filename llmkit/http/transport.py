"""HTTP transport shared by the providers: pooled sessions, the limiter, retries with
backoff, typed errors, bounded reads and incremental SSE / NDJSON streaming.

Closing it ends everything in flight at once (:mod:`llmkit.http.inflight`): a request fails
with ``ConfigError("instance is closed")``, a stream with a :class:`StreamError` saying
the instance was closed; neither is retried."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Literal

import aiohttp

from llmkit.calls.hooks import Hooks
from llmkit.calls.limiter import ConcurrencyLimiter, LimiterClosed
from llmkit.calls.metrics import MetricsRecorder
from llmkit.core.errors import (
    ConfigError,
    LLMError,
    LLMTimeoutError,
    StreamError,
    StreamTimeoutError,
    redact,
)
from llmkit.core.options import NO_CLIENT_OPTIONS, ClientOptions
from llmkit.http.bodies import (
    await_body_end,
    checked_base_url,
    decode_body,
    encode_json,
    finish_response,
    read_bounded,
)
from llmkit.http.client_errors import map_client_error
from llmkit.http.error_mapping import error_from_response
from llmkit.http.inflight import InFlight
from llmkit.http.ratelimit import RateLimiter, Ticket
from llmkit.http.retry import RetryPolicy
from llmkit.http.session import SessionManager, SessionOptions, connections_opened, undelivered
from llmkit.http.streaming import NDJSONParser, SSEParser

__all__ = ["HTTPTransport"]

log = logging.getLogger("llmkit.http")

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class HTTPTransport:
    """Sends JSON requests to one base URL on behalf of one provider instance."""

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

    # ------------------------------------------------------------------ plain requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        model: str | None = None,
        timeout: float | None = None,
        parse: Literal["json", "text", "bytes"] = "json",
        retry: bool = True,
        client: ClientOptions = NO_CLIENT_OPTIONS,
        upload: Callable[[], Any] | None = None,
    ) -> Any:
        """One request with retries; returns the decoded JSON body (or text/bytes).
        ``client`` (a call's client options) overrides the timeout and retry count and adds
        headers and query parameters. ``upload`` sends a raw body instead of JSON: called
        once per attempt, it returns what aiohttp sends (bytes or an async iterator of
        bytes)."""
        url = self.url(path)
        data = encode_json(json, self.provider) if json is not None else None
        headers = self._post_headers if data is not None else self.headers
        if upload is not None:
            headers = {**self.headers, "Content-Type": "application/octet-stream"}
        if client.timeout is not None:
            timeout = client.timeout
        tmo = self._timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        if client is not NO_CLIENT_OPTIONS:
            headers, params = _with_client_options(headers, params, client)
        policy = self._policy(client)
        metrics = self.metrics
        limiter = self.limiter
        attempt = 0
        waits = None
        started = time.perf_counter()
        hooks = self.hooks if self.hooks is not None and self.hooks.active else None
        metrics.start()
        try:
            while True:
                if hooks is not None:
                    await hooks.attempt("request", self.provider, model, attempt)
                try:
                    if not (limiter.try_acquire() or await self._waited_for_slot()):
                        raise self._closed_error(False)
                    try:
                        ticket = await self.inflight.interruptible(
                            self.rate_limiter.acquire(json, attempt > 0),
                            lambda: self._closed_error(False),
                        )
                        try:
                            result = await self._once(
                                method, url, data if upload is None else upload(), headers,
                                params, tmo, model, parse, ticket,
                            )
                        finally:
                            self.rate_limiter.release(ticket)
                    finally:
                        limiter.release()
                except LLMError as exc:
                    if not retry or self.inflight.closed or not policy.should_retry(exc, attempt):
                        raise
                    if waits is None:
                        waits = policy.waits()
                    # a refusal the limiter paces: it holds the retry, not a backoff
                    delay = self.rate_limiter.retry_delay(exc, policy.delay_for(exc, next(waits)))
                    if hooks is not None:
                        await hooks.attempt("retry", self.provider, model, attempt, error=exc, delay=delay)
                    attempt += 1
                    metrics.retry()
                    log.debug(
                        "%s %s failed (%s); retry %d in %.2fs",
                        method, redact(url), exc.type, attempt, delay,
                    )
                    await self.inflight.pause(delay)
                    continue
                metrics.finish(time.perf_counter() - started)
                if hooks is not None:
                    await hooks.outcome(self.provider, model, attempt, time.perf_counter() - started)
                return result
        except LLMError as exc:
            metrics.finish(0.0, exc.type)
            if hooks is not None:
                duration = time.perf_counter() - started
                await hooks.outcome(self.provider, model, attempt, duration, error=exc)
            raise
        except asyncio.CancelledError:
            metrics.finish(0.0, "cancelled")
            raise
        except BaseException:
            metrics.finish(0.0, "internal")
            raise

    def _policy(self, client: ClientOptions) -> RetryPolicy:
        if client.max_retries is None:
            return self.retry
        return dataclasses.replace(self.retry, max_retries=client.max_retries)

    async def _once(
        self,
        method: str,
        url: str,
        data: Any,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        timeout: aiohttp.ClientTimeout,
        model: str | None,
        parse: str,
        ticket: Ticket | None = None,
    ) -> Any:
        session = self.sessions.session_for_running_loop()
        # A bytes body can be sent again; a streamed upload (an iterator) cannot.
        for resend in (data is None or isinstance(data, bytes), False):
            opened = connections_opened(session)
            try:
                async with session.request(
                    method, url, data=data, headers=headers, params=params, timeout=timeout
                ) as resp:
                    self.inflight.track(resp)
                    try:
                        body = await read_bounded(resp, self.max_response_bytes, self.provider)
                    finally:
                        self.inflight.untrack(resp)
                    status, resp_headers = resp.status, resp.headers
                    ctype, charset = resp.content_type, resp.charset
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                if resend and undelivered(exc, session, opened) and not self._closed():
                    continue  # a stale pooled connection: the server never saw this request
                self.rate_limiter.observe(ticket, None, None)
                error = self._client_error(exc, url, stream=False)
            else:
                # an error's body tells an overloaded server from a rate limit
                self.rate_limiter.observe(ticket, resp_headers, status, body if status >= 400 else None)
                decoded = decode_body(
                    body, status, resp_headers, ctype, charset, parse,
                    model=model, provider=self.provider,
                )
                if ticket is not None and isinstance(decoded, dict):
                    self.rate_limiter.correct(ticket, decoded)
                return decoded
            # Raised here, outside the handler: aiohttp's exception (whose request_info holds
            # the Authorization header) is neither the cause nor the context.
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _closed(self) -> bool:
        return self.inflight.closed or self.sessions.closed

    def _closed_error(self, streaming: bool) -> LLMError:
        if streaming:
            return StreamError("stream ended: the instance was closed", provider=self.provider)
        return ConfigError("instance is closed", provider=self.provider)

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

    # ------------------------------------------------------------------ streaming

    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        kind: Literal["sse", "ndjson"],
        is_last: Callable[[Any], bool],
        model: str | None = None,
        end_marker: str = "the end-of-stream marker",
        parse: Callable[[Any], Any] | None = None,
        client: ClientOptions = NO_CLIENT_OPTIONS,
    ) -> AsyncGenerator[Any, None]:
        """Stream events (:class:`~llmkit.http.streaming.SSEEvent` or decoded NDJSON objects).

        Retries happen only before the first event is yielded. The stream must end with an
        event for which ``is_last`` is true; an end of body before it raises
        :class:`StreamError`. That event ends the stream: nothing after it is read, and the
        connection and the concurrency slot are released before it is yielded. The
        connection is released however the consumer stops.

        ``parse``, when given, decodes or checks each event here, inside the transport: its
        result is what is yielded, and an :class:`LLMError` it raises (a malformed event, an
        error event) fails the stream like a transport error does: counted in the metrics
        by type, retried only before any output, connection closed.

        ``client.timeout`` replaces the connect and per-read timeout of this stream.
        """
        url = self.url(path)
        data = encode_json(json, self.provider) if json is not None else None
        headers = dict(self._post_headers if data is not None else self.headers)
        headers["Accept"] = "text/event-stream" if kind == "sse" else "application/x-ndjson"
        params: Mapping[str, Any] | None = None
        timeout = self._stream_timeout
        if client is not NO_CLIENT_OPTIONS:
            headers, params = _with_client_options(headers, None, client)
            if client.timeout is not None:
                timeout = aiohttp.ClientTimeout(
                    total=None, sock_connect=client.timeout, sock_read=client.timeout
                )
        policy = self._policy(client)
        metrics = self.metrics
        limiter = self.limiter
        attempt = 0
        waits = None
        yielded = False
        started = time.perf_counter()
        hooks = self.hooks if self.hooks is not None and self.hooks.active else None
        metrics.start()
        error_type: str | None = "cancelled"
        stopped_early = False
        try:
            while True:
                if hooks is not None:
                    await hooks.attempt("request", self.provider, model, attempt)
                held = limiter.try_acquire() or await self._waited_for_slot()
                if not held or self._closed():  # closed while it waited for a slot or a retry
                    if held:
                        limiter.release()
                        held = False
                    error_type = "stream_error"
                    raise self._closed_error(True)
                resp: aiohttp.ClientResponse | None = None
                err: LLMError | None = None
                ticket: Ticket | None = None
                try:
                    ticket = await self.inflight.interruptible(
                        self.rate_limiter.acquire(json, attempt > 0), lambda: self._closed_error(True)
                    )
                    resp = await self._open(
                        method, url, data, headers, model, params, timeout, ticket
                    )
                    self.inflight.track(resp)
                    parser = SSEParser() if kind == "sse" else NDJSONParser()
                    # NDJSON lazily: the lines before a malformed one still reach the
                    # consumer (SSE events are decoded in ``parse``, one at a time)
                    feed = parser.feed if kind == "sse" else parser.iter_feed
                    final: Any = _NO_EVENT
                    async for chunk in resp.content.iter_any():
                        for ev in feed(chunk):
                            last = is_last(ev)
                            item = ev if parse is None else parse(ev)
                            if last:
                                final = item
                                break
                            yielded = True
                            yield item
                        if final is not _NO_EVENT:
                            break
                        if parser.buffered > self.max_event_bytes:
                            raise StreamError(
                                f"stream event exceeds max_event_bytes={self.max_event_bytes}",
                                provider=self.provider,
                            )
                    else:
                        for ev in parser.close():
                            last = is_last(ev)
                            item = ev if parse is None else parse(ev)
                            if last:
                                final = item
                                break
                            yielded = True
                            yield item
                    if final is _NO_EVENT:
                        raise StreamError(
                            f"stream ended before {end_marker} (truncated response)",
                            provider=self.provider,
                        )
                    # The end marker: nothing after it is read (beyond the end of the body,
                    # if it comes at once); the slot is freed before the event is handed on.
                    error_type = None
                    held = False
                    limiter.release()
                    if hooks is not None:
                        duration = time.perf_counter() - started
                        await hooks.outcome(self.provider, model, attempt, duration, status=resp.status)
                    yielded = True
                    yield final
                    await await_body_end(resp)
                    self.inflight.untrack(resp)  # nothing of a finished stream stays behind
                    finish_response(resp, complete=True)
                    resp = None
                    return
                except GeneratorExit:
                    stopped_early = True
                    raise
                except LLMError as exc:
                    err = exc
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    err = self._client_error(exc, url, stream=yielded, streaming=True)
                    if yielded and not isinstance(err, StreamError):
                        # a read timeout stays a timeout too (StreamTimeoutError)
                        cls = StreamTimeoutError if isinstance(err, LLMTimeoutError) else StreamError
                        err = cls(
                            f"stream interrupted after partial output: {err.message}",
                            provider=self.provider,
                        )
                finally:
                    self.rate_limiter.release(ticket)
                    if resp is not None:
                        self.inflight.untrack(resp)
                        finish_response(resp, complete=error_type is None)
                    if held:
                        limiter.release()
                assert err is not None
                if self._closed() and isinstance(err, ConfigError):
                    err = self._closed_error(True)  # no new pool for the next attempt
                if yielded or self._closed() or not policy.should_retry(err, attempt):
                    error_type = err.type
                    if hooks is not None:
                        duration = time.perf_counter() - started
                        await hooks.outcome(self.provider, model, attempt, duration, error=err)
                    raise _bare(err)
                if waits is None:
                    waits = policy.waits()
                delay = self.rate_limiter.retry_delay(err, policy.delay_for(err, next(waits)))
                if hooks is not None:
                    await hooks.attempt("retry", self.provider, model, attempt, error=err, delay=delay)
                attempt += 1
                metrics.retry()
                await self.inflight.pause(delay)
        finally:
            if error_type is None or stopped_early:
                metrics.finish(time.perf_counter() - started)
            else:
                metrics.finish(0.0, error_type)

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


_NO_EVENT: Any = object()


def _bare(error: LLMError) -> LLMError:
    """``error`` without the exception being handled when it was made in its context."""
    error.__context__ = None
    error.__cause__ = None
    return error


def _with_client_options(
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
