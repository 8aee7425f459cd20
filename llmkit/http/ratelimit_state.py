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
  per round; one alone in flight says nothing of concurrency and leaves it), and
  successes then raise it slowly; a retry does not take the slot it grew into.
- waiting turns are recomputed at the rate of the moment (a rate raised or lowered since
  a turn was granted moves it).
- pauses: a Retry-After (or ``remaining: 0`` with a reset, while no rate is known) holds
  every caller until then; reservations granted before are void. A whole-second
  Retry-After of 1 (any wait below a second, rounded up) with a rate known holds for one
  interval of that rate instead.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from llmkit.http.ratelimit_learned import (
    BETA,
    INITIAL_WINDOW,
    POLL_SECONDS,
    RATE_FLOOR,
    WINDOW_POLL,
    Bucket,
    Learned,
    RateLimitState,
    Ticket,
)
from llmkit.http.ratelimit_signals import Feedback

__all__ = [
    "BETA",
    "INITIAL_WINDOW",
    "POLL_SECONDS",
    "RATE_FLOOR",
    "WINDOW_POLL",
    "Learned",
    "LimiterState",
    "RateLimitState",
    "Ticket",
]


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
        self.requests = Bucket(None if requests_per_minute is None else requests_per_minute / 60.0)
        tps = None if tokens_per_minute is None else tokens_per_minute / 60.0
        self.tokens = Bucket(tps, max(1.0, tps or 0.0))
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
            paused_until=time.time() + learned.paused_until - now if learned.paused_until > now else None,
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
