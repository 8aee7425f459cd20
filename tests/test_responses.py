"""OpenAILLM with ``extra={"api": "responses"}`` against the test server's ``/v1/responses``
(requests, replies and every stream event validated against OpenAI's schemas): text,
streams, tools and their results, structured output, reasoning, the per-call options and
stored responses, and the raw ``create_response``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from llmkit import ChatResponse, ConfigError, InvalidRequestError, OpenAILLM
from tests.servers import ServerHandle, ServerState, serve_openai

RESPONSES = "/v1/responses"
KEY = "sk-responses-abcdefghijkl"


@pytest.fixture
async def srv() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState()) as handle:
        yield handle


def make(srv: ServerHandle, **kw: Any) -> OpenAILLM:
    extra = {"api": "responses", **kw.pop("extra", {})}
    return OpenAILLM({"model": "gpt-4o-mini", "base_url": srv.url, "api_key": KEY,
                      "max_retries": 0, "extra": extra, **kw})


def bodies(srv: ServerHandle) -> list[dict[str, Any]]:
    return [r.json for r in srv.state.requests_to(RESPONSES)]


def get_weather(city: str, days: int = 1) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    name: str
    age: int


async def test_generate_and_chat(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        assert await llm.generate("hello big world") == "Echo: hello big world"
        response = await llm.chat([{"role": "system", "content": "be kind"},
                                   {"role": "user", "content": "hello big world"}])
        usage = llm.get_token_usage()
    assert isinstance(response, ChatResponse)
    assert response.content == "Echo: hello big world" and response.finish_reason == "stop"
    assert response.id is not None and response.id.startswith("resp_")
    assert response.id == response.raw["id"] and response.model == "gpt-4o-mini"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 4)
    assert usage.total_tokens == 7 + 9
    first, second = bodies(srv)
    assert first == {"model": "gpt-4o-mini", "input": "hello big world"}
    assert second["input"] == [
        {"type": "message", "role": "system", "content": "be kind"},
        {"type": "message", "role": "user", "content": "hello big world"},
    ]
    assert len(srv.state.requests_to("/v1/chat/completions")) == 0


async def test_options_under_their_responses_names(srv: ServerHandle) -> None:
    async with make(srv, max_tokens=100, temperature=0.3) as llm:
        await llm.chat("hi", instructions="answer briefly", store=False, reasoning_effort="low",
                       top_p=0.9, metadata={"k": "v"})
        await llm.chat("hi", max_tokens=20, reasoning={"summary": "auto"}, reasoning_effort="high")
    first, second = bodies(srv)
    assert first == {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 100,
                     "temperature": 0.3, "instructions": "answer briefly", "store": False,
                     "reasoning": {"effort": "low"}, "top_p": 0.9, "metadata": {"k": "v"}}
    assert second["max_output_tokens"] == 20
    assert second["reasoning"] == {"summary": "auto", "effort": "high"}


@pytest.mark.spec_exempt("think goes to llama.cpp / vLLM as chat_template_kwargs, a field OpenAI's spec lacks")
async def test_think_and_logprobs(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        await llm.chat("hi", think=False, logprobs=True, top_logprobs=2)
        await llm.chat("hi", think="low")
    first, second = bodies(srv)
    assert first["chat_template_kwargs"] == {"enable_thinking": False}
    assert first["include"] == ["message.output_text.logprobs"] and first["top_logprobs"] == 2
    assert second["reasoning"] == {"effort": "low"}


async def test_previous_response_id_continues_a_stored_response(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        first = await llm.chat("my name is Ada")
        second = await llm.chat("what is it", previous_response_id=first.id)
        unstored = await llm.chat("forget me", store=False)
        with pytest.raises(InvalidRequestError) as err:
            await llm.chat("and now", previous_response_id=unstored.id)
    assert bodies(srv)[1]["previous_response_id"] == first.id
    assert second.usage.prompt_tokens == 4 + 5 + 3 and second.usage.cached_tokens == 9
    assert err.value.status == 400 and err.value.code == "previous_response_not_found"
    assert getattr(err.value, "param", "previous_response_id") == "previous_response_id"


async def test_streams(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        chunks = [c async for c in llm.chat_stream("hello big world")]
        text = [t async for t in llm.generate_stream("hello big world")]
        usage = llm.get_token_usage()
    assert [c.delta for c in chunks] == ["Echo:", " hello", " big", " world", ""]
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 4)
    assert last.raw is not None and last.raw["response"]["id"].startswith("resp_")
    assert text == ["Echo:", " hello", " big", " world"]
    assert usage.total_tokens == 14
    assert all(b["stream"] is True for b in bodies(srv))


async def test_tool_calls_and_their_results(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        called = await llm.chat("weather in Paris?", tools=[get_weather], tool_choice="get_weather")
        [call] = called.tool_calls
        answer = await llm.chat(
            [{"role": "user", "content": "weather in Paris?"},
             {"role": "assistant", "content": "", "tool_calls": [call]},
             {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}],
            tools=[get_weather],
        )
    assert called.finish_reason == "tool_calls" and called.content == ""
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert call.arguments == {"city": "text", "days": 1}
    assert answer.content == "Echo: sunny, 21 C" and answer.finish_reason == "stop"
    first, second = bodies(srv)
    [tool] = first["tools"]
    assert tool["type"] == "function" and tool["name"] == "get_weather" and tool["strict"] is False
    assert tool["parameters"]["required"] == ["city"]
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert second["input"][1:] == [
        {"type": "function_call", "call_id": call.id, "name": "get_weather",
         "arguments": orjson.dumps(call.arguments).decode()},
        {"type": "function_call_output", "call_id": call.id, "output": "sunny, 21 C"},
    ]


async def test_streamed_tool_call(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        chunks = [c async for c in llm.chat_stream(
            "weather?", tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}], tool_choice="required")]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].id and deltas[0].id.startswith("call_") and deltas[0].name == "get_weather"
    assert "".join(d.arguments for d in deltas) == '{"city":"text"}'
    assert {d.index for d in deltas} == {0}
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in last.completed_tool_calls or []] == [
        (deltas[0].id, "get_weather", {"city": "text"})]


async def test_structured_output_as_text_format(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        response = await llm.chat("who?", response_format=Person)
        plain = await llm.chat("who?", response_format={"type": "json_object"})
    assert response.parsed == Person(name="text", age=1)
    fmt = bodies(srv)[0]["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "Person"
    assert set(fmt["schema"]["properties"]) == {"name", "age"}
    assert bodies(srv)[1]["text"] == {"format": {"type": "json_object"}}
    assert plain.parsed == {"result": "text"}


async def test_reasoning_summary_and_tokens(srv: ServerHandle) -> None:
    async with make(srv, model="o4-mini") as llm:
        response = await llm.chat("think about this", reasoning_effort="high", reasoning={"summary": "auto"})
        chunks = [c async for c in llm.chat_stream("think about this", reasoning_effort="low",
                                                    reasoning={"summary": "auto"})]
    assert response.reasoning == "The user wrote 3 words (effort high)."
    assert response.usage.reasoning_tokens == 7 and response.content == "Echo: think about this"
    assert "".join(c.reasoning for c in chunks) == "The user wrote 3 words (effort low)."
    assert chunks[-1].usage is not None and chunks[-1].usage.reasoning_tokens == 7


async def test_reasoning_text_of_compatible_servers(srv: ServerHandle) -> None:
    async with make(srv, model="local-reasoner") as llm:
        response = await llm.chat("think")
    assert response.reasoning == "The user wrote 1 words (effort medium)."


async def test_refusal(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        response = await llm.chat("refuse this")
        chunks = [c async for c in llm.chat_stream("refuse this")]
    assert response.refusal == "I'm sorry, but I can't help with that." and response.content == ""
    assert "".join(c.refusal or "" for c in chunks) == response.refusal


async def test_raw_create_response(srv: ServerHandle) -> None:
    async with make(srv) as llm:
        data = await llm.create_response({"input": "hello"})
        events = await llm.create_response({"input": "hello", "stream": True})
        kinds = [e["type"] async for e in events]
        usage = llm.get_token_usage()
        with pytest.raises(InvalidRequestError):
            await llm.create_response("hello")  # type: ignore[arg-type]
    assert data["object"] == "response" and data["output"][0]["content"][0]["text"] == "Echo: hello"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 2
    assert usage.total_tokens == 2 * 3
    assert bodies(srv)[0] == {"model": "gpt-4o-mini", "input": "hello"}


async def test_bad_api_name_and_options(srv: ServerHandle) -> None:
    with pytest.raises(ConfigError, match="api"):
        OpenAILLM({"model": "m", "base_url": srv.url, "extra": {"api": "completions"}})
    async with make(srv) as llm:
        with pytest.raises(InvalidRequestError, match="previus_response_id"):
            await llm.chat("hi", previus_response_id="resp_1")  # type: ignore[call-arg]
    async with OpenAILLM({"model": "m", "base_url": srv.url, "api_key": KEY}) as chat_api:
        for name, value in (("previous_response_id", "resp_1"), ("instructions", "be brief")):
            with pytest.raises(InvalidRequestError, match=r"extra=\{'api': 'responses'\}"):
                await chat_api.chat("hi", **{name: value})
    openai = OpenAILLM({"model": "gpt-4o", "api_key": KEY, "extra": {"api": "responses"}})
    async with openai:
        with pytest.raises(InvalidRequestError, match="stop"):
            await openai.chat("hi", stop=["x"])
    assert srv.state.request_count == 0


def test_events_of_servers_that_send_a_subset() -> None:
    """llama.cpp's events as it sends them (no sequence_number / output_index, no
    function_call_arguments.done), and a server that names no events and streams a call
    only as its finished item."""
    from llmkit.http.streaming import SSEEvent
    from llmkit.providers.openai.responses.events import ResponseEvents, is_last

    item = {"id": "fc_1", "type": "function_call", "status": "in_progress", "arguments": "",
            "call_id": "call_1", "name": "get_weather"}
    done = {**item, "status": "completed", "arguments": '{"city":"Paris"}'}
    llama = [
        ("response.created", {"type": "response.created", "response": {"id": "resp_1", "object": "response", "status": "in_progress"}}),
        ("response.output_item.added", {"type": "response.output_item.added", "item": item}),
        ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta", "delta": '{"city":', "item_id": "fc_1"}),
        ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta", "delta": '"Paris"}', "item_id": "fc_1"}),
        ("response.output_item.done", {"type": "response.output_item.done", "item": done}),
        ("response.completed", {"type": "response.completed", "response": {
            "id": "resp_1", "status": "completed", "output": [done],
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12, "input_tokens_details": {"cached_tokens": 2}}}}),
    ]
    for named in (True, False):
        state = ResponseEvents("openai")
        events = [SSEEvent(orjson.dumps(data), kind if named else "message") for kind, data in llama]
        assert [is_last(ev) for ev in events] == [False] * 5 + [True]
        chunks = [c for c in map(state.chunk, events) if c is not None]
        assert [d.arguments for c in chunks for d in c.tool_calls] == ["", '{"city":', '"Paris"}']
        last = chunks[-1]
        assert last.finish_reason == "tool_calls" and last.usage is not None
        assert (last.usage.prompt_tokens, last.usage.cached_tokens, last.usage.reasoning_tokens) == (5, 2, 0)
        assert [(c.id, c.arguments) for c in last.completed_tool_calls or []] == [("call_1", {"city": "Paris"})]
    # only the finished item: the whole call in one delta
    state = ResponseEvents("openai")
    [chunk] = [c for c in [state.chunk(SSEEvent(orjson.dumps(llama[4][1])))] if c is not None]
    assert [(d.id, d.name, d.arguments) for d in chunk.tool_calls] == [("call_1", "get_weather", '{"city":"Paris"}')]


async def test_arguments_that_are_not_json_are_kept_as_sent(srv: ServerHandle) -> None:
    srv.state.tool_arguments = '{"city": "Par'
    async with make(srv) as llm:
        response = await llm.chat("weather?", tools=[get_weather], tool_choice="required")
        chunks = [c async for c in llm.chat_stream("weather?", tools=[get_weather], tool_choice="required")]
    for call in (response.tool_calls[0], (chunks[-1].completed_tool_calls or [])[0]):
        assert call.arguments == {} and call.raw_arguments == '{"city": "Par'
        assert call.arguments_error is not None
