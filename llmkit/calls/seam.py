"""The call seam around every provider's public call methods.

``generate``, ``chat``, ``generate_stream``, ``chat_stream``, ``embed`` and ``embed_batch``
of :class:`~llmkit.base.BaseLLM` and of every subclass are wrapped once, when the class is
created. While an instance has no layers of its own (no reply cache, no hooks) and no
instrumentation is set (``llmkit.instrument()``), the wrapper hands the call straight to
the provider's own method: the coroutine or async generator it returns is the caller's, no
extra layer. Otherwise the outermost call on an instance runs through its layers
(:mod:`llmkit.calls.protocol`), outermost first: the instrumentation, then the instance's
own (the reply cache, then the hooks).

A provider method calling another one on the same instance (``generate`` calling ``chat``)
runs unobserved inside the outer call. A call on another instance (a fallback member) is
observed on its own, inside the outer one.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from llmkit.calls.protocol import (
    NO_ANSWER,
    CallRecord,
    Layer,
    LayerCall,
    current_call,
    enter_call,
    inside,
    leave_call,
)

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallTarget

__all__ = ["install", "instrumentation", "set_instrumentation"]

COROUTINE_METHODS = ("generate", "chat", "embed", "embed_batch")
STREAM_METHODS = ("generate_stream", "chat_stream")

_instrumentation: Layer | None = None


def set_instrumentation(layer: Layer | None) -> None:
    """Run ``layer`` around every call of every instance (None: stop)."""
    global _instrumentation
    _instrumentation = layer


def instrumentation() -> Layer | None:
    return _instrumentation


def install(cls: type) -> None:
    """Wrap the call methods ``cls`` defines itself (idempotent)."""
    for name in COROUTINE_METHODS + STREAM_METHODS:
        fn = cls.__dict__.get(name)
        if fn is None or getattr(fn, "__llmkit_layered__", False) or not callable(fn):
            continue
        wrap = _wrap_stream if name in STREAM_METHODS else _wrap_coroutine
        setattr(cls, name, wrap(name, fn))


def _unobserved(target: CallTarget) -> bool:
    return (not target.call_state.layers and _instrumentation is None) or inside(target)


def _wrap_coroutine(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: CallTarget, *args: Any, **kwargs: Any) -> Any:
        if _unobserved(self):
            return fn(self, *args, **kwargs)
        return _observed(self, name, fn, args, kwargs)

    method.__llmkit_layered__ = True  # type: ignore[attr-defined]
    return method


def _wrap_stream(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: CallTarget, *args: Any, **kwargs: Any) -> Any:
        if _unobserved(self):
            return fn(self, *args, **kwargs)
        return _observed_stream(self, name, fn, args, kwargs)

    method.__llmkit_layered__ = True  # type: ignore[attr-defined]
    return method


def _start(
    target: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[LayerCall]:
    layers: list[Layer] = [] if _instrumentation is None else [_instrumentation]
    layers.extend(target.call_state.layers)
    calls = []
    for layer in layers:
        call = layer.start(target, operation, args, kwargs)
        if call is not None:
            calls.append(call)
    return calls


async def _answer(target: CallTarget, calls: Sequence[LayerCall]) -> Any:
    """The first answer a layer gives (the outer layers are told), or NO_ANSWER."""
    for i, call in enumerate(calls):
        result = await call.answer()
        if result is not NO_ANSWER:
            target.call_state.metrics.cache_hit()
            for outer in calls[:i]:
                outer.answered(result)
            return result
    return NO_ANSWER


async def _observed(
    target: CallTarget,
    operation: str,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    calls = _start(target, operation, args, kwargs)
    record = CallRecord(target, current_call())
    tokens = [call.enter() for call in calls]
    try:
        result = await _answer(target, calls)
        if result is not NO_ANSWER:
            return result
        for call in calls:
            await call.before()
        token = enter_call(record)
        try:
            result = await fn(target, *args, **kwargs)
        finally:
            leave_call(token)
    except BaseException as exc:
        for call in reversed(calls):
            await call.failed(exc, record)
        raise
    else:
        for call in reversed(calls):
            await call.succeeded(result, record)
        return result
    finally:
        for call, entered in zip(reversed(calls), reversed(tokens), strict=True):
            call.exit(entered)


async def _observed_stream(
    target: CallTarget,
    operation: str,
    fn: Callable[..., AsyncGenerator[Any, None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    calls = _start(target, operation, args, kwargs)
    record = CallRecord(target, current_call())
    inner: AsyncGenerator[Any, None] | None = None
    try:
        replay = await _step(calls, _answer(target, calls))
        if replay is not NO_ANSWER:
            for item in replay:
                yield item
            return
        for call in calls:
            await _step(calls, call.before())
        inner = fn(target, *args, **kwargs)
        while True:
            try:
                item = await _step(calls, inner.__anext__(), record)
            except StopAsyncIteration:
                break
            for call in calls:
                call.chunk(item)
            yield item
    except GeneratorExit:
        # the consumer stopped early: what it got is not a complete reply
        if inner is not None:
            await _step(calls, _close(inner), record)
            for call in reversed(calls):
                call.abandoned(record)
        raise
    except BaseException as exc:
        if inner is not None:
            await _step(calls, _close(inner), record)
        for call in reversed(calls):
            await _step(calls, call.failed(exc, record))
        raise
    for call in reversed(calls):
        await _step(calls, call.succeeded(None, record))


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)  # a custom provider's plain async iterator has none
    if aclose is not None:
        await aclose()


async def _step(calls: Sequence[LayerCall], awaitable: Any, record: CallRecord | None = None) -> Any:
    """Run one step of a stream with the layers' contexts (and the call record) current: a
    stream's steps run in its consumer's context, which must not keep them after the step."""
    tokens = [call.enter() for call in calls]
    token = enter_call(record) if record is not None else None
    try:
        return await awaitable
    finally:
        if token is not None:
            leave_call(token)
        for call, entered in zip(reversed(calls), reversed(tokens), strict=True):
            call.exit(entered)
