"""Request hooks: ``llm.on(event, callback)``.

Events, each delivered as one :class:`HookEvent`:

* ``request`` before every attempt is sent (``attempt`` 0, then 1, 2, ... for retries);
* ``retry`` after a failed attempt that will be retried (``error``, ``delay``);
* ``response`` once a call succeeded (``status``, ``duration``, ``usage``);
* ``error`` once a call failed for good (``error``, ``status``, ``duration``).

HTTP providers report attempts from their transport, where retries happen; other
providers (mock, custom, local models) from the call itself (see :mod:`llmkit.calls.seam`).
A callback may be a plain function or a coroutine function (awaited in place). An
exception a callback raises is logged on the ``llmkit.calls.hooks`` logger and never reaches the
call. An instance with no callbacks pays nothing. :class:`Hooks` is a call layer
(:mod:`llmkit.calls.protocol`): ``response`` and ``error`` are emitted when the call ends.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llmkit.calls.protocol import CallRecord, LayerCall, current_call
from llmkit.core.errors import ConfigError, LLMError
from llmkit.core.types import Usage

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallTarget

__all__ = ["EVENTS", "HookEvent", "Hooks"]

log = logging.getLogger("llmkit.calls.hooks")

EventName = Literal["request", "response", "retry", "error"]
EVENTS: tuple[str, ...] = ("request", "response", "retry", "error")


@dataclass(slots=True)
class HookEvent:
    """What a hook callback receives."""

    event: str
    provider: str
    model: str | None
    attempt: int = 0
    """0 for the first attempt, n for the n-th retry."""
    status: int | None = None
    """The HTTP status where one is known: a failed attempt's, a streamed response's (a
    non-streamed success is any 2xx and reports None); None for providers without HTTP."""
    duration: float | None = None
    """Seconds since the call started (``response``, ``error``)."""
    usage: Usage | None = None
    """Token usage of the call, where the provider reports it (``response``)."""
    error: LLMError | None = None
    """The failure (``retry``, ``error``)."""
    delay: float | None = None
    """Seconds until the next attempt (``retry``)."""


Callback = Callable[[HookEvent], Any]


class Hooks:
    """The callbacks registered on one provider instance."""

    __slots__ = ("_callbacks", "_lock", "active")

    def __init__(self) -> None:
        self._callbacks: dict[str, tuple[Callback, ...]] = {}
        self._lock = threading.Lock()
        self.active = False
        """True once any callback is registered (checked on the hot path)."""

    def on(self, event: str, callback: Callback) -> Callback:
        """Register ``callback`` for ``event``; returns it (usable as a decorator)."""
        if event not in EVENTS:
            raise ConfigError(f"unknown hook event {event!r}; events: {', '.join(EVENTS)}")
        if not callable(callback):
            raise ConfigError(f"hook callback for {event!r} is not callable")
        with self._lock:
            self._callbacks[event] = (*self._callbacks.get(event, ()), callback)
            self.active = True
        return callback

    def off(self, event: str, callback: Callback) -> None:
        """Remove one registration of ``callback`` (no error when it is not registered)."""
        with self._lock:
            current = list(self._callbacks.get(event, ()))
            if callback in current:
                current.remove(callback)
            self._callbacks[event] = tuple(current)
            self.active = any(self._callbacks.values())

    async def emit(self, event: HookEvent) -> None:
        """Run the callbacks of ``event.event`` in registration order."""
        for callback in self._callbacks.get(event.event, ()):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s hook %r failed (ignored)", event.event, callback)

    # ------------------------------------------------------------------ attempt points

    async def attempt(
        self,
        event: str,
        provider: str,
        model: str | None,
        attempt: int,
        *,
        error: LLMError | None = None,
        delay: float | None = None,
    ) -> None:
        """A ``request`` or ``retry`` event."""
        status = error.status if error is not None else None
        await self.emit(
            HookEvent(event, provider, model, attempt, status, error=error, delay=delay)
        )

    async def outcome(
        self,
        provider: str,
        model: str | None,
        attempt: int,
        duration: float,
        *,
        status: int | None = None,
        error: LLMError | None = None,
    ) -> None:
        """An exchange finished. Inside a call observed by :mod:`llmkit.calls.seam` the call
        reports it (with the call's usage) when it returns; otherwise it is reported now."""
        call = current_call()
        if call is not None and call.target.call_state.hooks is self:
            call.attempt = attempt
            call.status = status if error is None else error.status
            return
        name = "response" if error is None else "error"
        status = status if error is None else error.status
        await self.emit(HookEvent(name, provider, model, attempt, status, duration, error=error))


    # ------------------------------------------------------------------ the call layer

    def start(
        self, target: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> LayerCall | None:
        return _HookCall(self, target) if self.active else None


class _HookCall(LayerCall):
    """The hooks' part in one call: ``request`` (where no transport reports attempts), then
    ``response`` or ``error`` with what the call record learned."""

    __slots__ = ("hooks", "started", "target")

    def __init__(self, hooks: Hooks, target: CallTarget) -> None:
        self.hooks = hooks
        self.target = target
        self.started = time.perf_counter()

    async def before(self) -> None:
        if not self.target.attempts_through_transport:
            await self.hooks.attempt("request", self.target.provider, self.target.model, 0)

    async def succeeded(self, result: Any, record: CallRecord) -> None:
        await self.hooks.emit(
            HookEvent(
                "response", self.target.provider, self.target.model, record.attempt,
                record.status, time.perf_counter() - self.started, usage=record.usage,
            )
        )

    async def failed(self, error: BaseException, record: CallRecord) -> None:
        if isinstance(error, LLMError):
            await self.hooks.emit(
                HookEvent(
                    "error", self.target.provider, self.target.model, record.attempt,
                    error.status, time.perf_counter() - self.started, error=error,
                )
            )
