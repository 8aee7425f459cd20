"""Blocking twins of the async API, for scripts and notebooks.

``llmkit.sync.create_llm(config)`` gives a :class:`SyncLLM`: the same methods as the
provider, as blocking calls; streams are plain iterators. ``llmkit.sync.run_job`` and
``cancel_job`` are the blocking twins of :func:`llmkit.jobs.run` and
:func:`llmkit.jobs.cancel`. Every call runs on one private
event loop in a daemon thread (started on first use), so the API works the same from
plain code and from inside an already running event loop (a Jupyter cell, an async web
handler: the caller's loop is blocked for the call's duration, as any blocking call would).
Instances still open at interpreter exit are closed on that loop, then the loop is stopped.

Methods the provider has beyond the common ones (``list_models``, ``pull_model``, ...) are
reached through the same wrapper: a coroutine's result is awaited, an async iterator is
turned into an iterator.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from llmkit.base import BaseLLM, PromptCache
from llmkit.calls.hooks import Callback
from llmkit.calls.metrics import Metrics
from llmkit.core.config import LLMConfig
from llmkit.core.errors import ConfigError
from llmkit.core.types import ChatResponse, MessagesInput, ModelInfo, StreamChunk, Usage

__all__ = ["SyncLLM", "cancel_job", "create_llm", "run_job", "wrap"]

T = TypeVar("T")


class _LoopThread:
    """One event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.instances: weakref.WeakSet[SyncLLM] = weakref.WeakSet()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="llmkit-sync", daemon=True)
                thread.start()
                started.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise ConfigError(
                "a blocking llmkit.sync call from llmkit's own loop thread (a hook callback?) "
                "would wait for itself; use the async API there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._start())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): do not leave the call running
            raise

    def close_stream(self, stream: AsyncIterator[Any]) -> None:
        aclose = getattr(stream, "aclose", None)
        loop = self._loop
        if aclose is None or loop is None:
            return
        if threading.current_thread() is self._thread:  # collected on the loop thread
            loop.create_task(aclose())
        else:
            self.run(aclose())

    def stop(self) -> None:
        """Close the instances still open, then stop the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        for llm in list(self.instances):
            if not llm.closed:
                try:
                    self.run(llm.async_llm.aclose())
                except Exception:  # exiting anyway; nothing to report to
                    pass

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        self.run(shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        with self._lock:
            self._loop = self._thread = None
        loop.close()


_runner = _LoopThread()
atexit.register(_runner.stop)


async def _next(stream: AsyncIterator[T]) -> T:
    return await stream.__anext__()


def _iterate(stream: AsyncIterator[T]) -> Iterator[T]:
    """A plain iterator over an async iterator, stepped on the loop thread; closing the
    iterator (or leaving a ``for`` loop early) closes the stream there."""
    try:
        while True:
            try:
                item = _runner.run(_next(stream))
            except StopAsyncIteration:
                return
            yield item
    finally:
        _runner.close_stream(stream)


def _blocking(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        value = _runner.run(value)
    if isinstance(value, AsyncIterator):
        return _iterate(value)
    return value


class SyncLLM:
    """A provider instance with blocking methods (see the module doc)."""

    def __init__(self, llm: BaseLLM) -> None:
        if not isinstance(llm, BaseLLM):
            raise ConfigError(f"llmkit.sync wraps a provider instance, not {type(llm).__name__}")
        self.async_llm = llm
        _runner.instances.add(self)

    def __repr__(self) -> str:
        return f"sync.{self.async_llm!r}"

    @property
    def provider(self) -> str:
        return self.async_llm.provider

    @property
    def model(self) -> str:
        return self.async_llm.model

    @property
    def config(self) -> LLMConfig:
        return self.async_llm.config

    @property
    def closed(self) -> bool:
        return self.async_llm.closed

    # ------------------------------------------------------------------ calls

    def generate(self, messages: MessagesInput, **options: Any) -> str:
        return _runner.run(self.async_llm.generate(messages, **options))

    def chat(self, messages: MessagesInput, **options: Any) -> ChatResponse:
        return _runner.run(self.async_llm.chat(messages, **options))

    def generate_stream(self, messages: MessagesInput, **options: Any) -> Iterator[str]:
        return _iterate(self.async_llm.generate_stream(messages, **options))

    def chat_stream(self, messages: MessagesInput, **options: Any) -> Iterator[StreamChunk]:
        return _iterate(self.async_llm.chat_stream(messages, **options))

    def embed(self, text: str) -> list[float]:
        return _runner.run(self.async_llm.embed(text))

    def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        return _runner.run(self.async_llm.embed_batch(texts))

    def batch_generate(self, prompts: Iterable[MessagesInput], **options: Any) -> list[Any]:
        return _runner.run(self.async_llm.batch_generate(prompts, **options))

    def build_cache(self, prefix_messages: MessagesInput) -> PromptCache:
        return _runner.run(self.async_llm.build_cache(prefix_messages))

    def generate_with_cache(self, messages: MessagesInput, cache: PromptCache, **options: Any) -> str:
        return _runner.run(self.async_llm.generate_with_cache(messages, cache, **options))

    def health_check(self) -> None:
        _runner.run(self.async_llm.health_check())

    # ------------------------------------------------------------------ plain methods

    def supports_batching(self) -> bool:
        return self.async_llm.supports_batching()

    def get_model_info(self) -> ModelInfo:
        return self.async_llm.get_model_info()

    def get_token_usage(self) -> Usage:
        return self.async_llm.get_token_usage()

    def get_metrics(self) -> Metrics:
        return self.async_llm.get_metrics()

    def on(self, event: str, callback: Callback) -> Callback:
        """Hooks run on the loop thread (see :meth:`BaseLLM.on`)."""
        return self.async_llm.on(event, callback)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.async_llm, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        @functools.wraps(attr)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return _blocking(attr(*args, **kwargs))

        return blocking

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the provider (idempotent)."""
        _runner.run(self.async_llm.aclose())

    def __enter__(self) -> SyncLLM:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def create_llm(config: LLMConfig | Mapping[str, Any]) -> SyncLLM:
    """Like :func:`llmkit.create_llm`, with blocking methods."""
    from llmkit.registry import create_llm as create_async

    return SyncLLM(create_async(config))


def wrap(llm: BaseLLM) -> SyncLLM:
    """Blocking methods for an existing provider instance."""
    return SyncLLM(llm)


def run_job(source: Any, config: LLMConfig | Mapping[str, Any] | BaseLLM | SyncLLM, **kwargs: Any) -> Any:
    """Blocking :func:`llmkit.jobs.run` (same arguments; returns its ``JobSummary``)."""
    from llmkit.jobs import run

    llm = config.async_llm if isinstance(config, SyncLLM) else config
    return _runner.run(run(source, llm, **kwargs))


def cancel_job(state: Any, config: LLMConfig | Mapping[str, Any] | BaseLLM | SyncLLM | None = None) -> list[str]:
    """Blocking :func:`llmkit.jobs.cancel`."""
    from llmkit.jobs import cancel

    llm = config.async_llm if isinstance(config, SyncLLM) else config
    return _runner.run(cancel(state, llm))
