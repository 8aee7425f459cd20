"""Per-instance counters: requests, failures by type, retries, in-flight and waiting,
latency, tokens."""

from __future__ import annotations

import threading
from collections import deque

from pydantic import BaseModel, ConfigDict, Field

from llmkit.calls.limiter import ConcurrencyLimiter
from llmkit.core.types import Usage

__all__ = ["Metrics", "MetricsRecorder"]


class Metrics(BaseModel):
    model_config = ConfigDict(defer_build=True)

    requests: int = 0
    successes: int = 0
    failures: int = 0
    failures_by_type: dict[str, int] = Field(default_factory=dict)
    retries: int = 0
    in_flight: int = 0  # requests holding a concurrency slot (on the wire, or computing)
    waiting: int = 0  # calls queued for a slot
    max_in_flight: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_mean: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_hits: int = 0
    """Replies served from the reply cache (``LLMConfig.cache``); not in ``requests``."""


def _percentile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


class MetricsRecorder:
    """Thread-safe recorder; latencies kept in a bounded window of the latest samples.

    With a ``limiter``, in-flight, waiting and the in-flight peak are the limiter's slot
    counts; without one, every started call that has not finished counts as in flight."""

    __slots__ = (
        "_cache_hits",
        "_cached",
        "_completion",
        "_failures",
        "_in_flight",
        "_latencies",
        "_limiter",
        "_lock",
        "_max_in_flight",
        "_prompt",
        "_reasoning",
        "_requests",
        "_retries",
        "_successes",
    )

    def __init__(self, limiter: ConcurrencyLimiter | None = None, window: int = 2048) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._requests = 0
        self._successes = 0
        self._failures: dict[str, int] = {}
        self._retries = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._latencies: deque[float] = deque(maxlen=window)
        self._prompt = 0
        self._completion = 0
        self._cached = 0
        self._reasoning = 0
        self._cache_hits = 0

    def start(self) -> None:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            if self._in_flight > self._max_in_flight:
                self._max_in_flight = self._in_flight

    def finish(self, latency: float, error_type: str | None = None) -> None:
        with self._lock:
            self._in_flight -= 1
            if error_type is None:
                self._successes += 1
                self._latencies.append(latency)
            else:
                self._failures[error_type] = self._failures.get(error_type, 0) + 1

    def retry(self) -> None:
        with self._lock:
            self._retries += 1

    def cache_hit(self) -> None:
        with self._lock:
            self._cache_hits += 1

    def add_usage(self, prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> None:
        with self._lock:
            self._prompt += prompt
            self._completion += completion
            self._cached += cached
            self._reasoning += reasoning

    def usage(self) -> Usage:
        with self._lock:
            return Usage(
                prompt_tokens=self._prompt,
                completion_tokens=self._completion,
                total_tokens=self._prompt + self._completion,
                cached_tokens=self._cached,
                reasoning_tokens=self._reasoning,
            )

    def snapshot(self) -> Metrics:
        with self._lock:
            lat = sorted(self._latencies)
            failures = dict(self._failures)
            m = Metrics(
                requests=self._requests,
                successes=self._successes,
                failures=sum(failures.values()),
                failures_by_type=failures,
                retries=self._retries,
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                prompt_tokens=self._prompt,
                completion_tokens=self._completion,
                total_tokens=self._prompt + self._completion,
                cache_hits=self._cache_hits,
            )
        limiter = self._limiter
        if limiter is not None:
            m.in_flight = limiter.in_use()
            m.waiting = limiter.waiting()
            m.max_in_flight = limiter.peak()
        if lat:
            m.latency_p50 = _percentile(lat, 0.5)
            m.latency_p95 = _percentile(lat, 0.95)
            m.latency_mean = sum(lat) / len(lat)
        return m
