"""What a server teaches the limiter, and the parts it is built of: :class:`Ticket` (a
granted turn), the token bucket with reservations, :class:`Learned` (headers, evidence,
the in-flight window, pauses) and :class:`RateLimitState` (what ``rate_limit_state()``
tells). Synchronous, no locking, times passed in; picklable. Used by
:mod:`llmkit.http.ratelimit_state`, whose docstring gives the rules.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from llmkit.http.ratelimit_signals import Limits

__all__ = ["Bucket", "Learned", "RateLimitState", "Ticket"]

POLL_SECONDS = 0.02  # how often callers held behind the first request look again
WINDOW_POLL = 0.01  # how often callers held by the in-flight window look again
BURST_SECONDS = 0.1  # the most of a learned rate sent at once
PER_MINUTE_PERIOD = 10.0  # a bucket refilling over this long or more is a per-minute limit
RATE_FLOOR = 0.2  # requests per second: the lowest rate evidence lowers to
RATE_CEILING = 100_000.0
BETA = 0.85  # a rejection's multiplicative decrease
SLOW_START_STEP = 1.0  # per paced success, until the first decrease: e-fold per second
ADDITIVE_STEP = 1.0  # per paced success, rate += STEP / rate: one request/s more per second
DELIVERY_SECONDS = 1.0  # what the server accepted over this long bounds a decrease
INITIAL_WINDOW = 16
WINDOW_CEILING = 1024
WINDOW_BETA = 0.9
WINDOW_STEP = 0.25  # per success while the window holds callers back: window += STEP / window


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
    serial: int = -1  # counted in flight until released (-1: not counted)
    paced: bool = False  # waited for the learned rate


@dataclass(frozen=True)
class RateLimitState:
    """What an instance believes of its server's limits, and why (``llm.rate_limit_state()``).

    ``rate``: requests per second it sends at most (``None``: no limit known); ``burst``:
    how many may go at once; ``window``: how many may be in flight (``None``: no bound);
    ``paused_until``: when a pause ends (``time.time()``; ``None``: no pause),
    ``paused_for``: seconds every caller still waits (a pause beyond the retry cap raises
    instead), ``pause_length``: the Retry-After it came from; ``source``: where the rate comes from (``"configured"``, ``"headers"``,
    ``"429"``, ``"overload"``, ``"none"``); ``header_rate`` / ``evidence_rate``: the two
    learned rates (the header one is a ceiling)."""

    rate: float | None
    burst: float
    window: float | None
    in_flight: int
    paused_until: float | None
    paused_for: float
    pause_length: float
    source: str
    header_rate: float | None
    evidence_rate: float | None
    tokens_per_second: float | None
    configured_requests_per_minute: float | None
    configured_tokens_per_minute: float | None
    rejections: int
    overloads: int
    successes: int
    shared: bool


class Bucket:
    """A token bucket that may go negative: the debt is the queue of reservations."""

    __slots__ = ("bounds", "capacity", "issued", "level", "rate", "refunded", "stamp")

    def __init__(self, per_second: float | None, capacity: float = 1.0) -> None:
        self.rate = per_second
        self.capacity = capacity
        self.level = capacity
        self.stamp = 0.0
        self.issued = 0.0  # everything ever reserved (as estimated: corrections move the level)
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

    def retune(self, rate: float | None, capacity: float, now: float) -> None:
        """Change rate and size; the level so far is kept (at most the new size)."""
        if rate is not None and self.rate is not None:
            self.level = self.level_at(now)
        elif rate is not None:
            self.level = capacity
        self.stamp = now
        self.rate, self.capacity = rate, capacity
        self.level = min(self.level, capacity)

    def wait_for(self, issued_then: float, now: float) -> float:
        """How long the reservation made when ``issued`` reached ``issued_then`` still
        waits, at the rate of now (a rate raised or lowered since moves it)."""
        if self.rate is None:
            return 0.0
        deficit = -(self.level_at(now) + (self.issued - issued_then))
        return deficit / self.rate if deficit > 0 else 0.0

    def pause(self, seconds: float, now: float) -> None:
        if self.rate is not None:  # reservations granted before are void: start afresh
            self.level = min(1.0, self.capacity) - seconds * self.rate
            self.stamp = now

    def follow(self, seen: Limits, ticket: Ticket | None, issued_then: float, now: float) -> None:
        """Lower the level to what the server says is left (never raise it)."""
        if self.rate is None or seen.remaining is None:
            return
        since = (now - ticket.at) if ticket is not None else 0.0
        server = min(self.capacity, seen.remaining + since * self.rate) - (self.issued - issued_then)
        if server < self.level_at(now):
            self.level, self.stamp = server, now

    def estimate(self, deficit: float, reset: float, limit: float, requests: bool = True) -> float:
        """The refill rate: ``remaining`` is rounded down to whole units and ``reset`` up
        to milliseconds, so one answer bounds the rate between ``(deficit - 1) / reset``
        and ``deficit / (reset - 1ms)``; the bounds of all answers are intersected (a
        server whose limits changed starts a new interval). A bucket refilling over ten
        seconds or more is a per-minute limit: ``limit / 60`` where the bounds allow it,
        never more. So is a request limit of 60 or more that would refill within a second
        (the per-minute figure beside the counters of a per-second bucket)."""
        low = (deficit - 1.0) / reset
        high = deficit / max(reset - 0.001, reset / 2)
        if self.bounds is not None and low <= self.bounds[1] and high >= self.bounds[0]:
            low, high = max(low, self.bounds[0]), min(high, self.bounds[1])
        self.bounds = (low, high)
        rate = (low + high) / 2 if low > 0 else high / 2
        period = limit / max(rate, 1e-9)
        figure = requests and limit >= 60 and period < 1.0
        if period >= PER_MINUTE_PERIOD or limit / high >= PER_MINUTE_PERIOD or figure:
            per_minute = limit / 60.0
            rate = per_minute if low <= per_minute <= high else min(rate, per_minute)
        return rate


class Learned:
    """What one server (base URL and key) has taught: header limits, evidence, the
    in-flight window, pauses. Shared by the instances that talk to it."""

    def __init__(self) -> None:
        self.header_rate: float | None = None
        self.header_limit: float | None = None
        self.evidence: float | None = None  # the AIMD rate (None until the first 429)
        self.slow_start = True
        self.decreased_at = -math.inf
        self.requests = Bucket(None)  # paced at min(header_rate, evidence)
        self.tokens = Bucket(None)  # from the tokens headers only
        self.window: float | None = None
        self.window_slow_start = True
        self.window_decreased_at = -math.inf
        self.window_good: float | None = None  # in flight at the last overload answer
        self.outstanding: set[int] = set()
        self.serial = 0
        self.paused_until = 0.0
        self.pause_length = 0.0
        self.epoch = 0
        self.pauses = 0
        self.informed = False  # an answer of the server has been seen
        self.probe_at: float | None = None
        self.delivered: deque[float] = deque(maxlen=4096)
        self.rejections = 0
        self.overloads = 0
        self.successes = 0
        self.source = "none"

    # -- the rate

    @property
    def rate(self) -> float | None:
        rates = [r for r in (self.header_rate, self.evidence) if r is not None]
        return min(rates) if rates else None

    def _retune(self, now: float) -> None:
        rate = self.rate
        capacity = 1.0 if rate is None else max(1.0, rate * BURST_SECONDS)
        if self.header_limit is not None:
            capacity = max(1.0, min(capacity, self.header_limit))
        self.requests.retune(rate, capacity, now)

    def _delivered(self, now: float) -> int:
        while self.delivered and now - self.delivered[0] > DELIVERY_SECONDS:
            self.delivered.popleft()
        return len(self.delivered)

    def learn_requests(self, seen: Limits, ticket: Ticket | None, issued_then: float, now: float) -> None:
        limit, remaining, reset = seen.limit, seen.remaining, seen.reset
        if limit and reset and seen.reset_precise and remaining is not None and remaining < limit:
            self.header_rate = min(RATE_CEILING, self.requests.estimate(limit - remaining, reset, limit))
            self.header_limit = limit
            if self.evidence is None or self.header_rate <= self.evidence:
                self.source = "headers"
            self._retune(now)
        self.requests.follow(seen, ticket, issued_then, now)

    def learn_tokens(self, seen: Limits, ticket: Ticket | None, issued_then: float, now: float) -> None:
        limit, remaining, reset = seen.limit, seen.remaining, seen.reset
        bucket = self.tokens
        if limit and reset and seen.reset_precise and remaining is not None and remaining < limit:
            rate = min(RATE_CEILING * 1000, bucket.estimate(limit - remaining, reset, limit, False))
            bucket.retune(rate, max(1.0, min(limit, rate * 1.0)), now)
        bucket.follow(seen, ticket, issued_then, now)

    def rejected(self, ticket: Ticket | None, now: float) -> None:
        """A 429: lower the rate (once per round: requests sent before the last decrease
        belong to the round that caused it)."""
        self.rejections += 1
        delivered = self._delivered(now) / DELIVERY_SECONDS
        if self.evidence is None:
            start = self.rate if self.rate is not None else delivered
            if start < 2.0 / DELIVERY_SECONDS:
                return  # nothing accepted lately: no rate to start from (the pause holds)
            if self.rate is not None:  # headers told a rate: evidence says it is less
                start = min(start * BETA, delivered) if delivered >= 2 else start * BETA
            self.evidence = max(RATE_FLOOR, start)
            # headers that claimed far more than is accepted are no guide: find the rate
            self.slow_start = self.header_rate is None or self.evidence < self.header_rate / 2
        elif ticket is None or ticket.at >= self.decreased_at:
            lowered = self.evidence * BETA
            if delivered >= 2:
                lowered = min(lowered, delivered)
            self.evidence = max(RATE_FLOOR, lowered)
            self.slow_start = False
        else:
            return
        self.decreased_at = now
        self.source = "429"
        self._retune(now)

    def overloaded(self, ticket: Ticket | None, now: float) -> None:
        """An overload answer: the window falls to what is still in flight, and by
        :data:`WINDOW_BETA` once per round."""
        self.overloads += 1
        counted = ticket is not None and ticket.serial in self.outstanding
        others = float(len(self.outstanding) - counted)
        if not counted or others < 1:
            # alone (or not counted): says nothing of how many at once; the retry backs off
            return
        if self.window is None or ticket is None or ticket.at >= self.window_decreased_at:
            self.window = max(1.0, min((self.window or math.inf) * WINDOW_BETA, others))
            self.window_decreased_at = now
        else:
            self.window = max(1.0, min(self.window, others))
        self.window_good = others
        self.window_slow_start = False
        if self.source in ("none", "headers") and self.evidence is None:
            self.source = "overload"

    def succeeded(self, ticket: Ticket | None, now: float) -> None:
        self.successes += 1
        self.delivered.append(now)
        if ticket is not None and ticket.paced and self.evidence is not None:
            ceiling = min(RATE_CEILING, self.header_rate or RATE_CEILING)
            if self.evidence < ceiling:
                step = SLOW_START_STEP if self.slow_start else ADDITIVE_STEP / self.evidence
                self.evidence = min(ceiling, self.evidence + step)
                self._retune(now)
        window = self.window
        after = ticket is None or ticket.at >= self.window_decreased_at
        if window is not None and after and len(self.outstanding) + 1 >= window:
            window += 1.0 if self.window_slow_start else WINDOW_STEP / window
            self.window = None if window > WINDOW_CEILING else window

    def plausible(self) -> bool:
        """Whether the headers describe a rate worth pacing by alone: a bucket that takes
        a second or more to refill (one refilling faster than it empties is a claim the
        evidence will have to correct: it gets the in-flight window's slow start too)."""
        if self.tokens.rate is not None:
            return True
        rate, limit = self.header_rate, self.header_limit
        return rate is not None and limit is not None and limit / rate >= 1.0

    # -- pauses and the window

    def pause(self, seconds: float, now: float) -> None:
        """Hold every caller for ``seconds``; reservations granted before are void."""
        until = now + seconds
        if until <= self.paused_until:
            return
        self.paused_until, self.pause_length = until, seconds
        self.epoch += 1
        self.pauses += 1
        self.requests.pause(seconds, now)
        self.tokens.pause(seconds, now)
        if self.rate is None and self.tokens.rate is None:
            self.informed = False  # after the pause one request goes first again
            self.probe_at = None

    def full(self, retry: bool = False) -> bool:
        """Whether the window holds a caller back. A retry does not take a slot the window
        grew into since the last overload answer (a new request probes it): the same
        request is not refused again and again while the window finds its size."""
        if self.window is None:
            return False
        limit = self.window
        if retry and self.window_good is not None:
            limit = min(limit, self.window_good)
        return len(self.outstanding) >= max(1, int(limit))

    def count(self) -> int:
        self.serial += 1
        self.outstanding.add(self.serial)
        return self.serial

    def release(self, serial: int) -> None:
        self.outstanding.discard(serial)
