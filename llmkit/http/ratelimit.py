"""Client-side rate limits: requests and tokens per minute, configured or learned from the
server's ``x-ratelimit-*`` headers, shared by every task, event loop and thread of an instance.

The model is a token bucket per dimension (requests, tokens) with reservations (GCRA): a
caller reserves its cost and is told how long to wait before sending, so waiting callers
are spaced at the allowed rate instead of all waking at once. The bucket's rate and size
come from the config (``requests_per_minute``, ``tokens_per_minute``) and from the server's
headers in OpenAI's form (``x-ratelimit-limit-*``, ``-remaining-*``, ``-reset-*``): a
bucket of ``limit`` that refills in ``reset`` from ``remaining`` refills at
``(limit - remaining) / reset`` per second. A 429 pauses every caller until the server's
Retry-After. Until the first answer of a server has been seen, one request goes first
and the others wait for what it tells (at most ``probe_timeout`` seconds).

Token costs (:mod:`llmkit.http.ratelimit_signals`): a request's estimate is its prompt characters
/ 4 plus its ``max_tokens``, scaled by the largest usage / estimate ratio of recent replies
(the first request with tokens limited goes alone to learn it) and corrected by the usage
its own reply reports; estimates given back move the waiting requests forward. A streamed
reply keeps its estimate.

:class:`LimiterState` holds the arithmetic and is synchronous and picklable;
:class:`RateLimiter` is what the transport uses; its ``backend`` (a :class:`LocalBackend`
by default) may be replaced by any object with the :class:`RateLimitBackend` methods, e.g.
one that asks a limiter shared by many processes (``llmkit.ray``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from llmkit.http.ratelimit_signals import (
    Feedback,
    Limits,
    estimate_tokens,
    parse_reset,
    usage_tokens,
)

__all__ = [
    "Feedback",
    "LimiterState",
    "LocalBackend",
    "RateLimitBackend",
    "RateLimiter",
    "Ticket",
    "estimate_tokens",
    "parse_reset",
    "usage_tokens",
]

POLL_SECONDS = 0.005  # how often callers held behind the first request look again
TOKEN_RECHECK = 0.2  # seconds between looks at a wait for tokens


@dataclass(frozen=True)
class Ticket:
    """A granted reservation: what was reserved, when, and how much had been reserved
    before it (to line up the server's later answer with what was sent since)."""

    at: float
    tokens: float
    issued_requests: float
    issued_tokens: float
    epoch: int
    due_requests: float = 0.0
    due_tokens: float = 0.0
    refunded_tokens: float = 0.0
    estimate: float = 0.0


class _Bucket:
    """A token bucket that may go negative: the debt is the queue of reservations."""

    __slots__ = (
        "bounds", "capacity", "configured", "issued", "level", "rate", "refunded", "stamp"
    )

    def __init__(self, per_minute: float | None, burst_seconds: float) -> None:
        self.configured = None if per_minute is None else per_minute / 60.0
        self.rate: float | None = self.configured
        # a configured limit allows ``burst_seconds`` of its rate at once (one unit at least)
        self.capacity = max(1.0, (self.rate or 0.0) * burst_seconds)
        self.level = self.capacity
        self.stamp = 0.0
        self.issued = 0.0  # everything ever reserved
        self.refunded = 0.0  # estimates given back: reservations made before move earlier
        self.bounds: tuple[float, float] | None = None  # what the server's answers allow

    def level_at(self, now: float) -> float:
        if self.rate is None:
            return self.capacity
        return min(self.capacity, self.level + (now - self.stamp) * self.rate)

    def reserve(self, cost: float, now: float) -> float:
        self.issued += cost
        if self.rate is None:
            return 0.0
        self.level = self.level_at(now) - cost
        self.stamp = now
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def learn(self, seen: Limits, ticket: Ticket | None, issued_then: float, now: float) -> None:
        """Take the server's rate and bucket size, and its level if lower than ours."""
        limit, remaining, reset = seen.limit, seen.remaining, seen.reset
        if limit and reset and reset > 0 and remaining is not None and remaining < limit:
            learned = self._estimate(limit - remaining, reset)
            first = self.rate is None
            self.rate = learned if self.configured is None else min(self.configured, learned)
            self.capacity = limit if self.configured is None else min(self.capacity, limit)
            if first:
                self.level, self.stamp = self.capacity, now
        if self.rate is None or remaining is None:
            return
        since = (now - ticket.at) if ticket is not None else 0.0
        server = min(self.capacity, remaining + since * self.rate) - (self.issued - issued_then)
        current = self.level_at(now)
        if server < current:
            self.level, self.stamp = server, now

    def _estimate(self, deficit: float, reset: float) -> float:
        """The refill rate: ``remaining`` is rounded down to whole units and ``reset`` up to
        milliseconds, so one answer bounds the rate between ``(deficit - 1) / reset`` and
        ``deficit / (reset - 1ms)``; the bounds of all answers are intersected (a server
        whose limits changed starts a new interval) and the middle is used."""
        low = (deficit - 1.0) / reset
        high = deficit / max(reset - 0.001, reset / 2)
        if self.bounds is not None and low <= self.bounds[1] and high >= self.bounds[0]:
            low, high = max(low, self.bounds[0]), min(high, self.bounds[1])
        self.bounds = (low, high)
        return (low + high) / 2 if low > 0 else high / 2

    def pause(self, seconds: float, now: float) -> None:
        if self.rate is not None:  # reservations granted before are void: start afresh
            self.level = -seconds * self.rate
            self.stamp = now


class LimiterState:
    """The limiter's arithmetic: synchronous, no locking, times from ``time.monotonic``."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        probe_timeout: float = 1.0,
    ) -> None:
        # requests are spaced evenly; tokens may come a second's worth at once, as one
        # request alone can cost many of them
        self.requests = _Bucket(requests_per_minute, 0.0)
        self.tokens = _Bucket(tokens_per_minute, 1.0)
        self.probe_timeout = probe_timeout
        self.informed = requests_per_minute is not None or tokens_per_minute is not None
        self.probe_at: float | None = None
        self.usage_probe_at: float | None = None
        # usage / estimate of recent requests: estimates are scaled by the largest
        self.usage_ratios: deque[float] = deque(maxlen=32)
        self.paused_until = 0.0
        self.epoch = 0
        self.pauses = 0

    def reserve(self, tokens: float, now: float) -> tuple[float, Ticket | None]:
        """``(wait, ticket)``: send after ``wait`` seconds; without a ticket nothing was
        reserved and the caller asks again after ``wait``."""
        if now < self.paused_until:
            return self.paused_until - now, None
        if self._hold(tokens, now):
            return POLL_SECONDS, None
        estimate = tokens
        if self.usage_ratios and tokens > 0:
            tokens = max(1.0, tokens * max(self.usage_ratios))
        wait_requests = self.requests.reserve(1.0, now)
        wait_tokens = self.tokens.reserve(tokens, now)
        ticket = Ticket(
            now, tokens, self.requests.issued, self.tokens.issued, self.epoch,
            now + wait_requests, now + wait_tokens, self.tokens.refunded, estimate,
        )
        return max(wait_requests, wait_tokens), ticket

    def _hold(self, tokens: float, now: float) -> bool:
        """Whether to hold this caller until an earlier request's answer: while nothing is
        known of the server's limits, and while tokens are limited but no usage came back
        yet. The first caller goes; after ``probe_timeout`` everyone goes."""
        if not self.informed:
            if self.probe_at is None:
                self.probe_at = now
                return False
            if now - self.probe_at < self.probe_timeout:
                return True
            self.informed = True  # the first answer is late: stop holding the others
        if tokens > 0 and self.tokens.rate is not None and not self.usage_ratios:
            if self.usage_probe_at is None:
                self.usage_probe_at = now
                return False
            if now - self.usage_probe_at < self.probe_timeout:
                return True
            self.usage_ratios.append(1.0)  # no usage comes back: estimates stand
        return False

    def wait_left(self, ticket: Ticket, now: float) -> float | None:
        """How long ``ticket`` still waits (estimates given back since move it earlier);
        ``None`` when a pause began after it was granted: reserve again."""
        if ticket.epoch != self.epoch:
            return None
        due_tokens = ticket.due_tokens
        refunded = self.tokens.refunded - ticket.refunded_tokens
        if refunded > 0 and self.tokens.rate:
            due_tokens -= refunded / self.tokens.rate
        return max(0.0, max(ticket.due_requests, due_tokens) - now)

    def observe(self, ticket: Ticket | None, feedback: Feedback | None, now: float) -> None:
        self.informed = True
        if feedback is None:
            return
        pairs = (
            (self.requests, feedback.requests, ticket.issued_requests if ticket else None),
            (self.tokens, feedback.tokens, ticket.issued_tokens if ticket else None),
        )
        for bucket, seen, issued_then in pairs:
            if seen is not None:
                bucket.learn(seen, ticket, bucket.issued if issued_then is None else issued_then, now)
        pause = feedback.retry_after
        if pause is None:
            # no Retry-After: an exhausted dimension whose rate is unknown waits for its reset
            for bucket, seen, _ in pairs:
                if seen is not None and seen.remaining == 0 and seen.reset and bucket.rate is None:
                    pause = max(pause or 0.0, seen.reset)
        if pause is not None and pause > 0:
            self.pause(pause, now)

    def pause(self, seconds: float, now: float) -> None:
        """Hold every caller for ``seconds``; reservations granted before are void."""
        until = now + seconds
        if until <= self.paused_until:
            return
        self.paused_until = until
        self.epoch += 1
        self.pauses += 1
        self.requests.pause(seconds, now)
        self.tokens.pause(seconds, now)
        if self.requests.rate is None and self.tokens.rate is None:
            self.informed = False  # after the pause one request goes first again
            self.probe_at = None

    def correct(self, ticket: Ticket, tokens: float) -> None:
        """The request really cost ``tokens`` (its usage), not the reserved estimate."""
        if ticket.estimate > 0:
            self.usage_ratios.append(tokens / ticket.estimate)
        delta = tokens - ticket.tokens
        self.tokens.issued += delta
        if self.tokens.rate is not None:
            self.tokens.level -= delta
            if delta < 0:
                self.tokens.refunded -= delta


class RateLimitBackend(Protocol):
    """Where reservations are made; every method may be called from any thread and loop.
    ``counts_tokens``: whether requests should carry a token estimate."""

    @property
    def counts_tokens(self) -> bool: ...

    async def reserve(self, tokens: float) -> tuple[float, Ticket | None]: ...

    async def wait_left(self, ticket: Ticket) -> float | None: ...

    def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None: ...

    def correct(self, ticket: Ticket, tokens: float) -> None: ...


class LocalBackend:
    """A :class:`LimiterState` in this process, behind a thread lock."""

    def __init__(self, state: LimiterState) -> None:
        self.state = state
        self._lock = threading.Lock()

    @property
    def counts_tokens(self) -> bool:
        return self.state.tokens.rate is not None

    async def reserve(self, tokens: float) -> tuple[float, Ticket | None]:
        with self._lock:
            return self.state.reserve(tokens, time.monotonic())

    async def wait_left(self, ticket: Ticket) -> float | None:
        with self._lock:
            return self.state.wait_left(ticket, time.monotonic())

    def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None:
        with self._lock:
            self.state.observe(ticket, feedback, time.monotonic())

    def correct(self, ticket: Ticket, tokens: float) -> None:
        with self._lock:
            self.state.correct(ticket, tokens)


class RateLimiter:
    """What the transport calls: :meth:`acquire` before each attempt, :meth:`observe` with
    each response's headers (or ``None`` when there was no response), :meth:`correct` with
    the usage that came back."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        backend: RateLimitBackend | None = None,
    ) -> None:
        self.backend: RateLimitBackend = backend or LocalBackend(
            LimiterState(requests_per_minute, tokens_per_minute)
        )

    async def acquire(self, body: Any = None) -> Ticket:
        """Wait for this request's turn. ``body`` (the JSON request) gives its token
        estimate, computed only once tokens are counted."""
        backend = self.backend
        tokens: float | None = None
        while True:
            if tokens is None and backend.counts_tokens:
                tokens = estimate_tokens(body)
            wait, ticket = await backend.reserve(tokens or 0.0)
            if ticket is None:
                await asyncio.sleep(wait)
                continue
            # when tokens are what it waits for, look again now and then: estimates given
            # back by finished requests bring the turn forward
            slice_ = TOKEN_RECHECK if ticket.due_tokens >= ticket.due_requests else wait
            left: float | None = wait
            while left:
                await asyncio.sleep(min(left, slice_))
                left = await backend.wait_left(ticket)
            if left is not None:
                return ticket

    def observe(
        self, ticket: Ticket | None, headers: Mapping[str, str] | None, status: int | None
    ) -> None:
        self.backend.observe(ticket, None if status is None else Feedback.from_headers(headers, status))

    def correct(self, ticket: Ticket, usage: Any) -> None:
        if ticket.estimate <= 0:
            return  # no estimate was reserved (tokens were not counted)
        tokens = usage_tokens(usage)
        if tokens is not None:
            self.backend.correct(ticket, tokens)
