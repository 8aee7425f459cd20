"""OpenAILLM against a local server speaking OpenAI's wire format."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import threading
import time
from contextlib import aclosing
from typing import Any

import pytest
from pydantic import BaseModel

import llmkit
from llmkit import (
    AuthenticationError,
    ChatResponse,
    ContextLengthError,
    InvalidRequestError,
    LLMConfig,
    LLMConnectionError,
    LLMTimeoutError,
    ModelNotFoundError,
    OpenAILLM,
    RateLimitError,
    ServerError,
    StreamError,
)
from tests.servers import ServerHandle

KEY = "sk-test-abcdefghijklmnopqrstuvwxyz012345"


def make(server: ServerHandle, **kw: Any) -> OpenAILLM:
    extra = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05, **kw.pop("extra", {})}
    return OpenAILLM(
        LLMConfig(provider="openai", model="gpt-4o-mini", base_url=server.url, api_key=KEY,
                  extra=extra, **kw)
    )


def acquired(llm: OpenAILLM) -> int:
    conn = llm._http.sessions.connector()
    return 0 if conn is None else len(conn._acquired)


class Weather(BaseModel):
    city: str
    celsius: float
    rainy: bool


async def test_generate_and_chat(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        assert await llm.generate("hello there") == "Echo: hello there"
        resp = await llm.chat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}],
            temperature=0.2, seed=7, stop="END",
        )
        assert isinstance(resp, ChatResponse)
        assert resp.content == "Echo: hi you"
        assert resp.finish_reason == "stop"
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
        assert resp.raw["object"] == "chat.completion"
        body = openai_server.state.last_request.json
        assert body["temperature"] == 0.2 and body["seed"] == 7 and body["stop"] == ["END"]
        # only what was set goes out: no max_tokens / top_p nobody asked for
        assert not {"max_tokens", "max_completion_tokens", "top_p"} & body.keys()
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        assert openai_server.state.last_request.authorization == f"Bearer {KEY}"


async def test_max_tokens_truncates_with_length(openai_server: ServerHandle) -> None:
    openai_server.state.reply = "one two three four five"
    async with make(openai_server) as llm:
        resp = await llm.chat("x", max_tokens=2)
        assert resp.finish_reason == "length"
        assert resp.content.split() == ["one", "two"]


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city."""
    return f"{city}:{unit}"


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        Weather,
        get_weather,
    ],
    ids=["dict", "pydantic", "function"],
)
async def test_tools(openai_server: ServerHandle, tool: Any) -> None:
    async with make(openai_server) as llm:
        resp = await llm.chat("weather in Paris?", tools=[tool], tool_choice="auto")
        assert resp.finish_reason == "tool_calls"
        (call,) = resp.tool_calls
        sent = openai_server.state.last_request.json["tools"][0]["function"]
        assert call.name == sent["name"]
        assert set(sent["parameters"]["required"]) <= set(call.arguments)
        assert call.id


