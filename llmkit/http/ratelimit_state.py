"""The limiter's arithmetic: configured limits, what a server has taught, reservations.

Synchronous, no locking, times from ``time.monotonic()`` passed in; picklable (a Ray actor
holds one). :class:`LimiterState` is one instance's view: its configured limits
(``requests_per_minute`` / ``tokens_per_minute``, never exceeded) and a :class:`Learned`
(what the server has said and shown), which may be shared by every instance talking to the
same server with the same key.

Rates are token buckets with reservations (GCRA): a caller reserves its cost and is told
how long to wait, so waiting callers are spaced at the rate instead of waking at once. A
bucket never holds more than a tenth of a second's worth (one unit at least): a per-minute
limit is spread evenly, never sent as a burst.

What :class:`Learned` believes, and from what:

- headers (``x-ratelimit-limit/remaining/reset-*``): a bucket of ``limit`` that refills from
  ``remaining`` in ``reset`` refills at ``(limit - remaining) / reset``; where that is
  a bucket refilling over ten seconds or more (or a limit of 60 or more claimed to refill
  within a second) the limit is per minute and the rate is at most ``limit / 60``. The
  header rate is a ceiling, never a promise. A reset given as a unix timestamp in whole
  seconds tells when, not how fast: no rate is read from it.
- evidence: every 429 of a request sent at the current rate lowers the rate
  multiplicatively (to at most what the server accepted over the last second), and
  every paced success raises it additively (faster, doubling about every 0.7 s, until
  the first decrease), between :data:`RATE_FLOOR` and the header ceiling.
- concurrency: a server that said nothing of its limits starts with an in-flight window
  of :data:`INITIAL_WINDOW` that grows by one per success while it is what holds callers
  back (slow start); every overload answer (a 503, TGI's "Model is overloaded" 429,
  Ollama's full queue) lowers it to the requests still in flight (multiplicatively once
  per round), and successes then raise it slowly.
- pauses: a Retry-After (or ``remaining: 0`` with a reset, while no rate is known) holds
  every caller until then; reservations granted before are void. A whole-second
  Retry-After of 1 (any wait below a second, rounded up) with a rate known holds for one
  interval of that rate instead.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from llmkit.http.ratelimit_signals import Feedback, Limits

__all__ = ["Learned", "LimiterState", "RateLimitState", "Ticket"]

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
    ``paused_for``: seconds every caller still waits (a pause beyond the retry cap raises
    instead); ``source``: where the rate comes from (``"configured"``, ``"headers"``,
    ``"429"``, ``"overload"``, ``"none"``); ``header_rate`` / ``evidence_rate``: the two
    learned rates (the header one is a ceiling)."""

    rate: float | None
    burst: float
    window: float | None
    in_flight: int
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


class _Bucket:
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
        self.requests = _Bucket(None)  # paced at min(header_rate, evidence)
        self.tokens = _Bucket(None)  # from the tokens headers only
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


