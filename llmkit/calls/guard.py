"""The guard every provider call goes through: refuse calls on a closed instance, hold one
concurrency slot of the instance's limiter for the call, and count it in the metrics.

:class:`~llmkit.base.BaseLLM` wraps the call methods each subclass defines, so a custom
provider implementing only ``generate`` obeys ``max_concurrency`` like the built-in ones.
Providers whose attempts go through the HTTP transport (``attempts_through_transport``),
which takes a slot and counts each attempt itself, get the closed check only, and their own
coroutine or async generator back with no layer around it, so no request holds two slots
and no chunk pays for a wrapper.

A call made from inside a call of the same instance (a ``chat_stream`` built on ``chat``,
a ``generate`` that calls ``chat``) runs under the slot already held: a context variable
names the limiters held by the running call. For streams it is set only while the
provider's generator runs, never across a ``yield`` into the consumer's code.

Closing the instance ends the wait of every call queued for a slot: ``ConfigError("instance
is closed")``, a stream :class:`StreamError`.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from llmkit.calls.limiter import ConcurrencyLimiter, LimiterClosed
from llmkit.calls.protocol import check_open
from llmkit.core.errors import LLMError, instance_closed

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallTarget

__all__ = ["GUARDED_CALLS", "check_open", "guard_methods"]

GUARDED_CALLS = (
    "generate",
    "chat",
    "generate_stream",
    "chat_stream",
    "embed",
    "embed_batch",
    "build_cache",
    "generate_with_cache",
)

_held: ContextVar[frozenset[ConcurrencyLimiter]] = ContextVar(
    "llmkit_held_limiters", default=frozenset()
)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, LLMError):
        return exc.type
    return "internal" if isinstance(exc, Exception) else "cancelled"


def _needs_slot(llm: CallTarget) -> bool:
    return llm.call_state.limiter not in _held.get() and not llm.attempts_through_transport


async def _slot(llm: CallTarget, limiter: ConcurrencyLimiter, *, streaming: bool) -> None:
    """Wait for a slot; the instance's close ends the wait with the error a closed
    instance gives (a stream: :class:`StreamError`)."""
    try:
        await limiter.acquire()
    except LimiterClosed:
        raise instance_closed(llm.config.provider, streaming=streaming) from None


def _guard_call(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(self: CallTarget, *args: Any, **kwargs: Any) -> Any:
        check_open(self)
        if not _needs_slot(self):
            return fn(self, *args, **kwargs)  # the provider's own coroutine: no extra layer
        return _slotted_call(self, fn, args, kwargs)

    return call


async def _slotted_call(
    llm: CallTarget,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    limiter, metrics = llm.call_state.limiter, llm.call_state.metrics
    metrics.start()
    started = time.perf_counter()
    try:
        await _slot(llm, limiter, streaming=False)
        token = _held.set(_held.get() | {limiter})
        try:
            result = await fn(llm, *args, **kwargs)
        finally:
            _held.reset(token)
            limiter.release()
    except BaseException as exc:
        metrics.finish(0.0, _error_type(exc))
        raise
    metrics.finish(time.perf_counter() - started)
    return result


def _guard_stream(fn: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def stream(self: CallTarget, *args: Any, **kwargs: Any) -> Any:
        check_open(self)
        if not _needs_slot(self):
            return fn(self, *args, **kwargs)  # the provider's own generator: no extra layer
        return _slotted_stream(self, fn, args, kwargs)

    return stream


async def _slotted_stream(
    llm: CallTarget,
    fn: Callable[..., AsyncGenerator[Any, None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    limiter, metrics = llm.call_state.limiter, llm.call_state.metrics
    metrics.start()
    started = time.perf_counter()
    error: str | None = "cancelled"
    try:
        await _slot(llm, limiter, streaming=True)
    except BaseException as exc:
        metrics.finish(0.0, _error_type(exc))
        raise
    agen = fn(llm, *args, **kwargs)
    try:
        while True:
            token = _held.set(_held.get() | {limiter})
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                break
            finally:
                _held.reset(token)
            yield item
        error = None
    except GeneratorExit:
        error = None  # the consumer stopped early: not a failure
        raise
    except BaseException as exc:
        error = _error_type(exc)
        raise
    finally:
        try:
            await agen.aclose()
        finally:
            limiter.release()
            if error is None:
                metrics.finish(time.perf_counter() - started)
            else:
                metrics.finish(0.0, error)


_guarded: set[Callable[..., Any]] = set()


def guard_methods(cls: type) -> None:
    """Wrap the call methods ``cls`` itself defines."""
    for name in GUARDED_CALLS:
        fn = cls.__dict__.get(name)
        if fn is None or fn in _guarded:
            continue
        if inspect.isasyncgenfunction(fn):
            wrapped = _guard_stream(fn)
        elif inspect.iscoroutinefunction(fn):
            wrapped = _guard_call(fn)
        else:  # a plain function returning an iterator or awaitable: left as it is
            continue
        _guarded.add(wrapped)
        setattr(cls, name, wrapped)