async def test_function_tool_schema_from_signature(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        await llm.chat("x", tools=[get_weather], tool_choice="get_weather")
        body = openai_server.state.last_request.json
        fn = body["tools"][0]["function"]
        assert fn["description"] == "Current weather in a city."
        assert fn["parameters"]["required"] == ["city"]
        assert fn["parameters"]["properties"]["unit"]["default"] == "celsius"
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_create_function_call(openai_server: ServerHandle) -> None:
    openai_server.state.tool_arguments = {"city": "Oslo"}
    async with make(openai_server) as llm:
        resp = await llm.create_function_call("weather?", [get_weather])
        assert resp.tool_calls[0].name == "get_weather"
        assert resp.tool_calls[0].arguments == {"city": "Oslo"}
        assert openai_server.state.last_request.json["tool_choice"] == "required"


async def test_response_format_pydantic(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        resp = await llm.chat("weather as JSON", response_format=Weather)
        assert isinstance(resp.parsed, Weather)
        rf = openai_server.state.last_request.json["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "Weather"


async def test_response_format_mismatch_is_typed() -> None:
    async with llmkit.MockLLM("mock", responses='{"city": 3}') as llm:
        with pytest.raises(llmkit.ConfigError, match="scripted reply does not validate as Weather"):
            await llm.chat("x", response_format=Weather)


async def test_generate_stream_and_usage(openai_server: ServerHandle) -> None:
    openai_server.state.reply = "the quick brown fox jumps"
    async with make(openai_server) as llm:
        deltas = [d async for d in llm.generate_stream("go")]
        assert len(deltas) > 1
        assert "".join(deltas) == "the quick brown fox jumps"
        body = openai_server.state.last_request.json
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        usage = llm.get_token_usage()
        assert usage.completion_tokens == 5 and usage.prompt_tokens == 1


async def test_chat_stream_final_chunk_has_usage_and_finish(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        chunks = [c async for c in llm.chat_stream("a b c")]
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3
        assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_tool_call_deltas_assembled(openai_server: ServerHandle) -> None:
    openai_server.state.tool_arguments = {"city": "Lisbon", "days": 3}
    async with make(openai_server) as llm:
        chunks = [c async for c in llm.chat_stream("x", tools=[get_weather])]
        pieces = [tc.arguments for c in chunks for tc in c.tool_calls]
        assert len(pieces) > 1  # arguments really arrived in pieces
        final = chunks[-1]
        assert final.finish_reason == "tool_calls"
        assert final.completed_tool_calls is not None
        assert final.completed_tool_calls[0].name == "get_weather"
        assert final.completed_tool_calls[0].arguments == {"city": "Lisbon", "days": 3}


async def test_embeddings(openai_server: ServerHandle) -> None:
    async with make(openai_server, extra={"embedding_batch_size": 3}) as llm:
        one = await llm.embed("hello")
        assert len(one) == openai_server.state.embedding_dim
        texts = [f"text {i}" for i in range(8)]
        many = await llm.embed_batch(texts)
        assert len(many) == 8
        assert many[0] == await llm.embed("text 0")
        assert many[7] == await llm.embed("text 7")
        batches = [r for r in openai_server.state.requests_to("/v1/embeddings")]
        assert max(len(r.json["input"]) for r in batches) == 3
        assert await llm.embed_batch([]) == []
        with pytest.raises(InvalidRequestError):
            await llm.embed_batch("not a list")  # type: ignore[arg-type]


async def test_list_models_and_health(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        models = await llm.list_models()
        assert {m["id"] for m in models} >= {"gpt-4o-mini"}
        await llm.health_check()
        info = llm.get_model_info()
        assert info.capabilities.tools and info.capabilities.embeddings
        assert info.context_length == 128_000
        assert info.base_url == openai_server.url


async def test_create_chat_completion_raw(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        raw = await llm.create_chat_completion(
            {"messages": [{"role": "user", "content": "raw"}], "logprobs": False}
        )
        assert raw["choices"][0]["message"]["content"] == "Echo: raw"
        stream = await llm.create_chat_completion(
            {"messages": [{"role": "user", "content": "raw stream"}], "stream": True}
        )
        chunks = [c async for c in stream]
        assert chunks[0]["object"] == "chat.completion.chunk"
        text = "".join(
            (c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"]
        )
        assert text == "Echo: raw stream"


# ---------------------------------------------------------------------------- errors


async def test_401_not_retried_and_key_hidden(openai_server: ServerHandle) -> None:
    openai_server.state.api_key = "sk-the-right-key-000000000000"
    async with make(openai_server) as llm:
        with pytest.raises(AuthenticationError) as info:
            await llm.generate("x")
        assert openai_server.state.request_count == 1
        err = info.value
        assert err.status == 401 and err.type == "authentication"
        for text in (str(err), repr(err), err.message, repr(llm), str(llm.config)):
            assert KEY not in text
            assert KEY[:12] not in text


async def test_404_model_not_found(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        with pytest.raises(ModelNotFoundError, match="missing-model"):
            await llm.generate("x", model="missing-model")
        assert openai_server.state.request_count == 1


async def test_context_length(openai_server: ServerHandle) -> None:
    openai_server.state.context_length = 5
    async with make(openai_server) as llm:
        with pytest.raises(ContextLengthError) as info:
            await llm.generate("one two three four five six seven")
        assert info.value.type == "context_length_exceeded"


async def test_quota_429_not_retried(openai_server: ServerHandle) -> None:
    openai_server.state.add_fault("quota")
    async with make(openai_server) as llm:
        with pytest.raises(RateLimitError) as info:
            await llm.generate("x")
        assert info.value.code == "insufficient_quota"
        assert openai_server.state.request_count == 1


@pytest.mark.parametrize(
    ("headers", "min_wait"),
    [
        ({"Retry-After": "0.4"}, 0.4),
        ({"retry-after-ms": "300"}, 0.3),
    ],
)
async def test_retry_after_honoured(
    openai_server: ServerHandle, headers: dict[str, str], min_wait: float
) -> None:
    openai_server.state.add_fault("status", status=429, headers=headers, times=2)
    async with make(openai_server) as llm:
        t0 = time.monotonic()
        assert await llm.generate("x") == "Echo: x"
        elapsed = time.monotonic() - t0
        assert openai_server.state.request_count == 3
        assert elapsed >= 2 * min_wait * 0.95
        assert llm.get_metrics().retries == 2


async def test_retry_after_http_date(openai_server: ServerHandle) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    openai_server.state.add_fault("status", status=503, headers={"Retry-After": when})
    async with make(openai_server) as llm:
        t0 = time.monotonic()
        await llm.generate("x")
        assert time.monotonic() - t0 >= 0.9  # HTTP-dates have whole-second resolution
        assert openai_server.state.request_count == 2


async def test_retries_exhausted(openai_server: ServerHandle) -> None:
    openai_server.state.add_fault("status", status=500, times=10)
    async with make(openai_server, max_retries=2) as llm:
        with pytest.raises(ServerError):
            await llm.generate("x")
        assert openai_server.state.request_count == 3
        m = llm.get_metrics()
        assert m.retries == 2 and m.failures_by_type == {"server_error": 1}


async def test_connection_refused(refused_url: str) -> None:
    llm = OpenAILLM(LLMConfig(provider="openai", model="m", base_url=refused_url, max_retries=1,
                              extra={"retry_initial_delay": 0.01}))
    async with llm:
        with pytest.raises(LLMConnectionError) as info:
            await llm.generate("x")
        assert isinstance(info.value, ConnectionError)
        assert llm.get_metrics().retries == 1


async def test_timeout(openai_server: ServerHandle) -> None:
    openai_server.state.add_fault("slow_headers", delay=2.0, times=5)
    async with make(openai_server, timeout=0.3, max_retries=0) as llm:
        with pytest.raises(LLMTimeoutError) as info:
            await llm.generate("x")
        assert isinstance(info.value, TimeoutError)


async def test_stream_cut_before_done_raises(openai_server: ServerHandle) -> None:
    openai_server.state.reply = "a b c d e f"
    openai_server.state.add_fault("truncate_stream", after=2)
    async with make(openai_server) as llm:
        got: list[str] = []
        with pytest.raises(StreamError, match="DONE"):
            async for d in llm.generate_stream("x"):
                got.append(d)
        assert got  # the deltas before the cut were delivered
        assert acquired(llm) == 0


async def test_error_event_mid_stream(openai_server: ServerHandle) -> None:
    openai_server.state.reply = "a b c d e f"
    openai_server.state.add_fault("error_event", after=2, message="upstream exploded")
    async with make(openai_server) as llm:
        got: list[str] = []
        with pytest.raises(StreamError, match="upstream exploded"):
            async for d in llm.generate_stream("x"):
                got.append(d)
        assert got
        assert openai_server.state.request_count == 1  # not retried after output


async def test_stream_retried_before_first_chunk(openai_server: ServerHandle) -> None:
    openai_server.state.add_fault("status", status=502, times=1)
    async with make(openai_server) as llm:
        assert "".join([d async for d in llm.generate_stream("ok then")]) == "Echo: ok then"
        assert openai_server.state.request_count == 2


async def test_cancel_mid_stream_releases_connection(openai_server: ServerHandle) -> None:
    openai_server.state.reply = " ".join(f"w{i}" for i in range(50))
    openai_server.state.chunk_delay = 0.02
    async with make(openai_server) as llm:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in llm.generate_stream("x"):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        assert acquired(llm) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert acquired(llm) == 0
        assert llm.call_state.limiter.in_use() == 0
        # the instance still works afterwards
        assert await llm.generate("again") == openai_server.state.reply


async def test_break_out_of_stream_releases_connection(openai_server: ServerHandle) -> None:
    openai_server.state.reply = " ".join(f"w{i}" for i in range(50))
    async with make(openai_server) as llm:
        async with aclosing(llm.generate_stream("x")) as stream:
            async for _ in stream:
                break
        assert acquired(llm) == 0
        assert llm.call_state.limiter.in_use() == 0


async def test_max_concurrency_bounds_in_flight(openai_server: ServerHandle) -> None:
    openai_server.state.delay = 0.02
    async with make(openai_server, max_concurrency=4) as llm:
        results = await llm.batch_generate([f"p{i}" for i in range(40)])
        assert results == [f"Echo: p{i}" for i in range(40)]
        assert openai_server.state.max_in_flight <= 4
        assert llm.get_metrics().requests == 40


def test_instance_shared_by_two_threads_with_own_loops(openai_server_thread: str) -> None:
    llm = OpenAILLM(LLMConfig(provider="openai", model="m", base_url=openai_server_thread))
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def main() -> None:
            results[n] = await asyncio.gather(*(llm.generate(f"t{n}-{i}") for i in range(5)))

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results[0] == [f"Echo: t0-{i}" for i in range(5)]
    assert results[1] == [f"Echo: t1-{i}" for i in range(5)]
    asyncio.run(llm.aclose())


async def test_close_is_idempotent(openai_server: ServerHandle) -> None:
    llm = make(openai_server)
    await llm.generate("x")
    await llm.close()
    await llm.aclose()
    assert llm.closed


async def test_key_never_logged(openai_server: ServerHandle, caplog: pytest.LogCaptureFixture) -> None:
    openai_server.state.api_key = "sk-another-key-11111111111111"
    openai_server.state.add_fault("status", status=500)
    with caplog.at_level(logging.DEBUG, logger="llmkit"):
        async with make(openai_server) as llm:
            with pytest.raises(AuthenticationError):
                await llm.generate("x")
    assert caplog.records  # the retry was logged
    assert KEY not in caplog.text and KEY[:12] not in caplog.text


def test_top_level_exports() -> None:
    for name in ("OpenAILLM", "LLMConfig", "create_llm", "StreamError", "Usage"):
        assert hasattr(llmkit, name)
