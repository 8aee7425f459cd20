"""Streams under hostile use: ``aclose()`` of the instance while a consumer is half-way
through a stream (or a request), and every wrapper stream closing what it iterates at the
moment its consumer closes it (the order of events, not a timing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import llmkit
from llmkit import (
    BaseLLM,
    ChatResponse,
    ConfigError,
    HuggingFaceLLM,
    LLMTimeoutError,
    OllamaLLM,
    OpenAILLM,
    StreamChunk,
    StreamError,
)
from tests.servers import ServerHandle, ServerState, serve_hf, serve_ollama, serve_openai

FAST_RETRY = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}
HANG_GUARD = 10.0  # seconds: only there to turn a hang into a failure


async def wait_until(condition: Callable[[], bool], limit: float = HANG_GUARD) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - a condition on another task's state
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), limit)


# --------------------------------------------------------------------------- close


def _provider(kind: str, server: ServerHandle, timeout: float, **config: Any) -> tuple[BaseLLM, str]:
    common: dict[str, Any] = {"timeout": timeout, "max_retries": 3, **config}
    if kind == "openai":
        return OpenAILLM(
            model="gpt-4o-mini", base_url=server.url, api_key="sk-hostile-close-0123456789",
            extra=FAST_RETRY, **common,
        ), "/v1/chat/completions"
    if kind == "ollama":
        return OllamaLLM(model="llama3.2", base_url=server.url, extra=FAST_RETRY, **common), "/api/chat"
    return HuggingFaceLLM(
        model="meta-llama/Llama-3.1-8B-Instruct", base_url=server.url, api_key="hf_hostileclose0123",
        extra={"api": "router", "hub_url": server.url, **FAST_RETRY}, **common,
    ), "/v1/chat/completions"


SERVE = {"openai": serve_openai, "ollama": serve_ollama, "hf": serve_hf}


@pytest.mark.parametrize("timeout", [1.0, 30.0])
@pytest.mark.parametrize("kind", ["openai", "ollama", "hf"])
async def test_close_during_a_stream_ends_it_with_a_stream_error(kind: str, timeout: float) -> None:
    state = ServerState(reply="one two three four five six seven eight")
    async with SERVE[kind](state) as server:
        # the server stalls after three events, with the connection open
        state.add_fault("slow_body", after=3, delay=HANG_GUARD + 5)
        llm, path = _provider(kind, server, timeout)
        deltas: list[str] = []

        async def consume() -> None:
            async for delta in llm.generate_stream("hi"):
                deltas.append(delta)

        task = asyncio.create_task(consume())
        await wait_until(lambda: len(deltas) >= 1)
        await llm.aclose()
        with pytest.raises(StreamError) as info:
            await asyncio.wait_for(task, HANG_GUARD)
        assert "closed" in info.value.message
        assert not isinstance(info.value, LLMTimeoutError)  # woken by the close, not a timeout
        assert state.total_requests == 1  # nothing retried
        assert len(state.requests_to(path)) == 1
        m = llm.get_metrics()
        assert (m.retries, m.in_flight) == (0, 0)
        with pytest.raises(ConfigError, match="instance is closed"):
            await llm.generate("after close")
        assert state.total_requests == 1


@pytest.mark.parametrize("kind", ["openai", "ollama", "hf"])
async def test_close_before_a_stream_has_headers_ends_it(kind: str) -> None:
    state = ServerState()
    async with SERVE[kind](state) as server:
        state.add_fault("slow_headers", delay=HANG_GUARD + 5)
        llm, _ = _provider(kind, server, 30.0)
        task = asyncio.create_task(llm.chat_stream("hi").__anext__())
        await wait_until(lambda: state.in_flight == 1)
        await llm.aclose()
        with pytest.raises(StreamError, match="closed"):
            await asyncio.wait_for(task, HANG_GUARD)
        assert state.total_requests == 1
        assert llm.get_metrics().retries == 0


async def test_close_during_a_request_body_read_ends_it() -> None:
    """A plain request whose body stalls half-way: close wakes it too."""
    state = ServerState(reply="a reply long enough to be cut in half by the fault")
    async with serve_openai(state) as server:
        state.add_fault("slow_body", path="/v1/chat/completions", delay=HANG_GUARD + 5)
        llm, _ = _provider("openai", server, 30.0)
        task = asyncio.create_task(llm.generate("hi"))
        await wait_until(lambda: bool(state.faults_applied))
        await asyncio.sleep(0.05)  # the headers and half of the body are on their way
        await llm.aclose()
        with pytest.raises(ConfigError, match="instance is closed"):
            await asyncio.wait_for(task, HANG_GUARD)
        assert state.total_requests == 1
        assert llm.get_metrics().retries == 0


async def test_close_ends_streams_of_every_loop_user_only_once_each() -> None:
    """Several consumers of one instance mid-stream: all end at the close, none retried."""
    state = ServerState(reply="alpha beta gamma delta epsilon zeta")
    async with serve_openai(state) as server:
        for _ in range(4):
            state.add_fault("slow_body", after=2, delay=HANG_GUARD + 5)
        llm, _ = _provider("openai", server, 1.0)
        got: list[list[str]] = [[] for _ in range(4)]

        async def consume(out: list[str]) -> None:
            async for delta in llm.generate_stream("hi"):
                out.append(delta)

        tasks = [asyncio.create_task(consume(out)) for out in got]
        await wait_until(lambda: all(got))
        await llm.aclose()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD)
        assert all(isinstance(r, StreamError) and "closed" in r.message for r in results), results
        assert state.total_requests == 4


# --------------------------------------------------------------------------- wrapper streams


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []


def custom_chat_stream_provider(rec: Recorder, **config: Any) -> BaseLLM:
    """A custom provider with ``chat`` and ``chat_stream`` (``generate_stream`` is the base
    class's, built on ``chat_stream``)."""

    class ChatStreamer(BaseLLM):
        async def chat(self, messages: Any, **options: Any) -> ChatResponse:
            return ChatResponse(content="whole", finish_reason="stop")

        async def chat_stream(self, messages: Any, **options: Any) -> AsyncGenerator[StreamChunk, None]:
            try:
                for word in ("a", "b", "c", "d"):
                    yield StreamChunk(delta=word)
                yield StreamChunk(finish_reason="stop")
            finally:
                rec.events.append("provider finally")

    return ChatStreamer("custom-chat", **config)


def custom_generate_stream_provider(rec: Recorder, **config: Any) -> BaseLLM:
    """A custom provider with ``generate`` and ``generate_stream`` (``chat_stream`` is the
    base class's, built on ``generate_stream``)."""

    class TextStreamer(BaseLLM):
        async def generate(self, messages: Any, **options: Any) -> str:
            return "whole"

        async def generate_stream(self, messages: Any, **options: Any) -> AsyncGenerator[str, None]:
            try:
                for word in ("a", "b", "c", "d"):
                    yield word
            finally:
                rec.events.append("provider finally")

    return TextStreamer("custom-text", **config)


async def _consume_one_then_close(stream: Any, rec: Recorder) -> None:
    first = await stream.__anext__()
    assert first
    await stream.aclose()
    rec.events.append("consumer closed")


BUILDERS = {"chat_stream": custom_chat_stream_provider, "generate_stream": custom_generate_stream_provider}


@pytest.mark.parametrize("provider_stream", ["chat_stream", "generate_stream"])
@pytest.mark.parametrize("method", ["generate_stream", "chat_stream"])
@pytest.mark.parametrize("layer", ["plain", "fallback", "cache", "hooks", "otel"])
async def test_wrapper_streams_close_the_provider_stream_at_aclose(
    layer: str, method: str, provider_stream: str, tmp_path: Path
) -> None:
    rec = Recorder()
    config: dict[str, Any] = {"cache": str(tmp_path / "c.sqlite")} if layer == "cache" else {}
    inner = BUILDERS[provider_stream](rec, **config)
    llm: BaseLLM = inner
    otel = None
    if layer == "fallback":
        llm = llmkit.FallbackLLM(chain=[inner])
    elif layer == "hooks":
        llm.on("response", lambda event: rec.events.append("hook response"))
        llm.on("error", lambda event: rec.events.append("hook error"))
    elif layer == "otel":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        otel = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(otel))
        llmkit.instrument(tracer_provider=provider)
    try:
        async with llm:
            stream = getattr(llm, method)("hi")
            await _consume_one_then_close(stream, rec)
            assert rec.events == ["provider finally", "consumer closed"]
            m = llm.get_metrics()
            assert (m.in_flight, m.failures_by_type) == (0, {})
            # the slot is free at once: a call with max_concurrency-many slots taken would wait
            assert (await llm.chat("again")).content
    finally:
        if otel is not None:
            from llmkit.wrap.otel import uninstrument

            uninstrument()
    if otel is not None:
        assert len(otel.get_finished_spans()) == 2  # the stream's span ended with the stream


