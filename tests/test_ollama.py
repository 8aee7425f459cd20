"""OllamaLLM against the local Ollama test server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

import llmkit
from llmkit import (
    ChatResponse,
    InvalidRequestError,
    LLMConnectionError,
    Message,
    ModelNotFoundError,
    ServerError,
    StreamError,
)
from llmkit.providers.ollama.client import OllamaLLM
from tests.servers import ServerHandle


@pytest.fixture
async def llm(ollama_server: ServerHandle) -> AsyncIterator[OllamaLLM]:
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, max_retries=0) as client:
        yield client


def last_body(server: ServerHandle, path: str = "/api/chat") -> dict[str, Any]:
    body = server.state.requests_to(path)[-1].json
    assert isinstance(body, dict)
    return body


class City(BaseModel):
    name: str
    population: int


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


# --------------------------------------------------------------------------- chat


async def test_chat_non_streamed(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    response = await llm.chat("hello there friend")
    assert isinstance(response, ChatResponse)
    assert response.content == "Echo: hello there friend"
    assert response.finish_reason == "stop"
    assert response.model == "llama3.2"
    assert response.usage.prompt_tokens == 3
    assert response.usage.completion_tokens == 4
    assert response.usage.total_tokens == 7
    assert response.raw["done"] is True
    req = ollama_server.state.requests_to("/api/chat")[-1]
    assert req.method == "POST"
    assert req.json["stream"] is False
    assert req.json["model"] == "llama3.2"
    assert req.json["messages"] == [{"role": "user", "content": "hello there friend"}]
    assert req.authorization is None


async def test_generate_returns_text_and_accepts_dicts(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    text = await llm.generate(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping now"}]
    )
    assert text == "Echo: ping now"
    body = last_body(ollama_server)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert llm.get_token_usage().completion_tokens == 3


async def test_options_mapping(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat(
        "hi",
        max_tokens=77,
        temperature=0.2,
        top_p=0.5,
        stop="END",
        seed=42,
        num_ctx=2048,
        top_k=20,
        repeat_penalty=1.1,
        min_p=0.05,
        mirostat=2,
        keep_alive="10m",
        think=True,
        format="json",
    )
    body = last_body(ollama_server)
    assert body["options"] == {
        "num_predict": 77,
        "temperature": 0.2,
        "top_p": 0.5,
        "stop": ["END"],
        "seed": 42,
        "num_ctx": 2048,
        "top_k": 20,
        "repeat_penalty": 1.1,
        "min_p": 0.05,
        "mirostat": 2,
    }
    assert body["keep_alive"] == "10m"
    assert body["think"] is True
    assert body["format"] == "json"
    assert "max_tokens" not in body and "max_tokens" not in body["options"]


async def test_config_defaults_and_extra_options(ollama_server: ServerHandle) -> None:
    config = llmkit.LLMConfig(
        provider="ollama",
        model="llama3.2",
        base_url=ollama_server.url,
        max_tokens=33,
        temperature=0.1,
        top_p=0.8,
        extra={"options": {"num_ctx": 8192, "temperature": 0.4}, "keep_alive": -1},
    )
    async with OllamaLLM(config) as llm:
        await llm.chat("hi")
        body = last_body(ollama_server)
        # config.extra options beat the config defaults ...
        assert body["options"] == {"num_predict": 33, "temperature": 0.4, "top_p": 0.8, "num_ctx": 8192}
        assert body["keep_alive"] == -1
        # ... and per-call options beat both; options= merges last
        await llm.chat("hi", temperature=0.9, keep_alive="1m", options={"num_ctx": 512})
        body = last_body(ollama_server)
        assert body["options"]["temperature"] == 0.9
        assert body["options"]["num_ctx"] == 512
        assert body["keep_alive"] == "1m"


async def test_num_predict_truncates_with_length_reason(llm: OllamaLLM) -> None:
    response = await llm.chat("one two three four five", max_tokens=2)
    assert response.content == "Echo: one"
    assert response.finish_reason == "length"


async def test_invalid_option_rejected_before_request(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    with pytest.raises(InvalidRequestError, match="temperature"):
        await llm.chat("hi", temperature=5)
    assert ollama_server.state.request_count == 0


# --------------------------------------------------------------------------- streaming


async def test_generate_stream_ndjson(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    deltas = [d async for d in llm.generate_stream("stream these words please")]
    assert len(deltas) > 1
    assert "".join(deltas) == "Echo: stream these words please"
    assert last_body(ollama_server)["stream"] is True
    assert llm.get_token_usage().completion_tokens == 5
    assert llm.get_token_usage().prompt_tokens == 4


async def test_chat_stream_usage_and_finish(llm: OllamaLLM) -> None:
    chunks = [c async for c in llm.chat_stream("count my words")]
    text = "".join(c.delta for c in chunks)
    assert text == "Echo: count my words"
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 4)
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    assert llm.get_token_usage().total_tokens == 7


async def test_stream_error_line_after_deltas(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.add_fault("error_event", path="/api/chat", after=2, message="model crashed")
    got: list[str] = []
    with pytest.raises(StreamError, match="model crashed") as info:
        async for delta in llm.generate_stream("one two three four"):
            got.append(delta)
    assert got == ["Echo:", " one"]
    assert info.value.provider == "ollama"


async def test_truncated_stream_raises(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.add_fault("truncate_stream", path="/api/chat", after=2)
    chunks = []
    with pytest.raises(StreamError, match="truncated"):
        async for chunk in llm.chat_stream("one two three four"):
            chunks.append(chunk)
    assert [c.delta for c in chunks] == ["Echo:", " one"]
    assert all(c.finish_reason is None for c in chunks)


async def test_malformed_line_raises(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.add_fault("malformed_line", path="/api/chat", after=1)
    with pytest.raises(StreamError, match="malformed"):
        async for _ in llm.generate_stream("one two"):
            pass


async def test_stream_reset_before_headers_is_connection_error(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.add_fault("reset_before_headers", path="/api/chat")
    with pytest.raises(LLMConnectionError):
        async for _ in llm.generate_stream("hi"):
            pass


async def test_early_break_releases_connection(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    async for _ in llm.generate_stream("one two three four five"):
        break
    # the instance stays usable and the connection pool is not exhausted
    assert await llm.generate("after break") == "Echo: after break"


async def test_think_stream_carries_thinking_in_raw(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    chunks = [c async for c in llm.chat_stream("hi", think=True)]
    thinking = "".join((c.raw or {}).get("message", {}).get("thinking", "") for c in chunks)
    assert thinking == "Thinking about the request."
    assert "".join(c.delta for c in chunks) == "Echo: hi"
    assert last_body(ollama_server)["think"] is True


# --------------------------------------------------------------------------- errors


async def test_unknown_model_404(ollama_server: ServerHandle) -> None:
    async with OllamaLLM(model="nope-model", base_url=ollama_server.url, max_retries=0) as llm:
        with pytest.raises(ModelNotFoundError, match="nope-model") as info:
            await llm.chat("hi")
        assert info.value.status == 404
        with pytest.raises(ModelNotFoundError, match="nope-model"):
            async for _ in llm.chat_stream("hi"):
                pass
        with pytest.raises(ModelNotFoundError, match="nope-model"):
            await llm.embed("x")
        with pytest.raises(ModelNotFoundError, match="ghost"):
            await llm.show_model("ghost")


async def test_server_error_typed_and_retried(ollama_server: ServerHandle) -> None:
    ollama_server.state.add_fault("status", status=500, path="/api/chat")
    async with OllamaLLM(
        model="llama3.2", base_url=ollama_server.url, max_retries=1,
        extra={"retry_initial_delay": 0.01},
    ) as llm:
        assert await llm.generate("again") == "Echo: again"
    assert len(ollama_server.state.requests_to("/api/chat")) == 2
    ollama_server.state.add_fault("status", status=500, path="/api/chat", message="boom")
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, max_retries=0) as llm:
        with pytest.raises(ServerError, match="boom") as info:
            await llm.generate("x")
        assert info.value.status == 500


async def test_bad_request_is_invalid_request(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    with pytest.raises(InvalidRequestError, match="does not support chat"):
        await llm.chat("hi", model="nomic-embed-text")


# --------------------------------------------------------------------------- tools


async def test_tools_non_streamed(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.tool_arguments = {"city": "Paris", "unit": "celsius"}
    response = await llm.chat("weather in Paris?", tools=[get_weather])
    assert len(response.tool_calls) == 1
    call = response.tool_calls[0]
    assert call.name == "get_weather"
    assert call.arguments == {"city": "Paris", "unit": "celsius"}
    assert call.id
    tools = last_body(ollama_server)["tools"]
    assert tools[0]["type"] == "function"
    assert tools[0]["function"]["name"] == "get_weather"
    assert tools[0]["function"]["parameters"]["required"] == ["city"]

    # send the result back: the assistant call and the tool result map to Ollama's fields
    follow = await llm.chat(
        [
            {"role": "user", "content": "weather in Paris?"},
            Message("assistant", "", tool_calls=[call]),
            Message("tool", "sunny", tool_call_id=call.id),
        ],
        tools=[get_weather],
    )
    assert follow.tool_calls == []
    msgs = last_body(ollama_server)["messages"]
    assert msgs[1]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}
    }
    assert msgs[2]["tool_name"] == "get_weather"
    assert msgs[2]["content"] == "sunny"


async def test_tool_choice_none_and_named(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat("hi", tools=[get_weather, City], tool_choice="none")
    assert "tools" not in last_body(ollama_server)
    await llm.chat("hi", tools=[get_weather, City], tool_choice="City")
    assert [t["function"]["name"] for t in last_body(ollama_server)["tools"]] == ["City"]


async def test_tools_streamed(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.tool_arguments = {"name": "Oslo", "population": 700000}
    chunks = [c async for c in llm.chat_stream("make a city", tools=[City])]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert len(deltas) == 1
    assert deltas[0].name == "City"
    assert deltas[0].index == 0
    final = chunks[-1]
    assert final.finish_reason == "tool_calls"  # normalised; done_reason "stop" stays in raw
    assert final.raw is not None and final.raw["done_reason"] == "stop"
    assert final.completed_tool_calls is not None
    assert final.completed_tool_calls[0].arguments == {"name": "Oslo", "population": 700000}
    assert final.usage is not None and final.usage.completion_tokens >= 1


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("form", ["hostport", "scheme", "any"])
async def test_ollama_host_forms(
    ollama_server: ServerHandle, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    port = ollama_server.url.rsplit(":", 1)[1]
    value = {"hostport": f"127.0.0.1:{port}", "scheme": f"http://127.0.0.1:{port}/", "any": f"0.0.0.0:{port}"}[form]
    monkeypatch.delenv("OLLAMA_BASE_URL", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", value)
    async with OllamaLLM(model="llama3.2") as llm:
        assert llm.get_model_info().base_url == f"http://127.0.0.1:{port}"
        assert await llm.get_version() == "0.12.0"


def test_ollama_host_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_BASE_URL", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box")
    assert OllamaLLM(model="m")._http.base_url == "http://gpu-box:11434"
    monkeypatch.setenv("OLLAMA_HOST", "https://ollama.example.com")
    assert OllamaLLM(model="m")._http.base_url == "https://ollama.example.com:443"
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://base:1234")
    assert OllamaLLM(model="m")._http.base_url == "http://base:1234"
    assert OllamaLLM(model="m", base_url="http://explicit:9")._http.base_url == "http://explicit:9"
    assert OllamaLLM(model="m", base_url="bare-host")._http.base_url == "http://bare-host:11434"
    monkeypatch.delenv("OLLAMA_BASE_URL")
    monkeypatch.delenv("OLLAMA_HOST")
    assert OllamaLLM(model="m")._http.base_url == "http://localhost:11434"


async def test_api_key_bearer_when_configured(ollama_server: ServerHandle) -> None:
    ollama_server.state.api_key = "proxy-secret-123"
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, api_key="proxy-secret-123") as llm:
        assert await llm.generate("hi") == "Echo: hi"
    assert ollama_server.state.last_request.authorization == "Bearer proxy-secret-123"


async def test_keep_alive_unloads(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat("hi", keep_alive="5m")
    assert [m["name"] for m in await llm.list_running()] == ["llama3.2:latest"]
    await llm.chat("bye", keep_alive=0)
    assert last_body(ollama_server)["keep_alive"] == 0
    assert await llm.list_running() == []


async def test_health_check(llm: OllamaLLM, ollama_server: ServerHandle, refused_url: str) -> None:
    await llm.health_check()
    assert ollama_server.state.last_request.path == "/api/version"
    ollama_server.state.add_fault("status", status=503, path="/api/version")
    with pytest.raises(ServerError):
        await llm.health_check()
    async with OllamaLLM(model="llama3.2", base_url=refused_url, max_retries=0) as down:
        with pytest.raises(LLMConnectionError):
            await down.health_check()


async def test_factory_builds_ollama(ollama_server: ServerHandle) -> None:
    llm = llmkit.create_llm({"provider": "ollama", "model": "llama3.2", "base_url": ollama_server.url})
    try:
        assert isinstance(llm, OllamaLLM)
        assert llm.provider == "ollama"
        results = await llm.batch_generate(["a", "b", "c"])
        assert results == ["Echo: a", "Echo: b", "Echo: c"]
    finally:
        await llm.close()


def test_import_llmkit_stays_light() -> None:
    code = (
        "import sys, llmkit; llmkit.OllamaLLM; "
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'ollama') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