class LimiterState:
    """One instance's limits: configured buckets (``requests_per_minute`` spaced evenly,
    ``tokens_per_minute`` a second's worth at once) and a :class:`Learned`."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        probe_timeout: float = 1.0,
        learned: Learned | None = None,
    ) -> None:
        self.configured = (requests_per_minute, tokens_per_minute)
        self.requests = _Bucket(None if requests_per_minute is None else requests_per_minute / 60.0)
        tps = None if tokens_per_minute is None else tokens_per_minute / 60.0
        self.tokens = _Bucket(tps, max(1.0, tps or 0.0))
        self.probe_timeout = probe_timeout
        self.learned = learned if learned is not None else Learned()
        self.shared = learned is not None
        self.usage_probe_at: float | None = None
        self.reset_epoch = 0  # the learned pause at which this instance last started afresh
        # usage / estimate of recent requests: estimates are scaled by the largest
        self.usage_ratios: deque[float] = deque(maxlen=32)

    @property
    def counts_tokens(self) -> bool:
        return self.tokens.rate is not None or self.learned.tokens.rate is not None

    @property
    def paused_until(self) -> float:
        return self.learned.paused_until

    def reserve(self, tokens: float, now: float, retry: bool = False) -> tuple[float, Ticket | None]:
        """``(wait, ticket)``: send after ``wait`` seconds; without a ticket nothing was
        reserved and the caller asks again after ``wait``. ``retry``: the request was
        refused before."""
        learned = self.learned
        if now < learned.paused_until:
            return learned.paused_until - now, None
        if self._hold(tokens, now):
            return POLL_SECONDS, None
        if learned.full(retry):
            return WINDOW_POLL, None
        estimate = tokens
        if self.usage_ratios and tokens > 0:
            tokens = max(1.0, tokens * max(self.usage_ratios))
        wait_learned = learned.requests.reserve(1.0, now)
        wait_requests = self.requests.reserve(1.0, now)
        wait_tokens = self.tokens.reserve(tokens, now)
        wait_learned_tokens = learned.tokens.reserve(tokens, now)
        ticket = Ticket(
            now, tokens, learned.requests.issued, learned.tokens.issued, learned.epoch,
            now + wait_requests, now + wait_tokens, self.tokens.refunded, estimate,
            learned.count(), wait_learned > 0,
        )
        return max(wait_requests, wait_learned, wait_tokens, wait_learned_tokens), ticket

    def _hold(self, tokens: float, now: float) -> bool:
        """Whether to hold this caller until an earlier request's answer: while nothing is
        known of the server, and while tokens are limited but no usage came back yet. The
        first caller goes; after ``probe_timeout`` everyone goes."""
        learned = self.learned
        if not learned.informed and self.requests.rate is None and self.tokens.rate is None:
            if learned.probe_at is None:
                learned.probe_at = now
                return False
            if now - learned.probe_at < self.probe_timeout:
                return True
            learned.informed = True  # the first answer is late: stop holding the others
        if tokens > 0 and self.counts_tokens and not self.usage_ratios:
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
        if ticket.epoch != self.learned.epoch:
            self.release(ticket)
            if ticket.epoch >= self.reset_epoch:
                # a pause another instance saw: what it took of this instance's configured
                # limits is given back (it reserves again)
                if self.requests.rate is not None:
                    self.requests.level += 1.0
                if self.tokens.rate is not None:
                    self.tokens.level += ticket.tokens
            return None
        due_tokens = ticket.due_tokens
        refunded = self.tokens.refunded - ticket.refunded_tokens
        if refunded > 0 and self.tokens.rate:
            due_tokens -= refunded / self.tokens.rate
        learned = max(
            self.learned.requests.wait_for(ticket.issued_requests, now),
            self.learned.tokens.wait_for(ticket.issued_tokens, now),
        )
        return max(0.0, max(ticket.due_requests, due_tokens) - now, learned)

    def release(self, ticket: Ticket) -> None:
        """The request is answered (or was never sent): it is no longer in flight."""
        self.learned.release(ticket.serial)

    def observe(self, ticket: Ticket | None, feedback: Feedback | None, now: float) -> None:
        learned = self.learned
        first = not learned.informed
        learned.informed = True
        if feedback is None:
            return
        requests_then = ticket.issued_requests if ticket else learned.requests.issued
        tokens_then = ticket.issued_tokens if ticket else learned.tokens.issued
        if feedback.requests is not None:
            learned.learn_requests(feedback.requests, ticket, requests_then, now)
        if feedback.tokens is not None:
            learned.learn_tokens(feedback.tokens, ticket, tokens_then, now)
        if first and not learned.plausible() and learned.window is None and learned.window_slow_start:
            learned.window = float(INITIAL_WINDOW)  # a server that says nothing: slow start
        kind = feedback.kind
        if kind == "ok":
            learned.succeeded(ticket, now)
        elif kind == "rate":
            learned.rejected(ticket, now)
        elif kind == "overload":
            learned.overloaded(ticket, now)
        if kind in ("rate", "overload") and ticket is not None and self.tokens.rate is not None:
            self.tokens.level += ticket.tokens  # refused: its tokens were not spent
        pause = self._pause_for(feedback, kind)
        if pause is not None and pause > 0:
            epoch = learned.epoch
            learned.pause(pause, now)
            if learned.epoch != epoch:  # what was granted is void: start afresh here too
                self.reset_epoch = learned.epoch
                self.requests.pause(pause, now)
                self.tokens.pause(pause, now)

    def _pause_for(self, feedback: Feedback, kind: str) -> float | None:
        learned = self.learned
        pause = feedback.retry_after
        rate = learned.rate
        if pause is not None:
            if not feedback.retry_after_precise and pause <= 1.0 and rate is not None:
                return min(pause, 1.0 / rate)  # "1": below a second, rounded up
            return pause
        if kind == "rate" and rate is not None:
            return 1.0 / rate  # re-pace what was granted at the old rate
        # no Retry-After: an exhausted dimension whose rate is unknown waits for its reset
        for seen, bucket in ((feedback.requests, learned.requests), (feedback.tokens, learned.tokens)):
            if seen is not None and seen.remaining == 0 and seen.reset and bucket.rate is None:
                pause = max(pause or 0.0, seen.reset)
        return pause

    def correct(self, ticket: Ticket, tokens: float) -> None:
        """The request really cost ``tokens`` (its usage), not the reserved estimate."""
        if ticket.estimate > 0:
            self.usage_ratios.append(tokens / ticket.estimate)
        delta = tokens - ticket.tokens
        for bucket in (self.tokens, self.learned.tokens):
            if bucket.rate is not None:
                bucket.level -= delta
                if delta < 0:
                    bucket.refunded -= delta

    def snapshot(self, now: float) -> RateLimitState:
        learned = self.learned
        rates = [r for r in (self.requests.rate, learned.rate) if r is not None]
        rate = min(rates) if rates else None
        source = learned.source
        if self.requests.rate is not None and (learned.rate is None or self.requests.rate <= learned.rate):
            source = "configured"
        burst = min(self.requests.capacity if self.requests.rate else math.inf,
                    learned.requests.capacity if learned.rate else math.inf)
        return RateLimitState(
            rate=rate,
            burst=burst if math.isfinite(burst) else math.inf,
            window=learned.window,
            in_flight=len(learned.outstanding),
            paused_for=max(0.0, learned.paused_until - now),
            pause_length=learned.pause_length if learned.paused_until > now else 0.0,
            source=source,
            header_rate=learned.header_rate,
            evidence_rate=learned.evidence,
            tokens_per_second=min(
                [r for r in (self.tokens.rate, learned.tokens.rate) if r is not None], default=None
            ),
            configured_requests_per_minute=self.configured[0],
            configured_tokens_per_minute=self.configured[1],
            rejections=learned.rejections,
            overloads=learned.overloads,
            successes=learned.successes,
            shared=self.shared,
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()