async def test_batch_generate_iter_stops_its_workers_at_aclose() -> None:
    llm = llmkit.MockLLM(latency=0.01)
    stream = llm.batch_generate_iter([f"prompt {i}" for i in range(50)], concurrency=4)
    _, reply = await stream.__anext__()
    assert reply.startswith("mock response to: prompt")
    await stream.aclose()
    # no worker task is left running (nothing more is sent) once aclose() returned
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []
    calls = len(llm.calls)
    await asyncio.sleep(0.05)
    assert len(llm.calls) == calls
    await llm.aclose()


async def test_guarded_custom_stream_releases_its_slot_at_aclose() -> None:
    """``max_concurrency=1``: a second stream can start right after the first is closed."""
    rec = Recorder()

    class One(BaseLLM):
        async def generate(self, messages: Any, **options: Any) -> str:
            return "x"

        async def generate_stream(self, messages: Any, **options: Any) -> AsyncIterator[str]:
            try:
                yield "first"
                yield "second"
            finally:
                rec.events.append("provider finally")

    llm = One("one", max_concurrency=1)
    for _ in range(3):
        stream = llm.chat_stream("hi")
        await _consume_one_then_close(stream, rec)
        assert llm.get_metrics().in_flight == 0
    assert rec.events == ["provider finally", "consumer closed"] * 3
    await llm.aclose()


