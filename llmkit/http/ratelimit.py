"""Client-side rate limits as the transport uses them: :class:`RateLimiter` (wait for a
turn, report each answer, give the turn back), its backends, and the process-wide registry
of what servers have taught.

The arithmetic is :mod:`llmkit.http.ratelimit_state`'s (configured limits per instance,
learned limits per server, see there); the signals are :mod:`llmkit.http.ratelimit_signals`'.
What a server teaches (its headers, 429s, overload answers, pauses, the in-flight window)
is shared by every instance of the process that talks to the same base URL with the same
key: the registry is keyed by the base URL and a hash of the key, never the key itself.
Configured limits (``requests_per_minute``, ``tokens_per_minute``) stay per instance.

A pause never outlives the retry cap: while the server's Retry-After is longer than the
instance's ``max_pause`` (its ``max_retry_after``), every caller gets a
:class:`RateLimitError` at once, with ``retry_after`` set to what is left, instead of
sleeping.

A :class:`RateLimiter`'s ``backend`` (a :class:`LocalBackend` by default) may be replaced
by any object with the :class:`RateLimitBackend` methods, e.g. one that asks a limiter
shared by many processes (``llmkit.ray``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from llmkit.core.errors import LLMError, RateLimitError
from llmkit.http.ratelimit_signals import Feedback, estimate_tokens, parse_reset, usage_tokens
from llmkit.http.ratelimit_state import Learned, LimiterState, RateLimitState, Ticket

__all__ = [
    "Feedback",
    "LimiterState",
    "LocalBackend",
    "RateLimitBackend",
    "RateLimitState",
    "RateLimiter",
    "Ticket",
    "estimate_tokens",
    "learned_for",
    "parse_reset",
    "usage_tokens",
]

TOKEN_RECHECK = 0.2  # seconds between looks at a wait for tokens
PACE_RECHECK = 0.1  # seconds between looks at a wait for a learned rate (it moves)
# What a provider counts its limits against: the key, and (OpenAI) the organization and
# project the key's requests are billed to, which have limits of their own.
_KEY_HEADERS = (
    "authorization", "api-key", "x-api-key", "x-goog-api-key",
    "openai-organization", "openai-project",
)


class _Shared:
    """A :class:`Learned` with the lock every instance using it takes."""

    def __init__(self) -> None:
        self.learned = Learned()
        self.lock = threading.Lock()


_registry: weakref.WeakValueDictionary[tuple[str, str], _Shared] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def _key_hash(headers: Mapping[str, str] | None) -> str:
    digest = hashlib.sha256()
    for name, value in sorted((k.lower(), v) for k, v in (headers or {}).items()):
        if name in _KEY_HEADERS:
            digest.update(f"{name}\0{value}\0".encode())
    return digest.hexdigest()


def learned_for(base_url: str, headers: Mapping[str, str] | None) -> _Shared:
    """The process's shared knowledge of ``base_url`` as seen with the key in ``headers``
    (kept while an instance uses it)."""
    key = (base_url.rstrip("/"), _key_hash(headers))
    with _registry_lock:
        shared = _registry.get(key)
        if shared is None:
            shared = _Shared()
            _registry[key] = shared
        return shared


class RateLimitBackend(Protocol):
    """Where reservations are made; every method may be called from any thread and loop.
    ``counts_tokens``: whether requests should carry a token estimate."""

    @property
    def counts_tokens(self) -> bool: ...

    async def reserve(self, tokens: float, retry: bool = False) -> tuple[float, Ticket | None]: ...

    async def wait_left(self, ticket: Ticket) -> float | None: ...

    def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None: ...

    def correct(self, ticket: Ticket, tokens: float) -> None: ...


class LocalBackend:
    """A :class:`LimiterState` in this process, behind the lock of its learned limits."""

    recheck = PACE_RECHECK

    def __init__(self, state: LimiterState) -> None:
        self.state = state
        self._shared: _Shared | None = None
        self._lock = threading.Lock()

    def share(self, shared: _Shared) -> None:
        """Learn into ``shared`` (what every instance with the same server and key sees)."""
        with self._lock:
            if self._shared is None:
                self._shared = shared
                self._lock = shared.lock
                self.state.learned = shared.learned
                self.state.shared = True

    @property
    def counts_tokens(self) -> bool:
        return self.state.counts_tokens

    @property
    def paused(self) -> tuple[float, float]:
        """``(seconds left, the pause's length)``."""
        learned = self.state.learned
        return learned.paused_until - time.monotonic(), learned.pause_length

    async def reserve(self, tokens: float, retry: bool = False) -> tuple[float, Ticket | None]:
        with self._lock:
            return self.state.reserve(tokens, time.monotonic(), retry)

    async def wait_left(self, ticket: Ticket) -> float | None:
        with self._lock:
            return self.state.wait_left(ticket, time.monotonic())

    def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None:
        with self._lock:
            self.state.observe(ticket, feedback, time.monotonic())

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            self.state.release(ticket)

    def correct(self, ticket: Ticket, tokens: float) -> None:
        with self._lock:
            self.state.correct(ticket, tokens)

    def snapshot(self) -> RateLimitState:
        with self._lock:
            return self.state.snapshot(time.monotonic())


class RateLimiter:
    """What the transport calls: :meth:`acquire` before each attempt, :meth:`observe` with
    each answer (or ``None`` when there was none), :meth:`release` when the attempt is
    over, :meth:`correct` with the usage that came back. ``max_pause``: the longest pause
    callers sleep through (the retry cap); a longer one raises."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        backend: RateLimitBackend | None = None,
        max_pause: float = 60.0,
        provider: str | None = None,
    ) -> None:
        self.backend: RateLimitBackend = backend or LocalBackend(
            LimiterState(requests_per_minute, tokens_per_minute)
        )
        self.max_pause = max_pause
        self.provider = provider

    def share(self, base_url: str, headers: Mapping[str, str] | None) -> None:
        """Learn together with every instance of this process that talks to ``base_url``
        with the key in ``headers`` (only a hash of it is kept). The first call wins."""
        backend = self.backend
        if isinstance(backend, LocalBackend):
            backend.share(learned_for(base_url, headers))

    def _refuse(self) -> None:
        """Raise while a pause longer than ``max_pause`` lasts."""
        paused = getattr(self.backend, "paused", None)
        if paused is None:
            return
        left, length = paused
        if left > 0 and length > self.max_pause:
            raise RateLimitError(
                f"rate limited: the server asked for a pause of {length:.0f}s, longer than the "
                f"retry cap ({self.max_pause:g}s); {left:.0f}s left",
                provider=self.provider, status=429, retry_after=left, retryable=False,
            )

    async def acquire(self, body: Any = None, retry: bool = False) -> Ticket:
        """Wait for this request's turn. ``body`` (the JSON request) gives its token
        estimate, computed only once tokens are counted; ``retry``: it was sent before."""
        backend = self.backend
        tokens: float | None = None
        while True:
            self._refuse()
            if tokens is None and backend.counts_tokens:
                tokens = estimate_tokens(body)
            wait, ticket = await backend.reserve(tokens or 0.0, retry)
            if ticket is None:
                await asyncio.sleep(min(wait, 1.0))  # look again: the pause may be refused
                continue
            try:
                # when tokens are what it waits for, look again now and then: estimates
                # given back by finished requests bring the turn forward
                # and while a learned rate paces it, now and then too: a rate raised or
                # lowered since moves the turn
                slice_ = TOKEN_RECHECK if ticket.due_tokens >= ticket.due_requests else wait
                if ticket.paced or ticket.estimate > 0:
                    slice_ = min(slice_, getattr(backend, "recheck", TOKEN_RECHECK))
                left: float | None = wait
                while left:
                    await asyncio.sleep(min(left, slice_))
                    left = await backend.wait_left(ticket)
            except BaseException:
                self.release(ticket)
                raise
            if left is not None:
                return ticket

    def observe(
        self,
        ticket: Ticket | None,
        headers: Mapping[str, str] | None,
        status: int | None,
        detail: str | bytes | None = None,
    ) -> None:
        """An answer: its headers and status, and for an error its body or message (what
        tells an overloaded server from a rate limit)."""
        feedback = None if status is None else Feedback.from_headers(headers, status, detail)
        self.backend.observe(ticket, feedback)

    def release(self, ticket: Ticket | None) -> None:
        release = getattr(self.backend, "release", None)
        if ticket is not None and release is not None:
            release(ticket)

    def retry_delay(self, error: LLMError, computed: float) -> float:
        """How long a request the server refused waits before asking for a turn again:
        for a 429 while the limiter holds a pause or paces, what is left of the pause
        (the limiter spaces the retry); otherwise ``computed`` (the retry policy's)."""
        if not isinstance(error, RateLimitError) or error.status != 429:
            return computed
        backend = self.backend
        if isinstance(backend, LocalBackend):
            left, _ = backend.paused
            if left > 0 or backend.state.learned.rate is not None:
                return max(0.0, left)
        return computed

    def correct(self, ticket: Ticket, usage: Any) -> None:
        if ticket.estimate <= 0:
            return  # no estimate was reserved (tokens were not counted)
        tokens = usage_tokens(usage)
        if tokens is not None:
            self.backend.correct(ticket, tokens)

    def snapshot(self) -> RateLimitState | None:
        snapshot = getattr(self.backend, "snapshot", None)
        return snapshot() if snapshot is not None else None
