"""Wire-level checks of the test server's Responses API (``/v1/responses``), with raw
aiohttp and with openai-python's own client (whose typed models parse every event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.servers import ServerHandle, ServerState, serve_openai

WEATHER = {
    "type": "function", "name": "get_weather", "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]},
}


@pytest.fixture
async def srv() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState()) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, srv: ServerHandle, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(srv.url + "/responses", json=body) as resp:
        return resp.status, await resp.json()


async def stream(http: aiohttp.ClientSession, srv: ServerHandle, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed response; each ``event:`` line names its data's type."""
    async with http.post(srv.url + "/responses", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        raw = (await resp.read()).decode()
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        event = orjson.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


async def test_text_reply_and_usage(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    status, body = await post(http, srv, {"model": "gpt-4o-mini", "input": "hello big world"})
    assert status == 200
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["id"].startswith("resp_")
    [item] = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": "Echo: hello big world",
                                "annotations": [], "logprobs": []}]
    assert body["usage"] == {
        "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7,
    }


async def test_streamed_text_events_in_order(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    events = await stream(http, srv, {"model": "gpt-4o-mini", "input": "hello big world"})
    assert types(events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        "output_text.delta", "output_text.delta", "output_text.delta", "output_text.delta",
        "output_text.done", "content_part.done", "output_item.done", "completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Echo: hello big world" == events[8]["text"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    final = events[-1]["response"]
    assert final["usage"]["output_tokens"] == 4 and final["output"][0]["status"] == "completed"


async def test_function_call_and_its_output(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    body = {"model": "gpt-4o-mini", "input": "weather in Paris?", "tools": [WEATHER],
            "tool_choice": "required"}
    _, first = await post(http, srv, body)
    [call] = first["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "text"}
    events = await stream(http, srv, body)
    assert types(events) == [
        "created", "in_progress", "output_item.added", "function_call_arguments.delta",
        "function_call_arguments.delta", "function_call_arguments.delta",
        "function_call_arguments.done", "output_item.done", "completed",
    ]
    args = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert args == events[6]["arguments"] == call["arguments"] and events[6]["name"] == "get_weather"
    follow = {"model": "gpt-4o-mini", "tools": [WEATHER], "input": [
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather",
         "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny 21C"},
    ]}
    status, second = await post(http, srv, follow)
    assert status == 200 and second["output"][0]["content"][0]["text"] == "Echo: sunny 21C"
    follow["input"] = follow["input"][:1] + follow["input"][2:]
    status, err = await post(http, srv, follow)
    assert status == 400 and "No tool call found" in err["error"]["message"]


async def test_json_schema_format(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    _, body = await post(http, srv, {"model": "gpt-4o-mini", "input": "who?", "text": {
        "format": {"type": "json_schema", "name": "Person", "schema": schema, "strict": True}}})
    assert orjson.loads(body["output"][0]["content"][0]["text"]) == {"name": "text", "age": 1}
    assert body["text"]["format"]["name"] == "Person"


async def test_reasoning_summary_and_text(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    req = {"model": "o4-mini", "input": "think about this", "reasoning": {"effort": "high", "summary": "auto"}}
    _, body = await post(http, srv, req)
    reasoning, message = body["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "The user wrote 3 words (effort high)."}]
    assert "content" not in reasoning and message["type"] == "message"
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 7
    assert body["usage"]["output_tokens"] == 7 + 4
    events = await stream(http, srv, req)
    assert types(events)[2:4] == ["output_item.added", "reasoning_summary_part.added"]
    assert types(events)[4:14] == ["reasoning_summary_text.delta"] * 7 + [
        "reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done"]
    summary = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    assert summary == "The user wrote 3 words (effort high)."
    _, body = await post(http, srv, {"model": "local-reasoner", "input": "think"})
    assert body["output"][0]["summary"] == [] and body["output"][0]["content"] == [
        {"type": "reasoning_text", "text": "The user wrote 1 words (effort medium)."}]
    events = await stream(http, srv, {"model": "local-reasoner", "input": "think"})
    assert "reasoning_text.delta" in types(events) and "reasoning_summary_text.delta" not in types(events)


async def test_previous_response_id_and_store(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    _, first = await post(http, srv, {"model": "gpt-4o-mini", "input": "my name is Ada",
                                      "instructions": "be brief please"})
    assert first["usage"]["input_tokens"] == 4 + 3 and first["instructions"] == "be brief please"
    _, second = await post(http, srv, {"model": "gpt-4o-mini", "input": "what is it",
                                       "previous_response_id": first["id"]})
    # the first turn (4 + the 5-word reply) counts again, and as cached; instructions do not
    assert second["usage"]["input_tokens"] == 4 + 5 + 3
    assert second["usage"]["input_tokens_details"]["cached_tokens"] == 9
    assert second["previous_response_id"] == first["id"]
    async with http.get(srv.url + f"/responses/{first['id']}") as resp:
        assert resp.status == 200 and (await resp.json())["id"] == first["id"]
    async with http.get(srv.url + "/responses/resp_unknown") as resp:
        assert resp.status == 404 and "resp_unknown" in (await resp.json())["error"]["message"]
    events = await stream(http, srv, {"model": "gpt-4o-mini", "input": "hi", "store": False})
    unstored = events[-1]["response"]["id"]
    for rid in (unstored, "resp_unknown"):
        status, err = await post(http, srv, {"model": "gpt-4o-mini", "input": "x", "previous_response_id": rid})
        assert status == 400 and err["error"]["code"] == "previous_response_not_found"
        assert err["error"]["param"] == "previous_response_id"


async def test_max_output_tokens_makes_it_incomplete(http: aiohttp.ClientSession) -> None:
    reply = " ".join(f"w{i}" for i in range(20))
    async with serve_openai(ServerState(reply=reply)) as srv:
        req = {"model": "gpt-4o-mini", "input": "talk", "max_output_tokens": 16}
        _, body = await post(http, srv, req)
        assert body["status"] == "incomplete"
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        assert body["output"][0]["status"] == "incomplete"
        assert body["output"][0]["content"][0]["text"] == " ".join(f"w{i}" for i in range(16))
        events = await stream(http, srv, req)
        assert events[-1]["type"] == "response.incomplete"
        assert events[-1]["response"]["usage"]["output_tokens"] == 16


async def test_failed_response(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    _, body = await post(http, srv, {"model": "gpt-4o-mini", "input": "fail:rate_limit_exceeded"})
    assert body["status"] == "failed" and body["output"] == []
    assert body["error"]["code"] == "rate_limit_exceeded"
    events = await stream(http, srv, {"model": "gpt-4o-mini", "input": "fail"})
    assert types(events) == ["created", "in_progress", "failed"]
    assert events[-1]["response"]["error"]["code"] == "server_error"


async def test_stream_faults(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    req = {"model": "gpt-4o-mini", "input": "hello big world"}
    srv.state.add_fault("truncate_stream", path="/v1/responses", after=100)
    events = await stream(http, srv, req)
    assert types(events)[-1] == "output_item.done" and len(events) == 11
    srv.state.add_fault("error_event", path="/v1/responses", after=5, message="boom")
    events = await stream(http, srv, req)
    assert types(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                             "output_text.delta", "error"]
    assert events[-1] == {"type": "error", "code": "server_error", "message": "boom",
                          "param": None, "sequence_number": 5}


async def test_unknown_field_is_refused(http: aiohttp.ClientSession, srv: ServerHandle) -> None:
    """Chat completions' ``max_tokens`` is not a Responses field: a 400, and recorded."""
    status, body = await post(http, srv, {"model": "gpt-4o-mini", "input": "x", "max_tokens": 5})
    assert status == 400 and "max_tokens" in body["error"]["message"]
    assert len(srv.state.spec_violations) == 1
    srv.state.spec_violations.clear()


async def test_openai_python_reads_it(srv: ServerHandle) -> None:
    async with openai.AsyncOpenAI(base_url=srv.url, api_key="sk-test", max_retries=0) as client:
        resp = await client.responses.create(model="gpt-4o-mini", input="hello big world")
        assert resp.output_text == "Echo: hello big world" and resp.usage is not None
        assert resp.usage.input_tokens_details.cached_tokens == 0
        kinds = []
        text = ""
        async with await client.responses.create(model="gpt-4o-mini", input="hello", stream=True) as events:
            async for event in events:
                kinds.append(event.type)
                if event.type == "response.output_text.delta":
                    text += event.delta
        assert text == "Echo: hello" and kinds[-1] == "response.completed"
        tool = await client.responses.create(
            model="gpt-4o-mini", input="weather?", tools=[WEATHER], tool_choice="required")  # type: ignore[list-item]
        assert tool.output[0].type == "function_call" and tool.output[0].name == "get_weather"
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_nope")
