"""Hooks: ``llm.on(event, callback)`` against the local servers and the mock provider."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import llmkit
from llmkit import ConfigError, MockLLM, OpenAILLM, ServerError
from llmkit.calls.hooks import HookEvent
from tests.servers import ServerHandle, ServerState, serve_openai

CHAT = "/v1/chat/completions"
FAST = {"retry_initial_delay": 0.01, "retry_max_delay": 0.02}


@pytest.fixture
async def server() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState(reply="hello from the server")) as handle:
        yield handle


def make(server: ServerHandle, **kw: Any) -> OpenAILLM:
    return OpenAILLM(
        {"model": "gpt-4o-mini", "base_url": server.url, "api_key": "sk-hooks-abcdefghijkl",
         "max_retries": 2, "extra": FAST, **kw}
    )


def record(llm: llmkit.BaseLLM) -> list[HookEvent]:
    seen: list[HookEvent] = []
    for name in ("request", "response", "retry", "error"):
        llm.on(name, seen.append)
    return seen


async def test_hooks_see_every_attempt_and_retry(server: ServerHandle) -> None:
    server.state.add_fault("status", path=CHAT, status=503, times=2)
    async with make(server) as llm:
        seen = record(llm)
        response = await llm.chat("hi")
    assert [(e.event, e.attempt) for e in seen] == [
        ("request", 0), ("retry", 0), ("request", 1), ("retry", 1), ("request", 2), ("response", 2),
    ]
    retries = [e for e in seen if e.event == "retry"]
    assert all(e.status == 503 and isinstance(e.error, ServerError) for e in retries)
    assert all(e.delay is not None and e.delay >= 0 for e in retries)
    done = seen[-1]
    assert done.provider == "openai" and done.model == "gpt-4o-mini"
    assert done.usage == response.usage and done.usage.total_tokens > 0
    assert done.duration is not None and done.duration > 0
    assert len(server.state.requests_to(CHAT)) == 3


async def test_hooks_see_stream_retries_and_the_final_error(server: ServerHandle) -> None:
    server.state.add_fault("status", path=CHAT, status=500, times=1)
    async with make(server) as llm:
        seen = record(llm)
        text = "".join([d async for d in llm.generate_stream("hi")])
        assert text == "hello from the server"
        assert [e.event for e in seen] == ["request", "retry", "request", "response"]
        assert seen[-1].status == 200 and seen[-1].usage is not None

        seen.clear()
        server.state.add_fault("status", path=CHAT, status=502, times=3)
        with pytest.raises(ServerError):
            await llm.generate("hi")
    assert [e.event for e in seen] == ["request", "retry", "request", "retry", "request", "error"]
    final = seen[-1]
    assert isinstance(final.error, ServerError) and final.status == 502 and final.attempt == 2


async def test_async_callbacks_are_awaited_and_failing_callbacks_are_logged(
    server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []

    async def slow(event: HookEvent) -> None:
        order.append(f"async {event.event}")

    def broken(event: HookEvent) -> None:
        raise RuntimeError("callback bug")

    async def broken_async(event: HookEvent) -> None:
        raise ValueError("async callback bug")

    async with make(server) as llm:
        llm.on("request", slow)
        llm.on("request", broken)
        llm.on("response", broken_async)
        with caplog.at_level(logging.ERROR, logger="llmkit.calls.hooks"):
            assert await llm.generate("hi") == "hello from the server"
    assert order == ["async request"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("request hook" in m for m in messages)
    assert any("response hook" in m for m in messages)
    assert "callback bug" in caplog.text


async def test_providers_without_transport_report_from_the_call() -> None:
    llm = MockLLM(responses=["one two three"], chunk_size=3)
    seen = record(llm)
    assert await llm.generate("hi") == "one two three"
    assert [e.event for e in seen] == ["request", "response"]
    assert seen[-1].usage is not None and seen[-1].usage.completion_tokens == 3
    seen.clear()
    chunks = [c async for c in llm.chat_stream("hi")]
    assert "".join(c.delta for c in chunks) == "one two three"
    assert [e.event for e in seen] == ["request", "response"]
    seen.clear()
    llm.inject_failure(ServerError("down"))
    with pytest.raises(ServerError):
        await llm.chat("hi")
    assert [e.event for e in seen] == ["request", "error"]
    assert isinstance(seen[-1].error, ServerError)


async def test_requests_outside_a_call_are_reported_by_the_transport(server: ServerHandle) -> None:
    async with make(server) as llm:
        seen = record(llm)
        await llm.list_models()
    assert [e.event for e in seen] == ["request", "response"]


async def test_off_and_bad_registrations(server: ServerHandle) -> None:
    llm = MockLLM()
    seen: list[HookEvent] = []
    llm.on("request", seen.append)
    llm.off("request", seen.append)
    await llm.generate("hi")
    assert seen == []
    with pytest.raises(ConfigError, match="unknown hook event"):
        llm.on("requests", print)
    with pytest.raises(ConfigError):
        llm.on("request", "not callable")  # type: ignore[arg-type]


async def test_no_hooks_means_no_layer(server: ServerHandle) -> None:
    """Without hooks, cache or instrumentation a call is the provider's own coroutine /
    async generator: nothing is wrapped around it."""
    async with make(server) as llm:
        call = llm.chat("hi")
        assert call.cr_code.co_qualname == "OpenAICompatible.chat"
        await call
        stream = llm.chat_stream("hi")
        assert stream.ag_code.co_qualname == "OpenAICompatible.chat_stream"
        await stream.aclose()
        llm.on("request", lambda e: None)
        stream = llm.chat_stream("hi")
        assert stream.ag_code.co_qualname == "_observed_stream"
        await stream.aclose()


class Custom(llmkit.BaseLLM):
    """A user's provider: only ``generate``; ``chat`` and the streams come from BaseLLM."""

    async def generate(self, messages: Any, **options: Any) -> str:
        self._record_usage(llmkit.Usage.of(2, 3))
        return "custom reply"


async def test_a_custom_provider_reports_each_call_once() -> None:
    llm = Custom("custom-model")
    seen = record(llm)
    response = await llm.chat("hi")  # BaseLLM.chat calls generate: still one call
    assert response.content == "custom reply"
    assert [e.event for e in seen] == ["request", "response"]
    assert seen[-1].usage == llmkit.Usage.of(2, 3) and seen[-1].model == "custom-model"
    seen.clear()
    assert "".join([c.delta async for c in llm.chat_stream("hi")]) == "custom reply"
    assert [e.event for e in seen] == ["request", "response"]
    assert seen[-1].usage == llmkit.Usage.of(2, 3)
