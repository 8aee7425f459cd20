"""The guard every provider call goes through: refuse calls on a closed instance, hold one
concurrency slot of the instance's limiter for the call, and count it in the metrics.

:class:`~llmkit.base.BaseLLM` wraps the call methods each subclass defines, so a custom
provider implementing only ``generate`` obeys ``max_concurrency`` like the built-in ones.
Providers whose transport takes a slot per HTTP attempt (``limits_per_attempt``) get the
closed check only, so no request holds two slots.

A call made from inside a call of the same instance (a ``chat_stream`` built on ``chat``,
a ``generate`` that calls ``chat``) runs under the slot already held: a context variable
names the limiters held by the running call. For streams it is set only while the
provider's generator runs, never across a ``yield`` into the consumer's code.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from llmkit.errors import ConfigError, LLMError
from llmkit.limiter import ConcurrencyLimiter

if TYPE_CHECKING:
    from llmkit.base import BaseLLM

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


def check_open(llm: BaseLLM) -> None:
    if llm._closed:
        raise ConfigError("instance is closed", provider=llm.config.provider)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, LLMError):
        return exc.type
    return "internal" if isinstance(exc, Exception) else "cancelled"


def _needs_slot(llm: BaseLLM) -> bool:
    return not llm.limits_per_attempt and llm._limiter not in _held.get()


def _guard_call(
    fn: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(fn)
    async def call(self: BaseLLM, *args: Any, **kwargs: Any) -> Any:
        check_open(self)
        if not _needs_slot(self):
            return await fn(self, *args, **kwargs)
        limiter, metrics = self._limiter, self._metrics
        metrics.start()
        started = time.perf_counter()
        try:
            await limiter.acquire()
            token = _held.set(_held.get() | {limiter})
            try:
                result = await fn(self, *args, **kwargs)
            finally:
                _held.reset(token)
                limiter.release()
        except BaseException as exc:
            metrics.finish(0.0, _error_type(exc))
            raise
        metrics.finish(time.perf_counter() - started)
        return result

    return call


def _guard_stream(fn: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def stream(self: BaseLLM, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        check_open(self)
        if not _needs_slot(self):
            agen = fn(self, *args, **kwargs)
            try:
                async for item in agen:
                    yield item
            finally:
                await agen.aclose()
            return
        limiter, metrics = self._limiter, self._metrics
        metrics.start()
        started = time.perf_counter()
        error: str | None = "cancelled"
        await _acquire_counted(limiter, metrics)
        agen = fn(self, *args, **kwargs)
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

    return stream


async def _acquire_counted(limiter: ConcurrencyLimiter, metrics: Any) -> None:
    try:
        await limiter.acquire()
    except BaseException as exc:
        metrics.finish(0.0, _error_type(exc))
        raise


_guarded: set[Callable[..., Any]] = set()


def guard_methods(cls: type[BaseLLM]) -> None:
    """Wrap the call methods ``cls`` itself defines."""
    for name in GUARDED_CALLS:
        fn = cls.__dict__.get(name)
        if fn is None or fn in _guarded or not callable(fn):
            continue
        wrapped = _guard_stream(fn) if inspect.isasyncgenfunction(fn) else _guard_call(fn)
        _guarded.add(wrapped)
        setattr(cls, name, wrapped)