@pytest.mark.parametrize("method", ["generate_stream", "chat_stream"])
@pytest.mark.parametrize("kind", ["openai", "openai-responses", "ollama", "hf"])
async def test_provider_streams_release_their_connection_at_aclose(kind: str, method: str) -> None:
    """Every layer of a provider's stream is closed when its consumer closes it: the slot
    (and the connection) are free right after ``aclose()``, not after garbage collection."""
    state = ServerState(reply="one two three four five six seven eight")
    async with SERVE[kind.split("-")[0]](state) as server:
        llm, _ = _provider(kind.split("-")[0], server, 5.0)
        if kind == "openai-responses":
            await llm.aclose()
            llm = OpenAILLM(
                model="gpt-4o-mini", base_url=server.url, api_key="sk-hostile-close-0123456789",
                extra={"api": "responses"},
            )
        async with llm:
            for _ in range(3):
                stream = getattr(llm, method)("hi")
                assert await stream.__anext__() is not None
                assert llm.get_metrics().in_flight == 1
                await stream.aclose()
                assert llm.get_metrics().in_flight == 0
            assert llm.get_metrics().failures_by_type == {}


@pytest.mark.parametrize("call", ["generate", "stream"])
async def test_close_interrupts_a_wait_for_the_rate_limit(call: str) -> None:
    """A call waiting for its turn under ``requests_per_minute`` ends at the close (it
    would otherwise sleep out the minute and only then fail)."""
    state = ServerState()
    async with serve_openai(state) as server:
        llm = OpenAILLM(
            model="gpt-4o-mini", base_url=server.url, api_key="sk-hostile-close-0123456789",
            requests_per_minute=1,
        )
        await llm.generate("first")  # the one request of this minute
        if call == "generate":
            task = asyncio.create_task(llm.generate("second"))
            expected: type[Exception] = ConfigError
        else:
            task = asyncio.create_task(llm.chat_stream("second").__anext__())
            expected = StreamError
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting for its turn
        await llm.aclose()
        with pytest.raises(expected, match="closed"):
            await asyncio.wait_for(task, HANG_GUARD)
        assert state.total_requests == 1


