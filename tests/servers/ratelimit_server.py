"""A scenario server: the OpenAI, TGI or Ollama test app behind the limits real servers
enforce, answering the way each of them answers.

Rates: token buckets for requests and/or tokens; a bucket holds at most ``burst`` and refills
at ``rate`` per second; a request is admitted when every bucket holds its cost, which is then
taken. Costs: one request; tokens = the usage the reply reports (prompt words + reply words;
a streamed reply is charged its prompt words + ``max_tokens``).

What the answers say (``headers``):

- ``"bucket"``: OpenAI's headers describing the enforced bucket exactly::

      x-ratelimit-limit-requests: 10        (the bucket size)
      x-ratelimit-remaining-requests: 3     (whole units left after this request)
      x-ratelimit-reset-requests: 175ms     (until the bucket is full again; "1s", "6m0s")

- ``"per_minute"``: OpenAI's documented form, a per-minute limit (``rate * 60``) that counts
  down and refills at ``rate``, while the enforcement is the small per-second bucket (OpenAI:
  "60,000 requests/minute may be enforced as 1,000 requests/second"). Every answer, 429s
  included, says thousands are left.
- ``"per_minute_burst"``: the per-minute limit as ``limit``, but ``remaining`` and ``reset``
  of the enforced per-second bucket (a bucket of 2,400 that claims to refill in
  milliseconds: about 95,000 per second read as OpenAI's bucket).
- ``"none"``: no ``x-ratelimit-*`` at all.

``reset_format``: ``"duration"`` (``"175ms"``), ``"unix_ms"`` / ``"unix_s"`` (the moment
of the reset as a unix timestamp). ``extra_headers`` are added verbatim to every answer
(``x-ratelimit-reset-requests: inf`` and other hostile values). A rejected request gets 429
with OpenAI's ``rate_limit_exceeded`` body and, by ``retry_after``: ``"both"``:
``retry-after-ms`` (until it would fit) and ``retry-after`` (whole seconds, rounded up),
``"seconds"``: only ``retry-after``, ``"none"``: neither (a bare 429).

Concurrency (``max_in_flight``): at most that many admitted requests are pending at once
(of which ``parallel`` run at a time, the rest queue, as Ollama's ``OLLAMA_NUM_PARALLEL`` /
``OLLAMA_MAX_QUEUE``); each takes ``service_time`` seconds. One more is refused at once by
``overload``: ``"503"`` (an OpenAI-form 503), ``"tgi"`` (TGI's 429 ``{"error": "Model is
overloaded", "error_type": "overloaded"}``) or ``"ollama"`` (Ollama's 503 ``{"error":
"server busy, please try again.  maximum pending requests exceeded"}``).

``closed_for``: from the first request on, everything is refused for that many seconds with
a ``retry-after`` of what is left (a Retry-After longer than a client's retry cap).

Counters: ``admitted`` / ``rejected`` (``overloaded`` of them for concurrency),
``admitted_at`` / ``rejected_at`` (``time.monotonic()``), ``max_in_flight_seen``.
"""

from __future__ import annotations

import asyncio
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
from .hf_server import make_tgi_app
from .ollama_server import make_ollama_app
from .openai_server import make_openai_app, openai_status_body

_RequestKey: Any = getattr(web, "RequestKey", None)
HEADERS_KEY: Any = _RequestKey("llmkit_ratelimit_headers", dict) if _RequestKey else "llmkit_ratelimit_headers"

OLLAMA_BUSY = "server busy, please try again.  maximum pending requests exceeded"
TGI_OVERLOADED = "Model is overloaded"

# the paths each flavour limits (the others, e.g. a benchmark's counters, pass)
_LIMITED = {
    "openai": ("/v1/",),
    "tgi": ("/v1/", "/generate", "/info"),
    "ollama": ("/api/chat", "/api/generate", "/api/embed"),
}


