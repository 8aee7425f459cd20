"""What a newcomer runs into with OpenAI-compatible servers, against the strict test
servers (openai-python side by side where it has an answer): parallel tool calls streamed
whole under ``index: 0`` (Ollama's OpenAI-compatible endpoint), ``logit_bias`` with int
keys and values JSON cannot encode, no API key for api.openai.com (library and CLI), the
error's ``param``, and llama.cpp's 500 for an input too large to process."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from llmkit import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    LLMConfig,
    OllamaLLM,
    OpenAILLM,
    ToolCall,
    create_llm,
)
from tests.servers import OLLAMA_OPENAI_DIALECT, ServerHandle, ServerState, serve_openai
from tests.test_cli import _env, cli, one_error_line

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PARIS_ROME = [{"city": "Paris"}, {"city": "Rome"}]


def llm_for(server: ServerHandle, **config: Any) -> OpenAILLM:
    settings: dict[str, Any] = {"api_key": "none", "max_retries": 0, **config}
    return OpenAILLM(LLMConfig(provider="openai", model="gpt-4o-mini", base_url=server.url,
                               **settings))


def _calls(chunks: list[Any]) -> list[ToolCall]:
    return [tc for c in chunks for tc in c.completed_tool_calls or ()]


# ----------------------------------------------------------------------- parallel tool calls


@pytest.mark.parametrize("dialect", [None, OLLAMA_OPENAI_DIALECT], ids=["indexed", "index0"])
async def test_parallel_tool_calls_stay_apart(dialect: Any) -> None:
    """OpenAI streams parallel calls at indexes 0, 1; Ollama's OpenAI endpoint sends each
    call whole under index 0 with its own id. Both give two calls, streamed or not."""
    state = ServerState(parallel_tool_arguments=PARIS_ROME)
    async with serve_openai(state, dialect) as srv, llm_for(srv) as llm:
        chunks = [c async for c in llm.chat_stream("Weather?", tools=[WEATHER])]
        whole = await llm.chat("Weather?", tools=[WEATHER])
    for calls in (_calls(chunks), whole.tool_calls):
        assert [(c.name, c.arguments) for c in calls] == [
            ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})
        ]
        assert len({c.id for c in calls}) == 2
        assert all(c.arguments_error is None for c in calls)
    assert [c.raw_arguments for c in _calls(chunks)] == ['{"city":"Paris"}', '{"city":"Rome"}']
    assert chunks[-1].finish_reason == "tool_calls"


async def test_openai_python_merges_calls_streamed_under_index_0() -> None:
    """openai-python's stream helper joins deltas by index: the two calls become one."""
    state = ServerState(parallel_tool_arguments=PARIS_ROME)
    async with serve_openai(state, OLLAMA_OPENAI_DIALECT) as srv:
        client = openai.AsyncOpenAI(base_url=srv.url, api_key="none", max_retries=0)
        async with client, client.chat.completions.stream(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}],
            tools=[WEATHER],  # type: ignore[list-item]
        ) as stream:
            final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].function.arguments == '{"city":"Paris"}{"city":"Rome"}'  # type: ignore[union-attr]


async def test_a_repeated_id_at_an_index_continues_that_call() -> None:
    """A server that repeats the id on every delta of one call (some do) is one call."""
    state = ServerState(parallel_tool_arguments=[{"city": "Paris"}])
    async with serve_openai(state) as srv, llm_for(srv) as llm:
        chunks = [c async for c in llm.chat_stream("Weather?", tools=[WEATHER])]
    (call,) = _calls(chunks)
    assert call.arguments == {"city": "Paris"}


async def test_ollama_calls_carry_their_arguments_text(ollama_server: ServerHandle) -> None:
    """Ollama sends arguments as an object: raw_arguments is its JSON text, no error."""
    llm = OllamaLLM(LLMConfig(provider="ollama", model="llama3.2", base_url=ollama_server.url))
    async with llm:
        whole = await llm.chat("Weather?", tools=[WEATHER])
        chunks = [c async for c in llm.chat_stream("Weather?", tools=[WEATHER])]
    for call in (*whole.tool_calls, *_calls(chunks)):
        assert (call.arguments, call.raw_arguments) == ({"city": "text"}, '{"city":"text"}')
        assert call.arguments_error is None
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [d.arguments for d in deltas] == ['{"city":"text"}']


