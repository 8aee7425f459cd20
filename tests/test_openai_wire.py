"""What OpenAILLM returns and sends on the OpenAI wire format: reasoning, refusals,
logprobs, n choices (streams routed by choice), usage details, images, custom tool calls,
checked tool_choice / response_format, raw completions, model info, health checks."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmkit import (
    BaseLLM,
    InvalidRequestError,
    LLMConfig,
    LLMTimeoutError,
    Message,
    OpenAILLM,
    Role,
    ServerError,
    StreamChunk,
    ToolCall,
)
from llmkit.core.types import normalize_finish_reason
from llmkit.providers.openai.chat import parse_chat_response
from tests.servers import ServerHandle

KEY = "sk-test-wire-abcdefghijklmnopqrstu"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def make(server: ServerHandle, model: str = "gpt-4o-mini", **kw: Any) -> OpenAILLM:
    extra = {"retry_initial_delay": 0.01, "retry_max_delay": 0.02, **kw.pop("extra", {})}
    return OpenAILLM(
        LLMConfig(provider="openai", model=model, base_url=server.url, api_key=KEY,
                  extra=extra, **kw)
    )


class Weather(BaseModel):
    city: str


def sent(server: ServerHandle) -> dict[str, Any]:
    body = server.state.last_request.json
    assert isinstance(body, dict)
    return body


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize(("model", "field"), [("deepseek-reasoner", "reasoning_content"),
                                              ("gpt-oss-20b", "reasoning")])
async def test_reasoning_text_and_tokens(openai_server: ServerHandle, model: str, field: str) -> None:
    async with make(openai_server, model) as llm:
        resp = await llm.chat("why is the sky blue")
        message = resp.raw["choices"][0]["message"]
        assert resp.reasoning == message[field] and resp.reasoning
        assert resp.content == "Echo: why is the sky blue"
        assert resp.usage.reasoning_tokens == len(resp.reasoning.split()) > 0
        chunks = [c async for c in llm.chat_stream("why is the sky blue")]
        assert "".join(c.reasoning for c in chunks) == resp.reasoning
        assert "".join(c.delta for c in chunks) == resp.content
        assert chunks[-1].usage is not None and chunks[-1].usage.reasoning_tokens > 0
        assert llm.get_token_usage().reasoning_tokens == 2 * resp.usage.reasoning_tokens


async def test_refusal_with_response_format_is_not_a_validation_error(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        resp = await llm.chat("refuse: make something bad", response_format=Weather)
        assert resp.refusal and resp.parsed is None and resp.content == ""
        assert resp.choices[0].refusal == resp.refusal
        chunks = [c async for c in llm.chat_stream("refuse this")]
        assert "".join(c.refusal or "" for c in chunks) == resp.refusal
        # without a refusal the reply is still validated into the model
        ok = await llm.chat("weather", response_format=Weather)
        assert isinstance(ok.parsed, Weather) and ok.refusal is None


async def test_logprobs_requested_and_returned(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        resp = await llm.chat("one two three", logprobs=True, top_logprobs=2)
        body = sent(openai_server)
        assert body["logprobs"] is True and body["top_logprobs"] == 2
        assert resp.logprobs is not None
        assert "".join(t["token"] for t in resp.logprobs) == resp.content
        assert all(len(t["top_logprobs"]) == 2 for t in resp.logprobs)
        chunks = [c async for c in llm.chat_stream("one two", logprobs=True)]
        tokens = [t["token"] for c in chunks if c.logprobs for t in c.logprobs]
        assert "".join(tokens) == "Echo: one two"
        plain = await llm.chat("no logprobs")
        assert plain.logprobs is None


async def test_n_choices(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        resp = await llm.chat("hi", n=3)
        assert sent(openai_server)["n"] == 3
        assert [c.index for c in resp.choices] == [0, 1, 2]
        assert [c.content for c in resp.choices] == ["Echo: hi", "Echo: hi #1", "Echo: hi #2"]
        assert resp.content == resp.choices[0].content and resp.finish_reason == "stop"
        single = await llm.chat("hi")
        assert len(single.choices) == 1 and single.choices[0].content == single.content


async def test_stream_routes_choices_by_index(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        chunks = [c async for c in llm.chat_stream("hello there", n=2)]
        # the server interleaves the two choices; each chunk says which one it belongs to
        assert {c.index for c in chunks} == {0, 1}
        assert [c.index for c in chunks[:4]] == [0, 1, 0, 1]
        text = {i: "".join(c.delta for c in chunks if c.index == i) for i in (0, 1)}
        assert text == {0: "Echo: hello there", 1: "Echo: hello there #1"}
        finishes = [c for c in chunks if c.finish_reason]
        assert sorted(c.index for c in finishes) == [0, 1]
        assert chunks[-1].finish_reason and chunks[-1].usage is not None
        # generate_stream gives choice 0's text only, never both interleaved
        assert "".join([d async for d in llm.generate_stream("hello there", n=2)]) == text[0]


async def test_stream_tool_calls_assembled_per_choice(openai_server: ServerHandle) -> None:
    openai_server.state.tool_arguments = {"city": "Paris"}
    async with make(openai_server) as llm:
        chunks = [c async for c in llm.chat_stream("weather?", tools=[Weather], n=2)]
        done = {c.index: c.completed_tool_calls for c in chunks if c.finish_reason}
        assert set(done) == {0, 1}
        for calls in done.values():
            assert calls is not None and len(calls) == 1
            assert calls[0].name == "Weather" and calls[0].arguments == {"city": "Paris"}
        assert done[0][0].id != done[1][0].id


def test_finish_reason_normalised_provider_value_in_raw() -> None:
    assert [normalize_finish_reason(v) for v in
            ("stop", "eos_token", "stop_sequence", "length", "function_call", "content_filter", None)] == [
        "stop", "stop", "stop", "length", "tool_calls", "content_filter", None]
    data = {"model": "m", "choices": [{"index": 0, "finish_reason": "function_call", "message": {
        "role": "assistant", "content": None,
        "function_call": {"name": "f", "arguments": "{\"a\": 1}"}}}]}
    resp = parse_chat_response(data, "m", "openai")
    assert resp.finish_reason == "tool_calls" and resp.raw["choices"][0]["finish_reason"] == "function_call"
    assert resp.tool_calls[0].name == "f" and resp.tool_calls[0].arguments == {"a": 1}


async def test_cached_tokens(openai_server: ServerHandle) -> None:
    history = [{"role": "system", "content": "you answer in five words or fewer"},
               {"role": "user", "content": "first question"}]
    async with make(openai_server) as llm:
        first = await llm.chat(history)
        assert first.usage.cached_tokens == 0
        second = await llm.chat([*history, {"role": "assistant", "content": first.content},
                                 {"role": "user", "content": "second"}])
        assert second.usage.cached_tokens == 9  # the two earlier messages' words
        assert second.raw["usage"]["prompt_tokens_details"]["cached_tokens"] == 9
        assert llm.get_token_usage().cached_tokens == 9  # cumulative, like the other counts


async def test_raw_chat_completion_counts_usage(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        data = await llm.create_chat_completion({"messages": [{"role": "user", "content": "a b c"}]})
        assert llm.get_token_usage().total_tokens == data["usage"]["total_tokens"] > 0
        before = llm.get_token_usage().total_tokens
        stream = await llm.create_chat_completion({
            "messages": [{"role": "user", "content": "a b"}], "stream": True,
            "stream_options": {"include_usage": True},
        })
        items = [obj async for obj in stream]
        usage = items[-1]["usage"]
        assert llm.get_token_usage().total_tokens == before + usage["total_tokens"]
        assert sent(openai_server)["stream_options"] == {"include_usage": True}


# --------------------------------------------------------------------------- messages


async def test_images_sent_as_image_parts(openai_server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    b64 = base64.b64encode(PNG).decode()
    async with make(openai_server) as llm:
        msg = Message("user", "what is this", images=["https://example.com/a.jpg", str(path), b64])
        await llm.chat([msg])
        parts = sent(openai_server)["messages"][0]["content"]
        assert parts[0] == {"type": "text", "text": "what is this"}
        urls = [p["image_url"]["url"] for p in parts[1:]]
        assert all(p["type"] == "image_url" for p in parts[1:])
        assert urls == ["https://example.com/a.jpg", f"data:image/png;base64,{b64}",
                        f"data:image/png;base64,{b64}"]
        # content parts: strings become text parts, image parts get a data URL
        await llm.chat([{"role": "user", "content": [
            "describe", {"type": "image", "image": str(path)},
            {"type": "image_url", "image_url": {"url": b64, "detail": "low"}}]}])
        parts = sent(openai_server)["messages"][0]["content"]
        assert parts == [
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}", "detail": "low"}},
        ]
        before = openai_server.state.total_requests
        with pytest.raises(InvalidRequestError, match=r"missing\.png"):
            await llm.chat([Message("user", "x", images=[str(tmp_path / "missing.png")])])
        assert openai_server.state.total_requests == before


async def test_developer_role_sent(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        await llm.chat([Message(Role.developer, "be terse"), Message("user", "hi")])
        assert sent(openai_server)["messages"][0] == {"role": "developer", "content": "be terse"}


async def test_custom_tool_call_surfaced_and_sent_back(openai_server: ServerHandle) -> None:
    openai_server.state.tool_arguments = "print('hello')"
    tool = {"type": "custom", "custom": {"name": "code_exec", "description": "runs python"}}
    async with make(openai_server) as llm:
        resp = await llm.chat("run it", tools=[tool], tool_choice="code_exec")
        assert sent(openai_server)["tool_choice"] == {"type": "custom", "custom": {"name": "code_exec"}}
        call = resp.tool_calls[0]
        assert (call.type, call.name, call.arguments) == ("custom", "code_exec", {"input": "print('hello')"})
        await llm.chat([Message("user", "run it"),
                        Message("assistant", None, tool_calls=[call]),
                        Message("tool", "hello", tool_call_id=call.id)])
        wire_call = sent(openai_server)["messages"][1]["tool_calls"][0]
        assert wire_call == {"id": call.id, "type": "custom",
                             "custom": {"name": "code_exec", "input": "print('hello')"}}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tools": [Weather], "tool_choice": "bogus"}, "bogus"),
        ({"tool_choice": "auto"}, "only allowed together with tools"),
        ({"tools": [Weather], "tool_choice": {"type": "function", "function": {}}}, "function.name"),
        ({"tools": [Weather], "tool_choice": {"type": "function", "function": {"name": "Other"}}}, "Other"),
        ({"tools": [Weather], "tool_choice": 3}, "tool_choice"),
        ({"response_format": "yaml"}, "response_format"),
        ({"response_format": 5}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"response_format": {"foo": 1}}, "response_format"),
    ],
)
async def test_tool_choice_and_response_format_checked(
    openai_server: ServerHandle, kwargs: dict[str, Any], match: str
) -> None:
    async with make(openai_server) as llm:
        with pytest.raises(InvalidRequestError, match=match):
            await llm.chat("hi", **kwargs)
        assert openai_server.state.total_requests == 0


async def test_tool_choice_forms_accepted(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        for choice, wire in [
            ("Weather", {"type": "function", "function": {"name": "Weather"}}),
            (Weather, {"type": "function", "function": {"name": "Weather"}}),
            ("required", "required"),
            ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
             {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}),
        ]:
            resp = await llm.chat("weather?", tools=[Weather], tool_choice=choice)
            assert sent(openai_server)["tool_choice"] == wire
            assert resp.tool_calls and resp.tool_calls[0].type == "function"


# --------------------------------------------------------------------------- info, health


async def test_context_length_from_the_server(openai_server: ServerHandle) -> None:
    openai_server.state.models = ["vllm/qwen3"]
    openai_server.state.context_length = 32768
    async with make(openai_server, "vllm/qwen3") as llm:
        assert llm.get_model_info().context_length is None
        await llm.health_check()
        assert llm.get_model_info().context_length == 32768
    async with make(openai_server, "vllm/qwen3") as llm:
        info = await llm.fetch_model_info()
        assert info.context_length == 32768 == llm.get_model_info().context_length
    async with make(openai_server, "gpt-4o") as llm:  # OpenAI does not say: the known window
        assert (await llm.fetch_model_info()).context_length == 128_000


async def test_health_check_makes_one_attempt(openai_server: ServerHandle) -> None:
    openai_server.state.add_fault("status", status=503, path="/v1/models", times=5)
    async with make(openai_server, max_retries=4) as llm:
        with pytest.raises(ServerError):
            await llm.health_check()
        assert openai_server.state.total_requests == 1


class SlowLLM(BaseLLM):
    """A provider implementing only generate: it sleeps, or fails, as told."""

    def __init__(self, *args: Any, delay: float = 0.0, fail: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.delay, self.fail, self.calls = delay, fail, 0
        self.options: list[dict[str, Any]] = []

    async def generate(self, messages: Any, **options: Any) -> str:
        self.calls += 1
        self.options.append(options)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ServerError("down")
        return "pong"


async def test_base_health_check_is_short_and_single() -> None:
    slow = SlowLLM(LLMConfig(provider="slow", model="m", timeout=0.3), delay=5.0)
    started = time.perf_counter()
    with pytest.raises(LLMTimeoutError):
        await slow.health_check()
    assert time.perf_counter() - started < 2.0
    failing = SlowLLM(LLMConfig(provider="slow", model="m", max_retries=3), fail=True)
    with pytest.raises(ServerError):
        await failing.health_check()
    assert failing.calls == 1
    assert failing.options[0]["max_retries"] == 0 and failing.options[0]["timeout"] <= 10


def test_stream_chunk_fields_default() -> None:
    chunk = StreamChunk()
    assert (chunk.delta, chunk.reasoning, chunk.refusal, chunk.index, chunk.logprobs) == ("", "", None, 0, None)
    assert ToolCall("id", "f", {"a": 1}).to_openai()["type"] == "function"


def test_typed_results_carry_every_field() -> None:
    """Responses and chunks are built without validation: each must still have every field
    of its model, with the values a validated one would have."""
    from llmkit import ChatResponse, Choice, Usage
    from llmkit.http.streaming import SSEEvent
    from llmkit.providers.openai.chat import parse_stream_event

    data = {"model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    resp = parse_chat_response(data, "m", "openai")
    assert set(resp.__dict__) == set(ChatResponse.model_fields)
    assert set(resp.choices[0].__dict__) == set(Choice.model_fields)
    assert set(resp.usage.__dict__) == set(Usage.model_fields)
    assert ChatResponse.model_validate(resp.model_dump()) == resp
    event = SSEEvent(b'{"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]}')
    chunk = parse_stream_event(event, "openai")
    assert isinstance(chunk, StreamChunk) and set(chunk.model_dump()) == set(StreamChunk.model_fields)
    assert chunk == StreamChunk(delta="a", raw=chunk.raw)


@pytest.mark.spec_exempt("min_p is a llama.cpp / vLLM field, passed through on purpose")
async def test_per_call_model_and_typed_provider_options(openai_server: ServerHandle) -> None:
    from llmkit.providers.openai.chat import OPENAI_PROVIDER_OPTIONS, OpenAIOptions

    assert {"logit_bias", "min_p", "repetition_penalty"} <= OPENAI_PROVIDER_OPTIONS
    assert "model" in OpenAIOptions.__optional_keys__ and "model" not in OPENAI_PROVIDER_OPTIONS
    async with make(openai_server) as llm:
        resp = await llm.chat("hi", model="gpt-4o", min_p=0.05, parallel_tool_calls=False)
        body = sent(openai_server)
        assert body["model"] == "gpt-4o" == resp.model
        assert body["min_p"] == 0.05 and body["parallel_tool_calls"] is False


def test_image_forms_for_data_only_wire_formats(tmp_path: Path) -> None:
    """``image_base64`` (the bare data Ollama's ``images`` take) from each accepted form."""
    from llmkit.core.images import image_base64, image_url

    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    b64 = base64.b64encode(PNG).decode()
    assert image_base64(str(path)) == b64
    assert image_base64(f"data:image/png;base64,{b64}") == b64
    assert image_base64(b64) == b64
    with pytest.raises(InvalidRequestError, match="URL"):
        image_base64("https://example.com/a.png")
    with pytest.raises(InvalidRequestError):
        image_url("not an image, not a path")
