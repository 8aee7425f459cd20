"""The Responses API's failures as typed errors (``response.failed``, ``response.incomplete``
of a structured reply, ``error`` events, a stream cut before ``response.completed``), and
the call layers on it: retries, hooks, the reply cache, fallback and OpenTelemetry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import llmkit
from llmkit import (
    FallbackLLM,
    InvalidRequestError,
    OpenAILLM,
    RateLimitError,
    ReplyTruncatedError,
    ReplyValidationError,
    ServerError,
    StreamError,
    create_llm,
)
from tests.servers import ServerHandle, ServerState, serve_openai

RESPONSES = "/v1/responses"
KEY = "sk-responses-abcdefghijkl"
FAST = {"retry_initial_delay": 0.01, "retry_max_delay": 0.02}
LONG = " ".join(f"w{i}" for i in range(20))


@pytest.fixture
async def srv() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState()) as handle:
        yield handle


def config(srv: ServerHandle, **kw: Any) -> dict[str, Any]:
    extra = {"api": "responses", **FAST, **kw.pop("extra", {})}
    return {"provider": "openai", "model": "gpt-4o-mini", "base_url": srv.url, "api_key": KEY,
            "max_retries": 0, "extra": extra, **kw}


def make(srv: ServerHandle, **kw: Any) -> OpenAILLM:
    return OpenAILLM(config(srv, **kw))


def sent(srv: ServerHandle) -> int:
    return len(srv.state.requests_to(RESPONSES))


class Words(BaseModel):
    words: list[str]


async def test_incomplete_text_is_a_length_finish(srv: ServerHandle) -> None:
    srv.state.reply = LONG
    async with make(srv) as llm:
        response = await llm.chat("talk", max_tokens=16)
        chunks = [c async for c in llm.chat_stream("talk", max_tokens=16)]
    assert response.finish_reason == "length"
    assert response.content == " ".join(f"w{i}" for i in range(16))
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage is not None
    assert "".join(c.delta for c in chunks) == response.content


async def test_a_structured_reply_cut_by_the_limit(srv: ServerHandle) -> None:
    srv.state.reply = LONG
    async with make(srv) as llm:
        with pytest.raises(ReplyTruncatedError) as err:
            await llm.chat("list", response_format=Words, max_tokens=16)
        usage = llm.get_token_usage()
    assert err.value.type == "reply_truncated" and isinstance(err.value, ReplyValidationError)
    assert err.value.response.finish_reason == "length"
    assert err.value.response.usage.completion_tokens == 16 == usage.completion_tokens


async def test_a_structured_reply_that_does_not_validate(srv: ServerHandle) -> None:
    srv.state.reply = '{"words": "not a list"}'
    async with make(srv) as llm:
        with pytest.raises(ReplyValidationError) as err:
            await llm.chat("list", response_format=Words)
    assert err.value.type == "reply_invalid" and not isinstance(err.value, ReplyTruncatedError)
    assert err.value.response.content == '{"words": "not a list"}'


@pytest.mark.parametrize(("prompt", "error"), [("fail", ServerError),
                                                ("fail:rate_limit_exceeded", RateLimitError),
                                                ("fail:invalid_prompt", InvalidRequestError)])
async def test_failed_responses_raise_their_type(srv: ServerHandle, prompt: str, error: type) -> None:
    async with make(srv, max_retries=2) as llm:
        with pytest.raises(error) as err:
            await llm.chat(prompt)
        with pytest.raises(error) as streamed:
            async for _ in llm.generate_stream(prompt):
                pass
        with pytest.raises(error):
            async for _ in llm.chat_stream(prompt):
                pass
        metrics = llm.get_metrics()
    assert "The model failed to generate a response." in err.value.message
    assert err.value.request_id is not None and err.value.request_id.startswith("resp_")
    assert type(streamed.value) is type(err.value)
    assert sent(srv) == 3  # a failed response is an answer: not retried
    # the streams fail inside the transport; the plain call's HTTP exchange succeeded (a 200)
    assert metrics.failures_by_type == {err.value.type: 2}


async def test_error_event_mid_stream(srv: ServerHandle) -> None:
    srv.state.add_fault("error_event", path=RESPONSES, after=5, message="overloaded, try later")
    async with make(srv, max_retries=2) as llm:
        got: list[str] = []
        with pytest.raises(StreamError, match="overloaded, try later"):
            async for text in llm.generate_stream("hello big world"):
                got.append(text)
    assert got == ["Echo:"] and sent(srv) == 1


@pytest.mark.parametrize("after", [0, 4, 11])
async def test_stream_cut_before_completed(srv: ServerHandle, after: int) -> None:
    srv.state.add_fault("truncate_stream", path=RESPONSES, after=after)
    async with make(srv) as llm:
        chunks = []
        with pytest.raises(StreamError, match=r"response\.completed"):
            async for chunk in llm.chat_stream("hello big world"):
                chunks.append(chunk)
        assert llm.get_metrics().in_flight == 0
    assert all(c.finish_reason is None for c in chunks)


async def test_retries_before_the_first_event(srv: ServerHandle) -> None:
    srv.state.add_fault("status", path=RESPONSES, status=503, times=2)
    srv.state.add_fault("status", path=RESPONSES, status=429, headers={"Retry-After": "0"})
    async with make(srv, max_retries=3) as llm:
        text = "".join([t async for t in llm.generate_stream("hi")])
        srv.state.add_fault("status", path=RESPONSES, status=500)
        response = await llm.chat("hi")
    assert text == response.content == "Echo: hi"
    assert sent(srv) == 6


async def test_hooks_see_each_attempt(srv: ServerHandle) -> None:
    srv.state.add_fault("status", path=RESPONSES, status=503)
    seen: list[Any] = []
    async with make(srv, max_retries=1) as llm:
        for name in ("request", "response", "retry", "error"):
            llm.on(name, seen.append)
        response = await llm.chat("hi")
    assert [(e.event, e.attempt) for e in seen] == [("request", 0), ("retry", 0), ("request", 1),
                                                     ("response", 1)]
    assert seen[-1].usage == response.usage and seen[-1].usage.total_tokens == 3


async def test_reply_cache(srv: ServerHandle, tmp_path: Path) -> None:
    async with make(srv, cache=str(tmp_path / "cache.sqlite")) as llm:
        first = await llm.chat("hi", temperature=0.5)
        again = await llm.chat("hi", temperature=0.5)
        other = await llm.chat("hi", temperature=0.5, previous_response_id=first.id)
    assert again.content == first.content == "Echo: hi" and again.id == first.id
    assert other.id != first.id
    assert sent(srv) == 2


async def test_fallback_to_the_next_member(srv: ServerHandle) -> None:
    async with serve_openai(ServerState(reply="from the second")) as second:
        srv.state.add_fault("status", path=RESPONSES, status=503, times=5)
        llm = create_llm({"provider": "fallback", "chain": [config(srv), config(second)]})
        async with llm:
            assert isinstance(llm, FallbackLLM)
            response = await llm.chat("hi")
            text = "".join([t async for t in llm.generate_stream("hi")])
        assert response.content == text == "from the second" and response.id is not None
        assert sent(srv) == 2 and len(second.state.requests_to(RESPONSES)) == 2


async def test_opentelemetry_span(srv: ServerHandle) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    llmkit.instrument(tracer_provider=provider)
    try:
        async with make(srv) as llm:
            response = await llm.chat("hi", max_tokens=50)
            _ = [c async for c in llm.chat_stream("hi")]
    finally:
        llmkit.uninstrument()
        provider.shutdown()
    chat, stream = spans.get_finished_spans()
    attrs = dict(chat.attributes or {})
    assert chat.name == "chat gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens == 1
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert dict(stream.attributes or {})["gen_ai.usage.output_tokens"] == 2


def test_token_estimate_of_a_responses_body_matches_chat_completions() -> None:
    """The client-side token limit reserves the same for both APIs' bodies of one call."""
    from llmkit.http.ratelimit_signals import estimate_tokens
    from llmkit.providers.openai.chat import chat_body
    from llmkit.providers.openai.responses.request import responses_body

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x" * 400},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "name": "f", "arguments": {"q": "y" * 40}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "z" * 80}]
    chat, _ = chat_body("m", messages, {"max_tokens": 100})
    responses, _ = responses_body("m", messages, {"max_tokens": 100})
    assert responses["max_output_tokens"] == 100
    assert estimate_tokens(responses) >= 100 + 520 // 4
    assert abs(estimate_tokens(responses) - estimate_tokens(chat)) <= 10



async def test_a_stream_left_early_frees_its_connection(srv: ServerHandle) -> None:
    srv.state.reply = LONG
    async with make(srv, max_concurrency=1) as llm:
        async with aclosing(llm.generate_stream("talk")) as stream:
            async for _ in stream:
                break
        assert llm.get_metrics().in_flight == 0
        assert await llm.generate("again") == LONG  # the one slot is free again
    assert sent(srv) == 2