# ----------------------------------------------------------------------- JSON bodies


async def test_logit_bias_with_int_keys_is_sent_like_openai_python(
    openai_server: ServerHandle,
) -> None:
    async with llm_for(openai_server) as llm:
        await llm.chat("hi", logit_bias={2204: 100, "50256": -100})
    ours = openai_server.state.last_request.json["logit_bias"]
    client = openai.AsyncOpenAI(base_url=openai_server.url, api_key="none", max_retries=0)
    async with client:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            logit_bias={2204: 100, "50256": -100},  # type: ignore[dict-item]
        )
    assert ours == openai_server.state.last_request.json["logit_bias"] == {
        "2204": 100, "50256": -100
    }


@pytest.mark.parametrize(
    "options",
    [{"logit_bias": {(1, 2): 5}}, {"extra_body": {"x": object()}},
     {"extra_body": {"n": 2**70}}],
    ids=["tuple-key", "object", "huge-int"],
)
async def test_a_value_json_cannot_encode_is_invalid_request(
    openai_server: ServerHandle, options: dict[str, Any]
) -> None:
    async with llm_for(openai_server) as llm:
        with pytest.raises(InvalidRequestError) as info:
            await llm.chat("hi", **options)
        with pytest.raises(InvalidRequestError):
            async for _ in llm.chat_stream("hi", **options):
                pass
    assert "JSON" in info.value.message
    assert openai_server.state.request_count == 0


# ----------------------------------------------------------------------- missing key


async def test_no_key_for_api_openai_com_fails_before_sending(monkeypatch: Any) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm = create_llm({"provider": "openai", "model": "gpt-4o-mini"})
    async with llm:
        for call in (lambda: llm.chat("hi"), lambda: llm.embed("hi"), llm.list_models):
            with pytest.raises(AuthenticationError) as info:
                await call()
            assert "no API key: set OPENAI_API_KEY or api_key" in info.value.message
        with pytest.raises(AuthenticationError):
            async for _ in llm.generate_stream("hi"):
                pass
    assert llm.get_metrics().requests == 0


async def test_no_key_is_fine_for_a_local_server(openai_server: ServerHandle) -> None:
    llm = OpenAILLM(LLMConfig(provider="openai", model="m", base_url=openai_server.url))
    async with llm:
        assert await llm.generate("hi") == "Echo: hi"
    assert openai_server.state.last_request.authorization is None


async def test_cli_says_the_key_is_missing() -> None:
    r = await cli("generate", "--provider", "openai", "--model", "gpt-4o-mini", "hi", env=_env())
    assert r.rc != 0
    line = one_error_line(r.err)
    assert "no API key: set OPENAI_API_KEY or api_key" in line
    assert "connect" not in line


# ----------------------------------------------------------------------- errors


async def test_param_of_an_openai_error_body(openai_server: ServerHandle) -> None:
    body = {"error": {"message": "Invalid 'temperature': decimal above maximum value.",
                      "type": "invalid_request_error", "param": "temperature",
                      "code": "decimal_above_max_value"}}
    openai_server.state.add_fault("status", status=400, body=body)
    async with llm_for(openai_server) as llm:
        with pytest.raises(InvalidRequestError) as info:
            await llm.chat("hi", temperature=1.0)
    assert info.value.param == "temperature"
    assert info.value.code == "decimal_above_max_value"
    assert "param=temperature" in str(info.value)


async def test_llama_cpp_input_too_large_is_context_length_and_not_retried(
    openai_server: ServerHandle,
) -> None:
    body = {"error": {"code": 500, "type": "server_error", "message":
                      "input (900 tokens) is too large to process. increase the physical "
                      "batch size (current batch size: 512)"}}
    openai_server.state.add_fault("status", status=500, body=body, times=3)
    async with llm_for(openai_server, max_retries=2) as llm:
        with pytest.raises(ContextLengthError) as info:
            await llm.embed("word " * 900)
    assert info.value.status == 500
    assert "too large to process" in info.value.message
    assert openai_server.state.request_count == 1  # not retried
