"""Retry policy: exponential backoff with full jitter (the ``backoff`` package's wait
generators), honouring Retry-After / retry-after-ms, capped."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import backoff

from llmkit.core.errors import LLMError, RateLimitError

__all__ = ["MAX_WAIT", "RetryPolicy", "parse_retry_after", "retry_after_detail"]

MAX_WAIT = 7 * 24 * 3600.0
"""The longest wait a server's header is believed for (a week): beyond it the value is
absurd (a timestamp read as seconds, a counter's garbage) and ignored."""


def _seconds(text: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds, or None (``-5``, ``nan``, ``inf`` and
    garbage are ignored: the normal backoff applies)."""
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= MAX_WAIT else None


def retry_after_detail(headers: Mapping[str, str] | None) -> tuple[float, bool] | None:
    """``(seconds, precise)`` from ``retry-after-ms`` or ``Retry-After`` (seconds or
    HTTP-date); ``precise`` is false for whole seconds (a server rounds up to them: a
    Retry-After of 1 may mean any wait below a second). ``None`` when absent or unusable
    (negative, not finite, beyond :data:`MAX_WAIT`)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        seconds = _seconds(ms, 0.001)
        if seconds is not None:
            return seconds, True
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value[:1] in "+-.0123456789" or value.lower() in ("nan", "inf", "infinity"):
        seconds = _seconds(value)
        return None if seconds is None else (seconds, not seconds.is_integer())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    seconds = max(0.0, when.timestamp() - time.time())
    return (seconds, False) if seconds <= MAX_WAIT else None


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP-date)."""
    found = retry_after_detail(headers)
    return None if found is None else found[0]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    ``max_retries`` counts retries, so a request is sent at most ``max_retries + 1`` times.
    Waits grow exponentially from ``initial_delay`` with full jitter, capped at ``max_delay``;
    a server's Retry-After wins over the computed wait, capped at ``max_retry_after``; a rate
    limit whose Retry-After is longer than that is not waited for: the
    :class:`RateLimitError` is raised at once, its ``retry_after`` telling the caller.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """``attempt`` is the number of retries already made."""
        if attempt >= self.max_retries or not isinstance(error, LLMError):
            return False
        if isinstance(error, RateLimitError) and (error.retry_after or 0.0) > self.max_retry_after:
            return False  # the server asks for a longer pause than we wait: give up now
        return error.retryable

    def waits(self) -> Iterator[float]:
        """Jittered exponential waits, one per retry."""
        gen = backoff.expo(base=2, factor=self.initial_delay, max_value=self.max_delay)
        next(gen)  # prime the generator (backoff's protocol)
        for value in gen:
            yield float(backoff.full_jitter(value))

    def delay_for(self, error: BaseException, computed: float) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        return computed