async def test_a_cancel_during_a_rate_limit_wait_stays_a_cancel() -> None:
    state = ServerState()
    async with serve_openai(state) as server:
        async with OpenAILLM(
            model="gpt-4o-mini", base_url=server.url, api_key="sk-hostile-close-0123456789",
            requests_per_minute=1,
        ) as llm:
            await llm.generate("first")
            task = asyncio.create_task(llm.generate("second"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert state.total_requests == 1


# --------------------------------------------------------------------------- close and the slot queue


class _Idle(BaseLLM):
    """A custom provider (its calls take slots through the guard)."""

    async def generate(self, messages: Any, **options: Any) -> str:
        return "x"

    async def generate_stream(self, messages: Any, **options: Any) -> AsyncIterator[str]:
        yield "first"
        yield "second"


@pytest.mark.parametrize("kind", ["openai", "ollama", "custom", "mock"])
async def test_close_ends_calls_queued_behind_a_slot_an_idle_stream_holds(kind: str) -> None:
    """``max_concurrency=1``: a stream read once and then left (its consumer idle) holds the
    slot; calls and streams queued behind it end at the close instead of waiting for a
    stream nobody will finish."""
    state = ServerState(reply="one two three four five six")
    async with SERVE.get(kind, serve_openai)(state) as server:
        llm: BaseLLM
        if kind == "custom":
            llm = _Idle("idle", max_concurrency=1)
        elif kind == "mock":
            llm = llmkit.create_llm({"provider": "mock", "model": "m", "max_concurrency": 1})
        else:
            llm, _ = _provider(kind, server, 30.0, max_concurrency=1)
        holder = llm.generate_stream("hold the slot")
        assert await holder.__anext__()
        assert llm.get_metrics().in_flight == 1
        queued_call = asyncio.create_task(llm.generate("queued"))
        queued_stream = asyncio.create_task(llm.chat_stream("queued").__anext__())
        await wait_until(lambda: llm.call_state.limiter.waiting() == 2)
        sent = state.total_requests
        await llm.aclose()
        with pytest.raises(ConfigError, match="instance is closed"):
            await asyncio.wait_for(queued_call, HANG_GUARD)
        with pytest.raises(StreamError, match="closed"):
            await asyncio.wait_for(queued_stream, HANG_GUARD)
        assert state.total_requests == sent  # neither was sent
        assert llm.call_state.limiter.waiting() == 0
        await holder.aclose()
        assert llm.get_metrics().in_flight == 0
        with pytest.raises(ConfigError, match="instance is closed"):
            await llm.generate("after close")


async def test_instances_closed_during_a_stream_are_not_kept_alive() -> None:
    """aiohttp ends every reader of a closed response with one shared exception object; the
    traceback of each raise would keep that stream's frames (its response, transport and
    instance) alive for as long as the process runs."""
    import gc
    import weakref

    state = ServerState(reply="one two three four five six")
    async with serve_openai(state) as server:
        refs = []
        for _ in range(3):
            state.add_fault("slow_body", after=2, delay=HANG_GUARD + 5)
            llm, _ = _provider("openai", server, 30.0)
            got: list[str] = []

            async def consume(llm: BaseLLM = llm, got: list[str] = got) -> None:
                async for delta in llm.generate_stream("hi"):
                    got.append(delta)

            task = asyncio.create_task(consume())
            await wait_until(lambda got=got: bool(got))  # type: ignore[misc]
            await llm.aclose()
            with pytest.raises(StreamError, match="closed"):
                await asyncio.wait_for(task, HANG_GUARD)
            refs.append(weakref.ref(llm))
            del llm, task, consume
        gc.collect()
        assert [r() for r in refs] == [None, None, None]
