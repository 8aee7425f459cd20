"""Streams over the transport (:class:`StreamingTransport`): incremental SSE / NDJSON
events, retried only before the first one, with the slot and the connection released at
the end marker or however the consumer stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Literal

import aiohttp

from llmkit.core.errors import (
    ConfigError,
    LLMError,
    LLMTimeoutError,
    StreamError,
    StreamTimeoutError,
)
from llmkit.core.options import NO_CLIENT_OPTIONS, ClientOptions
from llmkit.http.bodies import await_body_end, encode_json, finish_response
from llmkit.http.ratelimit import Ticket
from llmkit.http.streaming import NDJSONParser, SSEParser
from llmkit.http.transport_base import TransportBase, bare, with_client_options

__all__ = ["StreamingTransport"]

_NO_EVENT: Any = object()


class StreamingTransport(TransportBase):
    """The transport's streams."""

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
            headers, params = with_client_options(headers, None, client)
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
                    raise bare(err)
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