def format_reset(seconds: float) -> str:
    """OpenAI's (Go's) duration text: ``"20ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def reset_text(seconds: float, fmt: str) -> str:
    if fmt == "unix_ms":
        return str(int((time.time() + seconds) * 1000))
    if fmt == "unix_s":
        return str(math.ceil(time.time() + seconds))
    return format_reset(seconds)


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

    def headers(self, dim: str, fmt: str = "duration") -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{dim}": f"{self.burst:g}",
            f"x-ratelimit-remaining-{dim}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{dim}": reset_text((self.burst - self.level) / self.rate, fmt),
        }


@dataclass
class RateLimits:
    """The server's limits (``None``: not limited), how it answers, and its counters."""

    requests_per_second: float | None = None
    request_burst: float = 10.0
    tokens_per_second: float | None = None
    token_burst: float = 1000.0
    headers: str = "bucket"
    retry_after: str = "both"
    reset_format: str = "duration"
    extra_headers: dict[str, str] = field(default_factory=dict)
    max_in_flight: int | None = None
    parallel: int | None = None
    overload: str = "503"
    service_time: float = 0.0
    closed_for: float = 0.0
    # counters
    admitted: int = 0
    rejected: int = 0
    overloaded: int = 0
    admitted_at: list[float] = field(default_factory=list)
    rejected_at: list[float] = field(default_factory=list)
    tokens_admitted: float = 0.0
    in_flight: int = 0
    max_in_flight_seen: int = 0

    def buckets(self) -> dict[str, Bucket]:
        out = {}
        if self.requests_per_second is not None:
            out["requests"] = Bucket(self.requests_per_second, self.request_burst)
        if self.tokens_per_second is not None:
            out["tokens"] = Bucket(self.tokens_per_second, self.token_burst)
        return out

    def counters(self) -> dict[str, Any]:
        return {
            "admitted": self.admitted, "rejected": self.rejected, "overloaded": self.overloaded,
            "tokens": self.tokens_admitted, "max_in_flight": self.max_in_flight_seen,
        }


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


