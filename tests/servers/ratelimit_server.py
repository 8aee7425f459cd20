"""An OpenAI-compatible test server that enforces rate limits the way OpenAI does.

Token buckets for requests and/or tokens: a bucket holds at most ``burst`` and refills at
``rate`` per second; a request is admitted when every bucket holds its cost, which is then
taken. Costs: one request; tokens = the usage the reply reports (prompt words + reply
words; a streamed reply is charged its prompt words + ``max_tokens``). Every response
carries OpenAI's headers for each limited dimension::

    x-ratelimit-limit-requests: 10        (the bucket size)
    x-ratelimit-remaining-requests: 3     (whole units left after this request)
    x-ratelimit-reset-requests: 175ms     (until the bucket is full again; "1s", "6m0s")

A request that does not fit gets 429 with OpenAI's ``rate_limit_exceeded`` body,
``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` (until it would fit).
``RateLimits.admitted`` / ``.rejected`` count the outcomes and ``.admitted_at`` keeps the
``time.monotonic()`` of each admission.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import ServerHandle, serve
from .base import ServerState, get_json, json_ok, json_response, messages_words
from .openai_server import make_openai_app, openai_status_body

_RequestKey: Any = getattr(web, "RequestKey", None)
HEADERS_KEY: Any = _RequestKey("llmkit_ratelimit_headers", dict) if _RequestKey else "llmkit_ratelimit_headers"


def format_reset(seconds: float) -> str:
    """OpenAI's (Go's) duration text: ``"20ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass
class Bucket:
    rate: float
    burst: float
    level: float = -1.0
    stamp: float = 0.0

    def refill(self, now: float) -> float:
        if self.level < 0:
            self.level, self.stamp = self.burst, now
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def wait_for(self, cost: float) -> float:
        return max(0.0, (min(cost, self.burst) - self.level) / self.rate)

    def headers(self, dim: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{dim}": f"{self.burst:g}",
            f"x-ratelimit-remaining-{dim}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{dim}": format_reset((self.burst - self.level) / self.rate),
        }


@dataclass
class RateLimits:
    """The server's limits (``None``: that dimension is not limited) and its counters."""

    requests_per_second: float | None = None
    request_burst: float = 10.0
    tokens_per_second: float | None = None
    token_burst: float = 1000.0
    admitted: int = 0
    rejected: int = 0
    admitted_at: list[float] = field(default_factory=list)
    tokens_admitted: float = 0.0

    def buckets(self) -> dict[str, Bucket]:
        out = {}
        if self.requests_per_second is not None:
            out["requests"] = Bucket(self.requests_per_second, self.request_burst)
        if self.tokens_per_second is not None:
            out["tokens"] = Bucket(self.tokens_per_second, self.token_burst)
        return out


def _token_cost(body: object, response: web.StreamResponse | None) -> float:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        try:
            usage = orjson.loads(response.body).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            usage = None
        if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
            return float(usage["total_tokens"])
    if isinstance(body, dict):
        messages = body.get("messages")
        words = messages_words(messages) if isinstance(messages, list) else 0
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        return float(words + (limit if isinstance(limit, int) else 0))
    return 0.0


def make_ratelimited_openai_app(
    limits: RateLimits, state: ServerState | None = None
) -> web.Application:
    """The OpenAI test app (``/v1``) behind ``limits``."""
    app = make_openai_app(state)
    buckets = limits.buckets()

    @web.middleware
    async def enforce(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)  # e.g. a benchmark's own counters
        body = get_json(request)
        streaming = json_ok(body) and isinstance(body, dict) and body.get("stream") is True
        now = time.monotonic()
        for bucket in buckets.values():
            bucket.refill(now)
        costs = {"requests": 1.0}
        response: web.StreamResponse | None = None
        if "tokens" in buckets:
            if not streaming:
                response = await handler(request)  # the reply's usage is its cost
            costs["tokens"] = _token_cost(body, response)
        short = {
            dim: bucket.wait_for(costs[dim])
            for dim, bucket in buckets.items()
            if bucket.level < min(costs[dim], bucket.burst)
        }
        if short:
            return _rejection(limits, buckets, costs, short)
        headers: dict[str, str] = {}
        for dim, bucket in buckets.items():
            bucket.level -= min(costs[dim], bucket.burst)
            headers.update(bucket.headers(dim))
        limits.admitted += 1
        limits.admitted_at.append(now)
        limits.tokens_admitted += costs.get("tokens", 0.0)
        request[HEADERS_KEY] = headers  # added when the response is prepared
        return response if response is not None else await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        for key, value in request.get(HEADERS_KEY, {}).items():
            response.headers[key] = value

    app.middlewares.append(enforce)
    app.on_response_prepare.append(add_headers)
    return app


def _rejection(
    limits: RateLimits,
    buckets: dict[str, Bucket],
    costs: dict[str, float],
    short: dict[str, float],
) -> web.Response:
    limits.rejected += 1
    headers: dict[str, str] = {}
    for dim, bucket in buckets.items():
        headers.update(bucket.headers(dim))
    wait = max(short.values())
    headers["retry-after-ms"] = str(math.ceil(wait * 1000))
    headers["retry-after"] = str(max(1, math.ceil(wait)))
    dim = next(iter(short))
    bucket = buckets[dim]
    message = (
        f"Rate limit reached for {dim}. Limit: {bucket.burst:g}, "
        f"Used: {bucket.burst - bucket.level:.0f}, Requested: {costs[dim]:g}. "
        f"Please try again in {format_reset(wait)}."
    )
    error = openai_status_body(429, message)
    error["error"]["type"] = dim
    return json_response(error, status=429, headers=headers)


def serve_ratelimited_openai(
    limits: RateLimits, state: ServerState | None = None
) -> AbstractAsyncContextManager[ServerHandle]:
    """``async with serve_ratelimited_openai(RateLimits(requests_per_second=40)) as srv``."""
    return serve(lambda st: make_ratelimited_openai_app(limits, st), state, "/v1")
