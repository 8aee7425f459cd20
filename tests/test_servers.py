"""Wire-level checks of the local provider servers, with raw aiohttp."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.servers import (
    Fault,
    ServerHandle,
    embed_text,
    rate_limit_fault,
    schema_instance,
    status_fault,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse_events(raw: str) -> list[str]:
    """Payloads of SSE ``data:`` fields (with or without the space)."""
    out = []
    for block in raw.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                out.append(line[5:].lstrip(" "))
    return out


def ndjson(raw: str) -> list[Any]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello big world"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}


# --------------------------------------------------------------------------- OpenAI


async def test_openai_chat_non_stream(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
        assert r.status == 200
        assert r.headers["x-request-id"]
        body = await r.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Echo: hello big world",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == 7
    rec = openai_server.state.last_request
    assert rec.path == "/v1/chat/completions"
    assert rec.json == CHAT


async def test_openai_chat_stream_framing_and_usage(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{openai_server.url}/chat/completions", json=req) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = await r.text()
    assert raw.endswith("data: [DONE]\n\n")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: hello big world"
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_openai_stream_without_usage(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{openai_server.url}/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        events = sse_events(await r.text())
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_tool_call_non_stream(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    req = {**CHAT, "tools": [WEATHER_TOOL]}
    async with http.post(f"{openai_server.url}/chat/completions", json=req) as r:
        body = await r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "text", "days": 1, "unit": "c"}
    assert choice["message"]["content"] is None


async def test_openai_tool_choice_named_and_state_arguments(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    openai_server.state.tool_arguments = {"city": "Paris"}
    req = {
        **CHAT,
        "tools": [other, WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    async with http.post(f"{openai_server.url}/chat/completions", json=req) as r:
        call = (await r.json())["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}


async def test_openai_tool_choice_none_and_tool_result(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    req = {**CHAT, "tools": [WEATHER_TOOL], "tool_choice": "none"}
    async with http.post(f"{openai_server.url}/chat/completions", json=req) as r:
        assert (await r.json())["choices"][0]["message"]["content"] == "Echo: hello big world"
    messages = [
        *CHAT["messages"],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    req = {"model": "gpt-4o-mini", "messages": messages, "tools": [WEATHER_TOOL]}
    async with http.post(f"{openai_server.url}/chat/completions", json=req) as r:
        choice = (await r.json())["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "Echo: sunny"


async def test_openai_tool_call_stream(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    req = {**CHAT, "tools": [WEATHER_TOOL], "stream": True}
    async with http.post(f"{openai_server.url}/chat/completions", json=req) as r:
        events = sse_events(await r.text())
    chunks = [orjson.loads(e) for e in events[:-1]]
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for c in chunks[1:]
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert len(pieces) >= 2
    for c in chunks[1:]:
        tcs = c["choices"][0]["delta"].get("tool_calls")
        if tcs:
            assert "id" not in tcs[0] and tcs[0]["index"] == 0
    assert orjson.loads("".join(pieces)) == {"city": "text", "days": 1, "unit": "c"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_openai_response_format(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
            "inner": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "required": ["x"],
            },
            "ref": {"$ref": "#/$defs/R"},
        },
        "required": ["name"],
        "$defs": {"R": {"type": "object", "properties": {"y": {"type": "boolean"}}}},
    }
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}}
    async with http.post(
        f"{openai_server.url}/chat/completions", json={**CHAT, "response_format": rf}
    ) as r:
        content = (await r.json())["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {
        "name": "text",
        "age": 1,
        "score": 1.5,
        "ok": True,
        "tags": ["text"],
        "kind": "a",
        "inner": {"x": 1},
        "ref": {"y": True},
    }
    async with http.post(
        f"{openai_server.url}/chat/completions",
        json={**CHAT, "response_format": {"type": "json_object"}},
    ) as r:
        assert isinstance(orjson.loads((await r.json())["choices"][0]["message"]["content"]), dict)


async def test_openai_max_tokens_and_reply(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    openai_server.state.reply = "one two three four five"
    async with http.post(
        f"{openai_server.url}/chat/completions", json={**CHAT, "max_tokens": 2}
    ) as r:
        body = await r.json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    async with http.post(
        f"{openai_server.url}/chat/completions",
        json={**CHAT, "max_completion_tokens": 3, "stream": True},
    ) as r:
        chunks = [orjson.loads(e) for e in sse_events(await r.text())[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "one two three"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.spec_exempt("checks the server's own 400 for a body without `messages`")
async def test_openai_errors(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    url = f"{openai_server.url}/chat/completions"
    async with http.post(url, json={**CHAT, "model": "missing-model"}) as r:
        assert r.status == 404
        assert await r.json() == {
            "error": {
                "message": "The model `missing-model` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        }
    openai_server.state.context_length = 2
    async with http.post(url, json=CHAT) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "context_length_exceeded"
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    async with http.post(url, json={"model": "gpt-4o-mini"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "messages"


async def test_openai_auth(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    openai_server.state.api_key = "sk-secret-key-123456"
    url = f"{openai_server.url}/chat/completions"
    async with http.post(
        url, json=CHAT, headers={"Authorization": "Bearer sk-wrong-key-999999"}
    ) as r:
        assert r.status == 401
        err = (await r.json())["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert err["message"].startswith("Incorrect API key provided: sk-***")
    assert "sk-wrong-key-999999" not in err["message"]
    async with http.post(url, json=CHAT) as r:
        assert r.status == 401
    async with http.post(
        url, json=CHAT, headers={"Authorization": "Bearer sk-secret-key-123456"}
    ) as r:
        assert r.status == 200


async def test_openai_embeddings(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    url = f"{openai_server.url}/embeddings"
    async with http.post(url, json={"model": "text-embedding-3-small", "input": ["a b", "c"]}) as r:
        body = await r.json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][0]["embedding"] == embed_text("a b", 8)
    assert len(body["data"][1]["embedding"]) == 8
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    async with http.post(
        url, json={"model": "text-embedding-3-small", "input": "a b", "encoding_format": "base64"}
    ) as r:
        b64 = (await r.json())["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(b64))) == embed_text("a b", 8)
    async with http.post(url, json={"model": "m", "input": [[1, 2], [3]], "dimensions": 4}) as r:
        data = (await r.json())["data"]
    assert len(data) == 2 and len(data[0]["embedding"]) == 4
    async with http.post(url, json={"model": "missing-model", "input": "x"}) as r:
        assert r.status == 404


async def test_openai_models_and_completions(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{openai_server.url}/models") as r:
        body = await r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == openai_server.state.models
    async with http.get(f"{openai_server.url}/models/gpt-4o") as r:
        assert (await r.json())["id"] == "gpt-4o"
    async with http.get(f"{openai_server.url}/models/nope") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "model_not_found"
    async with http.post(
        f"{openai_server.url}/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}
    ) as r:
        body = await r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Echo: hi"


# --------------------------------------------------------------------------- faults


async def test_fault_status_with_headers_and_times(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = openai_server.state
    state.faults.append(rate_limit_fault(2, retry_after_ms=1500, times=2))
    url = f"{openai_server.url}/chat/completions"
    for _ in range(2):
        async with http.post(url, json=CHAT) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "2"
            assert r.headers["retry-after-ms"] == "1500"
            assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
    async with http.post(url, json=CHAT) as r:
        assert r.status == 200
    assert state.faults == []
    assert len(state.requests) == 3


async def test_fault_custom_body_and_path(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = openai_server.state
    state.faults.append(status_fault(503, {"error": {"message": "busy"}}, path="/v1/embeddings"))
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
        assert r.status == 200
    async with http.post(f"{openai_server.url}/embeddings", json={"model": "m", "input": "x"}) as r:
        assert r.status == 503
        assert await r.json() == {"error": {"message": "busy"}}
    state.add_fault("status", status=500, body="oops")
    async with http.get(f"{openai_server.url}/models") as r:
        assert r.status == 500
        assert r.content_type == "text/plain"
        assert await r.text() == "oops"


async def test_fault_quota_html_malformed(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = openai_server.state
    url = f"{openai_server.url}/chat/completions"
    state.add_fault("quota")
    async with http.post(url, json=CHAT) as r:
        assert r.status == 429
        assert "Retry-After" not in r.headers
        err = (await r.json())["error"]
        assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    state.add_fault("html_error")
    async with http.post(url, json=CHAT) as r:
        assert r.status == 502
        assert r.content_type == "text/html"
        assert "502 Bad Gateway" in await r.text()
    state.add_fault("malformed_json")
    async with http.post(url, json=CHAT) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        with pytest.raises(ValueError):
            orjson.loads(await r.read())


async def test_fault_reset_before_headers(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    openai_server.state.add_fault("reset_before_headers")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
            await r.read()
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
        assert r.status == 200


async def test_fault_reset_mid_body(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    openai_server.state.add_fault("reset_mid_body")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
            assert r.status == 200
            await r.read()


async def test_fault_reset_mid_stream(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    openai_server.state.add_fault("reset_mid_body", after=2)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            f"{openai_server.url}/chat/completions", json={**CHAT, "stream": True}
        ) as r:
            async for chunk in r.content.iter_any():
                received += chunk
    assert len(sse_events(received.decode())) == 2


async def test_fault_slow_headers(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    openai_server.state.add_fault("slow_headers", delay=5)
    timeout = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            f"{openai_server.url}/chat/completions", json=CHAT, timeout=timeout
        ) as r:
            await r.read()
    openai_server.state.add_fault("slow_headers", delay=0.05)
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
        assert r.status == 200


async def test_fault_slow_body(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    openai_server.state.add_fault("slow_body", delay=5)
    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT, timeout=timeout) as r:
        assert r.status == 200
        with pytest.raises(asyncio.TimeoutError):
            await r.read()
    openai_server.state.add_fault("slow_body", delay=0.05)
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
        assert (await r.json())["choices"][0]["message"]["content"] == "Echo: hello big world"


async def test_fault_slow_stream(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    openai_server.state.add_fault("slow_body", after=1, delay=5)
    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    lines: list[bytes] = []
    async with http.post(
        f"{openai_server.url}/chat/completions", json={**CHAT, "stream": True}, timeout=timeout
    ) as r:
        with pytest.raises(asyncio.TimeoutError):
            async for line in r.content:
                lines.append(line)
    assert lines[0].startswith(b"data: ")


async def test_fault_truncate_stream(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    openai_server.state.add_fault("truncate_stream", after=3)
    async with http.post(
        f"{openai_server.url}/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        events = sse_events(await r.text())
    assert len(events) == 3
    assert "[DONE]" not in events


async def test_stream_faults_skip_non_stream(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = openai_server.state
    state.add_fault("truncate_stream", after=100)
    async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
        assert r.status == 200
    assert len(state.faults) == 1
    async with http.post(
        f"{openai_server.url}/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        events = sse_events(await r.text())
    assert events[-1] != "[DONE]"
    assert orjson.loads(events[-1])["choices"][0]["finish_reason"] == "stop"
    assert state.faults == []


async def test_fault_malformed_line_and_error_event(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = openai_server.state
    url = f"{openai_server.url}/chat/completions"
    state.add_fault("malformed_line", after=1)
    async with http.post(url, json={**CHAT, "stream": True}) as r:
        events = sse_events(await r.text())
    with pytest.raises(ValueError):
        orjson.loads(events[1])
    assert events[-1] == "[DONE]"
    state.add_fault("error_event", after=2, message="boom")
    async with http.post(url, json={**CHAT, "stream": True}) as r:
        events = sse_events(await r.text())
    assert len(events) == 3
    assert orjson.loads(events[-1]) == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
    }


async def test_fault_huge(openai_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    state = openai_server.state
    url = f"{openai_server.url}/chat/completions"
    state.add_fault("huge", size=3_000_000)
    async with http.post(url, json=CHAT) as r:
        raw = await r.read()
    assert len(raw) == 3_000_000
    assert len(orjson.loads(raw)["choices"][0]["message"]["content"]) > 2_900_000
    state.add_fault("huge", size=200_000, after=1)
    async with http.post(url, json={**CHAT, "stream": True}) as r:
        events = sse_events(await r.text())
    assert len(orjson.loads(events[1])["choices"][0]["delta"]["content"]) == 200_000
    assert events[-1] == "[DONE]"


async def test_delay_and_in_flight(
    openai_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = openai_server.state
    state.delay = 0.1

    async def one() -> int:
        async with http.post(f"{openai_server.url}/chat/completions", json=CHAT) as r:
            return r.status

    assert await asyncio.gather(*(one() for _ in range(5))) == [200] * 5
    assert state.max_in_flight == 5
    assert state.in_flight == 0


async def test_refused_url(refused_url: str, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.get(refused_url):
            pass


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("nope")
    assert schema_instance({"type": ["string", "null"]}) == "text"
    assert schema_instance({"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]}) == 5


# --------------------------------------------------------------------------- Ollama


OCHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi there"}]}


async def test_ollama_chat_stream_default(
    ollama_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{ollama_server.url}/api/chat", json=OCHAT) as r:
        assert r.status == 200
        assert r.content_type == "application/x-ndjson"
        lines = ndjson(await r.text())
    assert all(not x["done"] for x in lines[:-1])
    assert "".join(x["message"]["content"] for x in lines) == "Echo: hi there"
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        assert isinstance(final[key], int)
    assert final["prompt_eval_count"] == 2 and final["eval_count"] == 3


async def test_ollama_chat_non_stream_options(
    ollama_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    req = {
        **OCHAT,
        "stream": False,
        "options": {"num_predict": 1, "temperature": 0.2},
        "keep_alive": "10m",
    }
    async with http.post(f"{ollama_server.url}/api/chat", json=req) as r:
        assert r.content_type == "application/json"
        body = await r.json()
    assert body["message"] == {"role": "assistant", "content": "Echo:"}
    assert body["done"] is True and body["done_reason"] == "length"
    rec = ollama_server.state.last_request.json
    assert rec["options"]["temperature"] == 0.2 and rec["keep_alive"] == "10m"
    async with http.get(f"{ollama_server.url}/api/ps") as r:
        assert [m["name"] for m in (await r.json())["models"]] == ["llama3.2:latest"]


async def test_ollama_tools_and_format(
    ollama_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    req = {**OCHAT, "stream": False, "tools": [WEATHER_TOOL]}
    async with http.post(f"{ollama_server.url}/api/chat", json=req) as r:
        msg = (await r.json())["message"]
    call = msg["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    assert call["arguments"] == {"city": "text", "days": 1, "unit": "c"}
    async with http.post(
        f"{ollama_server.url}/api/chat", json={**OCHAT, "tools": [WEATHER_TOOL]}
    ) as r:
        lines = ndjson(await r.text())
    assert any(x["message"].get("tool_calls") for x in lines[:-1])
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    async with http.post(
        f"{ollama_server.url}/api/chat", json={**OCHAT, "stream": False, "format": schema}
    ) as r:
        assert orjson.loads((await r.json())["message"]["content"]) == {"age": 1}


async def test_ollama_generate(ollama_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    req = {"model": "llama3.2:latest", "prompt": "why sky"}
    async with http.post(f"{ollama_server.url}/api/generate", json=req) as r:
        lines = ndjson(await r.text())
    assert "".join(x["response"] for x in lines) == "Echo: why sky"
    assert lines[-1]["done"] and lines[-1]["context"] == [1, 2, 3]
    async with http.post(f"{ollama_server.url}/api/generate", json={**req, "stream": False}) as r:
        assert (await r.json())["response"] == "Echo: why sky"


async def test_ollama_errors(ollama_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{ollama_server.url}/api/chat", json={**OCHAT, "model": "nope"}) as r:
        assert r.status == 404
        assert await r.json() == {"error": 'model "nope" not found, try pulling it first'}
    async with http.post(f"{ollama_server.url}/api/chat", data=b"{bad") as r:
        assert r.status == 400
        assert isinstance((await r.json())["error"], str)
    async with http.delete(f"{ollama_server.url}/api/delete", json={"model": "x"}) as r:
        assert r.status == 404
        assert await r.json() == {"error": "model 'x' not found"}
    ollama_server.state.api_key = "k"
    async with http.get(f"{ollama_server.url}/api/tags") as r:
        assert r.status == 401
        assert await r.json() == {"error": "unauthorized"}


async def test_ollama_stream_faults(
    ollama_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    state = ollama_server.state
    url = f"{ollama_server.url}/api/chat"
    state.add_fault("truncate_stream", after=10)
    async with http.post(url, json=OCHAT) as r:
        lines = ndjson(await r.text())
    assert lines and not any(x["done"] for x in lines)
    state.add_fault("error_event", after=1)
    async with http.post(url, json=OCHAT) as r:
        lines = ndjson(await r.text())
    assert len(lines) == 2
    assert lines[-1] == {"error": "an error was encountered while running the model"}
    state.add_fault("malformed_line", after=1)
    async with http.post(url, json=OCHAT) as r:
        raw = (await r.text()).splitlines()
    with pytest.raises(ValueError):
        orjson.loads(raw[1])
    state.add_fault("status", status=503)
    async with http.post(url, json=OCHAT) as r:
        assert r.status == 503
        assert isinstance((await r.json())["error"], str)


async def test_ollama_embed(ollama_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{ollama_server.url}/api/embed", json={"model": "nomic-embed-text", "input": ["a", "b c"]}
    ) as r:
        body = await r.json()
    assert body["model"] == "nomic-embed-text"
    assert body["embeddings"] == [embed_text("a", 8), embed_text("b c", 8)]
    assert body["prompt_eval_count"] == 3
    async with http.post(
        f"{ollama_server.url}/api/embed", json={"model": "nomic-embed-text", "input": "a"}
    ) as r:
        assert len((await r.json())["embeddings"]) == 1
    async with http.post(
        f"{ollama_server.url}/api/embeddings", json={"model": "nomic-embed-text", "prompt": "a"}
    ) as r:
        assert (await r.json())["embedding"] == embed_text("a", 8)


async def test_ollama_model_management(
    ollama_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    url = ollama_server.url
    async with http.get(f"{url}/api/tags") as r:
        names = [m["name"] for m in (await r.json())["models"]]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]
    async with http.post(f"{url}/api/pull", json={"model": "qwen3:0.6b"}) as r:
        lines = ndjson(await r.text())
    statuses = [x["status"] for x in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    progress = [x for x in lines if "digest" in x]
    assert progress and all({"total", "completed"} <= x.keys() for x in progress)
    async with http.post(f"{url}/api/pull", json={"model": "phi3", "stream": False}) as r:
        assert await r.json() == {"status": "success"}
    async with http.post(f"{url}/api/pull", json={"model": "missing-model"}) as r:
        assert "error" in ndjson(await r.text())[-1]
    create = {
        "model": "mario",
        "from": "llama3.2",
        "system": "You are Mario.",
        "parameters": {"temperature": 0.5},
    }
    async with http.post(f"{url}/api/create", json=create) as r:
        assert ndjson(await r.text())[-1] == {"status": "success"}
    assert ollama_server.state.last_request.json == create
    async with http.post(f"{url}/api/copy", json={"source": "mario", "destination": "luigi"}) as r:
        assert r.status == 200
    async with http.post(f"{url}/api/show", json={"model": "luigi"}) as r:
        body = await r.json()
    assert body["details"]["family"] == "llama" and "capabilities" in body
    async with http.delete(f"{url}/api/delete", json={"model": "luigi"}) as r:
        assert r.status == 200
    async with http.get(f"{url}/api/tags") as r:
        names = [m["name"] for m in (await r.json())["models"]]
    assert "mario:latest" in names and "luigi:latest" not in names and "qwen3:0.6b" in names
    async with http.get(f"{url}/api/version") as r:
        assert "version" in await r.json()


# --------------------------------------------------------------------------- Hugging Face


async def test_hf_chat_and_stream(hf_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    req = {"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": CHAT["messages"]}
    async with http.post(f"{hf_server.url}/v1/chat/completions", json=req) as r:
        assert (await r.json())["choices"][0]["message"]["content"] == "Echo: hello big world"
    async with http.post(f"{hf_server.url}/v1/chat/completions", json={**req, "stream": True}) as r:
        raw = await r.text()
    assert raw.startswith("data:{") and raw.endswith("data:[DONE]\n\n")
    hf_server.state.add_fault("error_event", after=1)
    async with http.post(f"{hf_server.url}/v1/chat/completions", json={**req, "stream": True}) as r:
        events = sse_events(await r.text())
    assert orjson.loads(events[-1]) == {
        "error": "Request failed during generation",
        "error_type": "generation",
    }
    async with http.post(
        f"{hf_server.url}/v1/chat/completions", json={**req, "model": "missing-model"}
    ) as r:
        assert r.status == 404
    hf_server.state.context_length = 1
    async with http.post(f"{hf_server.url}/v1/chat/completions", json=req) as r:
        assert r.status == 422
        assert (await r.json())["error_type"] == "validation"


async def test_hf_feature_extraction(hf_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    url = f"{hf_server.url}/hf-inference/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction"
    async with http.post(url, json={"inputs": "hello"}) as r:  # an array of arrays, per the docs
        assert await r.json() == [embed_text("hello", 8)]
    async with http.post(url, json={"inputs": ["a", "b"], "normalize": True}) as r:
        assert await r.json() == [embed_text("a", 8), embed_text("b", 8)]
    hf_server.state.loading = True
    hf_server.state.loading_estimated_time = 3.5
    async with http.post(url, json={"inputs": "x"}) as r:
        assert r.status == 503
        assert await r.json() == {
            "error": "Model BAAI/bge-small-en-v1.5 is currently loading",
            "estimated_time": 3.5,
        }
    hf_server.state.loading = False
    hf_server.state.add_fault("loading", estimated_time=1.0)
    async with http.post(url, json={"inputs": "x"}) as r:
        assert r.status == 503 and (await r.json())["estimated_time"] == 1.0
    hf_server.state.api_key = "hf_x"
    async with http.post(url, json={"inputs": "x"}, headers={"Authorization": "Bearer bad"}) as r:
        assert r.status == 401
        assert await r.json() == {"error": "Invalid credentials in Authorization header"}


async def test_tgi_generate(hf_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{hf_server.url}/info") as r:
        info = await r.json()
    assert {"model_id", "max_input_tokens", "max_total_tokens"} <= info.keys()
    async with http.get(f"{hf_server.url}/health") as r:
        assert r.status == 200
    req = {"inputs": "hi there", "parameters": {"max_new_tokens": 2, "details": True, "seed": 7}}
    async with http.post(f"{hf_server.url}/generate", json=req) as r:
        body = await r.json()
    assert body["generated_text"] == "Echo: hi"
    assert body["details"]["finish_reason"] == "length"
    assert body["details"]["generated_tokens"] == 2 and body["details"]["seed"] == 7
    async with http.post(
        f"{hf_server.url}/generate", json={"inputs": "a b c", "parameters": {"stop": ["b"]}}
    ) as r:
        assert (await r.json())["generated_text"] == "Echo: a b"
    async with http.post(f"{hf_server.url}/generate", json={"inputs": ""}) as r:
        assert r.status == 422
        assert (await r.json())["error_type"] == "validation"
    hf_server.state.healthy = False
    async with http.get(f"{hf_server.url}/health") as r:
        assert r.status == 503


async def test_tgi_generate_stream(hf_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{hf_server.url}/generate_stream", json={"inputs": "hi there"}) as r:
        assert r.content_type == "text/event-stream"
        events = [orjson.loads(e) for e in sse_events(await r.text())]
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["generated_text"] == "Echo: hi there"
    assert last["details"]["finish_reason"] == "eos_token"
    assert last["token"]["special"] is True
    text = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert text == "Echo: hi there"
    hf_server.state.add_fault("truncate_stream", after=1)
    async with http.post(f"{hf_server.url}/generate_stream", json={"inputs": "hi there"}) as r:
        events = [orjson.loads(e) for e in sse_events(await r.text())]
    assert len(events) == 1 and events[0]["generated_text"] is None


async def test_hub_api(hf_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    url = f"{hf_server.url}/api/models"
    async with http.get(url, params={"search": "llama", "limit": "5"}) as r:
        assert [m["id"] for m in await r.json()] == ["meta-llama/Llama-3.1-8B-Instruct"]
    async with http.get(url, params={"author": "BAAI"}) as r:
        assert [m["id"] for m in await r.json()] == ["BAAI/bge-small-en-v1.5"]
    async with http.get(
        url, params={"pipeline_tag": "text-generation", "sort": "downloads", "direction": "-1"}
    ) as r:
        ids = [m["id"] for m in await r.json()]
    assert ids[0] == "openai-community/gpt2" and len(ids) == 3
    async with http.get(url, params={"filter": "feature-extraction"}) as r:
        assert len(await r.json()) == 2
    async with http.get(url, params={"limit": "2"}) as r:
        page = await r.json()
        link = r.headers["Link"]
    assert len(page) == 2 and 'rel="next"' in link and "siblings" not in page[0]
    next_url = link[1 : link.index(">")]
    async with http.get(next_url) as r:
        assert len(await r.json()) == 2
    async with http.get(f"{url}/Qwen/Qwen2.5-0.5B-Instruct") as r:
        info = await r.json()
    assert info["id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert {"sha", "siblings", "tags", "pipeline_tag", "library_name", "cardData"} <= info.keys()
    async with http.get(f"{url}/nobody/nothing") as r:
        assert r.status == 404
        assert await r.json() == {"error": "Repository not found"}


async def test_tgi_only_app(tgi_server: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{tgi_server.url}/info") as r:
        assert r.status == 200
    async with http.get(f"{tgi_server.url}/api/models") as r:
        assert r.status == 404
