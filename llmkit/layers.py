"""The call seam around every provider's public call methods.

``generate``, ``chat``, ``generate_stream``, ``chat_stream``, ``embed`` and ``embed_batch``
of :class:`~llmkit.base.BaseLLM` and of every subclass are wrapped once, when the class is
created. While an instance has no reply cache and no hooks and ``llmkit.instrument()`` was
not called, the wrapper hands the call straight to the provider's own method (the
coroutine or async generator it returns is the caller's; no extra layer). Otherwise the
outermost call on an instance runs through, in order:

1. the instrumentation (:mod:`llmkit.otel`): a span around the call, metrics at its end;
2. the reply cache (:mod:`llmkit.cache`): a hit is returned (or replayed as a stream)
   without calling the provider;
3. hooks (:mod:`llmkit.hooks`): ``request`` before the provider runs (for providers whose
   attempts do not go through the HTTP transport, which reports its own), ``response`` or
   ``error`` when the call ends, with the usage the provider recorded.

A provider method calling another one on the same instance (``generate`` calling ``chat``)
runs unobserved inside the outer call. A call on another instance (a fallback member) is
observed on its own, inside the outer one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.errors import LLMError
from llmkit.hooks import HookEvent
from llmkit.types import Usage

if TYPE_CHECKING:
    from llmkit.base import BaseLLM
    from llmkit.cache import ReplyCache
    from llmkit.hooks import Hooks

__all__ = ["CallRecord", "CallSpan", "Instrumentation", "current_call", "install", "set_instrumentation"]

COROUTINE_METHODS = ("generate", "chat", "embed", "embed_batch")
STREAM_METHODS = ("generate_stream", "chat_stream")


class CallSpan(Protocol):
    """One observed call, as the instrumentation sees it."""

    def enter(self) -> object: ...
    def exit(self, token: object) -> None: ...
    def chunk(self, item: Any) -> None: ...
    def finish(self, result: Any, usage: Usage | None, *, cached: bool = False) -> None: ...
    def fail(self, error: BaseException) -> None: ...


class Instrumentation(Protocol):
    def start(self, llm: BaseLLM, operation: str, options: dict[str, Any]) -> CallSpan: ...


_instrumentation: Instrumentation | None = None
_call: ContextVar[CallRecord | None] = ContextVar("llmkit_call", default=None)


def set_instrumentation(instrumentation: Instrumentation | None) -> None:
    """Observe every call of every instance with ``instrumentation`` (None: stop)."""
    global _instrumentation
    _instrumentation = instrumentation


class CallRecord:
    """What the layers learn while one observed call runs (usage, last attempt, status)."""

    __slots__ = ("attempt", "hooks", "llm", "parent", "status", "usage")

    def __init__(self, llm: BaseLLM, hooks: Hooks | None, parent: CallRecord | None) -> None:
        self.llm = llm
        self.hooks = hooks
        self.parent = parent
        self.usage: Usage | None = None
        self.attempt = 0
        self.status: int | None = None

    def add_usage(self, usage: Usage) -> None:
        """Count ``usage`` for this call and the calls it runs inside (a fallback's)."""
        record: CallRecord | None = self
        while record is not None:
            record.usage = usage if record.usage is None else record.usage + usage
            record = record.parent


def current_call() -> CallRecord | None:
    """The observed call running in this context, if any."""
    return _call.get()


def install(cls: type[BaseLLM]) -> None:
    """Wrap the call methods ``cls`` defines itself (idempotent)."""
    for name in COROUTINE_METHODS + STREAM_METHODS:
        fn = cls.__dict__.get(name)
        if fn is None or getattr(fn, "__llmkit_layered__", False) or not callable(fn):
            continue
        wrap = _wrap_stream if name in STREAM_METHODS else _wrap_coroutine
        setattr(cls, name, wrap(name, fn))


def _inside(llm: BaseLLM) -> bool:
    """True inside an observed call on ``llm`` (one of its methods calling another)."""
    call = _call.get()
    return call is not None and call.llm is llm


def _wrap_coroutine(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: BaseLLM, *args: Any, **kwargs: Any) -> Any:
        if (not self._layered and _instrumentation is None) or _inside(self):
            return fn(self, *args, **kwargs)
        return _observed(self, name, fn, args, kwargs)

    method.__llmkit_layered__ = True  # type: ignore[attr-defined]
    return method


def _wrap_stream(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: BaseLLM, *args: Any, **kwargs: Any) -> Any:
        if (not self._layered and _instrumentation is None) or _inside(self):
            return fn(self, *args, **kwargs)
        return _observed_stream(self, name, fn, args, kwargs)

    method.__llmkit_layered__ = True  # type: ignore[attr-defined]
    return method


class _Observation:
    """The layers of one call: span, cache lookup, hooks."""

    __slots__ = ("cache", "hooks", "key", "llm", "operation", "record", "span", "started")

    def __init__(self, llm: BaseLLM, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.llm = llm
        self.operation = operation
        self.started = time.perf_counter()
        self.hooks = llm._hooks if llm._hooks.active else None
        self.record = CallRecord(llm, self.hooks, _call.get())
        instrumentation = _instrumentation
        self.span = instrumentation.start(llm, operation, kwargs) if instrumentation else None
        self.cache: ReplyCache | None = llm._reply_cache
        self.key = self.cache.key(llm, operation, args, kwargs) if self.cache else None

    async def cached(self) -> Any:
        """The stored reply, or None."""
        if self.cache is None or self.key is None:
            return None
        return await self.cache.get(self.key)

    def hit(self, result: Any) -> None:
        self.llm._metrics.cache_hit()
        if self.span is not None:
            self.span.finish(result, None, cached=True)

    async def before(self) -> None:
        if self.hooks is not None and not self.llm._sends_through_transport():
            await self.hooks.attempt("request", self.llm.provider, self.llm.model, 0)

    async def succeeded(self, result: Any) -> None:
        if self.cache is not None and self.key is not None:
            await self.cache.put(self.key, self.operation, result)
        record = self.record
        if self.span is not None:
            self.span.finish(result, record.usage)
        if self.hooks is not None:
            await self.hooks.emit(
                HookEvent(
                    "response", self.llm.provider, self.llm.model, record.attempt,
                    record.status, time.perf_counter() - self.started, usage=record.usage,
                )
            )

    async def failed(self, error: BaseException) -> None:
        if self.span is not None:
            self.span.fail(error)
        if self.hooks is not None and isinstance(error, LLMError):
            record = self.record
            await self.hooks.emit(
                HookEvent(
                    "error", self.llm.provider, self.llm.model, record.attempt,
                    error.status, time.perf_counter() - self.started, error=error,
                )
            )


async def _observed(
    llm: BaseLLM,
    operation: str,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    obs = _Observation(llm, operation, args, kwargs)
    span_token = obs.span.enter() if obs.span is not None else None
    try:
        stored = await obs.cached()
        if stored is not None:
            result = obs.cache.decode(operation, stored, kwargs, llm.provider)  # type: ignore[union-attr]
            obs.hit(result)
            return result
        await obs.before()
        token = _call.set(obs.record)
        try:
            result = await fn(llm, *args, **kwargs)
        finally:
            _call.reset(token)
    except BaseException as exc:
        await obs.failed(exc)
        raise
    else:
        await obs.succeeded(result)
        return result
    finally:
        if obs.span is not None:
            obs.span.exit(span_token)


async def _observed_stream(
    llm: BaseLLM,
    operation: str,
    fn: Callable[..., AsyncGenerator[Any, None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    obs = _Observation(llm, operation, args, kwargs)
    span = obs.span
    inner: AsyncGenerator[Any, None] | None = None
    received: list[Any] = []
    try:
        stored = await _step(obs, obs.cached())
        if stored is not None:
            items = obs.cache.decode(operation, stored, kwargs, llm.provider)  # type: ignore[union-attr]
            obs.hit(items)
            for item in items:
                yield item
            return
        await _step(obs, obs.before())
        inner = fn(llm, *args, **kwargs)
        while True:
            try:
                item = await _step(obs, inner.__anext__(), record=True)
            except StopAsyncIteration:
                break
            if obs.key is not None:
                received.append(item)
            if span is not None:
                span.chunk(item)
            yield item
    except GeneratorExit:
        # the consumer stopped early: what it got is not a complete reply (not cached)
        if inner is not None:
            await _step(obs, _close(inner), record=True)
            if span is not None:
                span.finish(None, obs.record.usage)
        raise
    except BaseException as exc:
        if inner is not None:
            await _step(obs, _close(inner), record=True)
        await _step(obs, obs.failed(exc))
        raise
    await _step(obs, obs.succeeded(received))


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)  # a custom provider's plain async iterator has none
    if aclose is not None:
        await aclose()


async def _step(obs: _Observation, awaitable: Any, *, record: bool = False) -> Any:
    """Run one step of a stream with the call's span (and record) current: a stream's
    steps run in its consumer's context, which must not keep them after the step."""
    span_token = obs.span.enter() if obs.span is not None else None
    token = _call.set(obs.record) if record else None
    try:
        return await awaitable
    finally:
        if token is not None:
            _call.reset(token)
        if obs.span is not None:
            obs.span.exit(span_token)
