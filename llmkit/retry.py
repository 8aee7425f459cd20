"""Retry policy: exponential backoff with full jitter (the ``backoff`` package's wait
generators), honouring Retry-After / retry-after-ms, capped."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import backoff

from llmkit.errors import LLMError

__all__ = ["RetryPolicy", "parse_retry_after"]


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP-date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    ``max_retries`` counts retries, so a request is sent at most ``max_retries + 1`` times.
    Waits grow exponentially from ``initial_delay`` with full jitter, capped at ``max_delay``;
    a server's Retry-After wins over the computed wait, capped at ``max_retry_after``.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """``attempt`` is the number of retries already made."""
        if attempt >= self.max_retries:
            return False
        return isinstance(error, LLMError) and error.retryable

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