class _Enforcer:
    """The per-app state of the limits: buckets, the in-flight count, the closed period."""

    def __init__(self, limits: RateLimits, flavour: str) -> None:
        self.limits = limits
        self.flavour = flavour
        self.buckets = limits.buckets()
        # the per-minute bucket the "per_minute" headers describe (debited with every
        # admitted request, refilling at the enforced rate)
        self.minute = (
            Bucket(limits.requests_per_second, limits.requests_per_second * 60)
            if limits.requests_per_second is not None and limits.headers == "per_minute"
            else None
        )
        self.workers = asyncio.Semaphore(limits.parallel) if limits.parallel else None
        self.closed_until: float | None = None

    def rate_headers(self) -> dict[str, str]:
        limits = self.limits
        headers: dict[str, str] = {}
        if limits.headers == "bucket":
            for dim, bucket in self.buckets.items():
                headers.update(bucket.headers(dim, limits.reset_format))
        elif limits.headers == "per_minute" and self.minute is not None:
            headers.update(self.minute.headers("requests", limits.reset_format))
        elif limits.headers == "per_minute_burst" and "requests" in self.buckets:
            headers.update(self.buckets["requests"].headers("requests", limits.reset_format))
            headers["x-ratelimit-limit-requests"] = f"{self.buckets['requests'].rate * 60:g}"
        headers.update(limits.extra_headers)
        return headers

    def refused(self, status: int, body: Any, headers: dict[str, str], overload: bool) -> web.Response:
        limits = self.limits
        limits.rejected += 1
        limits.overloaded += overload
        limits.rejected_at.append(time.monotonic())
        return json_response(body, status=status, headers=headers)

    def overloaded(self) -> web.Response:
        kind = self.limits.overload
        headers = dict(self.limits.extra_headers)
        if kind == "tgi":
            return self.refused(429, {"error": TGI_OVERLOADED, "error_type": "overloaded"}, headers, True)
        if kind == "ollama":
            return self.refused(503, {"error": OLLAMA_BUSY}, headers, True)
        return self.refused(503, openai_status_body(503, None), headers, True)

    def closed(self, now: float) -> web.Response | None:
        if not self.limits.closed_for:
            return None
        if self.closed_until is None:
            self.closed_until = now + self.limits.closed_for
        left = self.closed_until - now
        if left <= 0:
            return None
        body = openai_status_body(429, f"Rate limit reached. Please try again in {format_reset(left)}.")
        return self.refused(429, body, {"retry-after": str(math.ceil(left))}, False)

    def rate_limited(self, costs: dict[str, float], short: dict[str, float]) -> web.Response:
        limits = self.limits
        headers = self.rate_headers()
        wait = max(short.values())
        if limits.retry_after in ("both", "ms"):
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        if limits.retry_after in ("both", "seconds"):
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        dim = next(iter(short))
        bucket = self.buckets[dim]
        message = (
            f"Rate limit reached for {dim}. Limit: {bucket.burst:g}, "
            f"Used: {bucket.burst - bucket.level:.0f}, Requested: {costs[dim]:g}. "
            f"Please try again in {format_reset(wait)}."
        )
        if self.flavour == "openai":
            body = openai_status_body(429, message)
            body["error"]["type"] = dim
        elif self.flavour == "tgi":
            body = {"error": message, "error_type": "rate_limit"}
        else:
            body = {"error": message}
        return self.refused(429, body, headers, False)

    async def admit(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        limits = self.limits
        now = time.monotonic()
        refusal = self.closed(now)
        if refusal is not None:
            return refusal
        if limits.max_in_flight is not None and limits.in_flight >= limits.max_in_flight:
            return self.overloaded()
        body = get_json(request)
        streaming = json_ok(body) and isinstance(body, dict) and body.get("stream") is True
        for bucket in self.buckets.values():
            bucket.refill(now)
        if self.minute is not None:
            self.minute.refill(now)
        costs = {"requests": 1.0}
        response: web.StreamResponse | None = None
        if "tokens" in self.buckets:
            if not streaming:
                response = await handler(request)  # the reply's usage is its cost
            costs["tokens"] = _token_cost(body, response)
        short = {
            dim: bucket.wait_for(costs[dim])
            for dim, bucket in self.buckets.items()
            if bucket.level < min(costs[dim], bucket.burst)
        }
        if short:
            return self.rate_limited(costs, short)
        for dim, bucket in self.buckets.items():
            bucket.level -= min(costs[dim], bucket.burst)
        if self.minute is not None:
            self.minute.level = max(0.0, self.minute.level - 1.0)
        limits.admitted += 1
        limits.admitted_at.append(now)
        limits.tokens_admitted += costs.get("tokens", 0.0)
        request[HEADERS_KEY] = self.rate_headers()  # added when the response is prepared
        limits.in_flight += 1
        limits.max_in_flight_seen = max(limits.max_in_flight_seen, limits.in_flight)
        try:
            if limits.service_time:
                if self.workers is not None:
                    async with self.workers:
                        await asyncio.sleep(limits.service_time)
                else:
                    await asyncio.sleep(limits.service_time)
            return response if response is not None else await handler(request)
        finally:
            limits.in_flight -= 1


def make_scenario_app(
    limits: RateLimits, state: ServerState | None = None, flavour: str = "openai"
) -> web.Application:
    """The ``flavour`` test app (``"openai"``, ``"tgi"``, ``"ollama"``) behind ``limits``."""
    factory = {"openai": make_openai_app, "tgi": make_tgi_app, "ollama": make_ollama_app}[flavour]
    app = factory(state)
    enforcer = _Enforcer(limits, flavour)
    prefixes = _LIMITED[flavour]

    @web.middleware
    async def enforce(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method != "POST" or not request.path.startswith(prefixes):
            return await handler(request)
        return await enforcer.admit(request, handler)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        for key, value in request.get(HEADERS_KEY, {}).items():
            response.headers[key] = value

    app.middlewares.append(enforce)
    app.on_response_prepare.append(add_headers)
    return app


def make_ratelimited_openai_app(
    limits: RateLimits, state: ServerState | None = None
) -> web.Application:
    """The OpenAI test app (``/v1``) behind ``limits``."""
    return make_scenario_app(limits, state, "openai")


def serve_scenario(
    limits: RateLimits, state: ServerState | None = None, flavour: str = "openai"
) -> AbstractAsyncContextManager[ServerHandle]:
    """``async with serve_scenario(RateLimits(max_in_flight=8), flavour="ollama") as srv``;
    ``srv.url`` is what a client of that flavour is configured with."""
    suffix = "/v1" if flavour == "openai" else ""
    return serve(lambda st: make_scenario_app(limits, st, flavour), state, suffix)


def serve_ratelimited_openai(
    limits: RateLimits, state: ServerState | None = None
) -> AbstractAsyncContextManager[ServerHandle]:
    """``async with serve_ratelimited_openai(RateLimits(requests_per_second=40)) as srv``."""
    return serve_scenario(limits, state, "openai")


async def _main(spec: str, flavour: str) -> None:
    """Serve in this process until stdin closes (for benchmarks): prints the base URL;
    ``GET /counters`` and ``GET /span`` (the admission times) tell what happened."""
    import sys

    from .base import run_server

    limits = RateLimits(**orjson.loads(spec))
    app = make_scenario_app(limits, ServerState(record_requests=False, validate_spec=False), flavour)

    async def counters(request: web.Request) -> web.Response:
        return web.json_response(limits.counters())

    async def span(request: web.Request) -> web.Response:
        return web.json_response({"admitted_at": limits.admitted_at, "rejected_at": limits.rejected_at})

    app.router.add_get("/counters", counters)
    app.router.add_get("/span", span)
    async with run_server(app) as base:
        print(base, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    import sys

    asyncio.run(_main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "openai"))
