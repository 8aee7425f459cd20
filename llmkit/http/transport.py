"""HTTP transport shared by the providers (:class:`HTTPTransport`): plain requests with
retries and backoff, bounded reads and typed errors; streams come from
:class:`~llmkit.http.transport_stream.StreamingTransport`, the shared settings, slot,
in-flight tracking and errors from :class:`~llmkit.http.transport_base.TransportBase`.

Closing it ends everything in flight at once (:mod:`llmkit.http.inflight`): a request fails
with ``ConfigError("instance is closed")``, a stream with a :class:`StreamError` saying
the instance was closed; neither is retried."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp

from llmkit.core.errors import LLMError, redact
from llmkit.core.options import NO_CLIENT_OPTIONS, ClientOptions
from llmkit.http.bodies import decode_body, encode_json, read_bounded
from llmkit.http.ratelimit import Ticket
from llmkit.http.session import connections_opened, undelivered
from llmkit.http.transport_base import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    with_client_options,
)
from llmkit.http.transport_stream import StreamingTransport

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "DEFAULT_MAX_RESPONSE_BYTES", "HTTPTransport"]

log = logging.getLogger("llmkit.http")


class HTTPTransport(StreamingTransport):
    """Sends JSON requests to one base URL on behalf of one provider instance."""

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
            headers, params = with_client_options(headers, params, client)
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
