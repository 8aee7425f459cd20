"""OpenAILLM against a real llama.cpp ``llama-server`` (shared session servers).

The chat model is a tiny random Llama: its text is gibberish, so the tests check the wire
behaviour (lengths, finish reasons, usage, tool-call and JSON structure, reproducibility,
errors), and compare streamed with non-streamed results of the same greedy call.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, Field

from llmkit import ContextLengthError, LLMConfig, LLMError, Message, OpenAILLM, ToolCall
from tests.conformance.llama_server import LlamaServer

GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 24}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class City(BaseModel):
    city: str = Field(max_length=24)


def llm_for(server: LlamaServer, model: str = "tiny-chat", **config: Any) -> OpenAILLM:
    return OpenAILLM(
        LLMConfig(provider="openai", model=model, base_url=server.url + "/v1",
                  **{"timeout": 30.0, "max_retries": 0, **config})
    )


def forced_tool_options(brace_token: int) -> dict[str, Any]:
    """How shared/servers/README.md makes the random model call a tool."""
    return {
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "logit_bias": {str(brace_token): 100},
        "parallel_tool_calls": False,
        "temperature": 0.0,
        "max_tokens": 200,
    }


async def test_generate_and_chat_agree(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        text = await llm.generate("Tell me about llamas.", **GREEDY)
        response = await llm.chat("Tell me about llamas.", **GREEDY)
    assert text and text == response.content
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == GREEDY["max_tokens"]
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.model == "tiny-chat"
    assert response.raw["object"] == "chat.completion"


async def test_generate_stream_matches_generate_and_counts_usage(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        whole = await llm.generate("Stream me something.", **GREEDY)
        before = llm.get_token_usage()
        deltas = [d async for d in llm.generate_stream("Stream me something.", **GREEDY)]
        after = llm.get_token_usage()
    assert len(deltas) > 1
    assert "".join(deltas) == whole
    assert after.completion_tokens - before.completion_tokens == GREEDY["max_tokens"]
    assert after.prompt_tokens > before.prompt_tokens


async def test_chat_stream_finish_reason_and_usage(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        whole = await llm.chat("Stream a chat.", **GREEDY)
        chunks = [c async for c in llm.chat_stream("Stream a chat.", **GREEDY)]
    assert "".join(c.delta for c in chunks) == whole.content
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert last.usage.completion_tokens == GREEDY["max_tokens"]
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_forced_tool_call(llama_chat: LlamaServer, brace_token: int) -> None:
    async with llm_for(llama_chat) as llm:
        response = await llm.chat("Weather in Paris?", **forced_tool_options(brace_token))
    assert response.finish_reason == "tool_calls"
    assert len(response.tool_calls) == 1
    call = response.tool_calls[0]
    assert call.name == "get_weather"
    assert call.id
    assert isinstance(call.arguments.get("city"), str)
    raw_args = response.raw["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert call.arguments == orjson.loads(raw_args)


async def test_forced_tool_call_stream_assembles_the_same_call(
    llama_chat: LlamaServer, brace_token: int
) -> None:
    options = forced_tool_options(brace_token)
    async with llm_for(llama_chat) as llm:
        whole = await llm.chat("Weather in Paris?", **options)
        chunks = [c async for c in llm.chat_stream("Weather in Paris?", **options)]
    assert sum(len(c.tool_calls) for c in chunks) > 1  # the call came in several deltas
    finishing = [c for c in chunks if c.finish_reason]
    assert [c.finish_reason for c in finishing] == ["tool_calls"]
    calls = finishing[0].completed_tool_calls
    assert calls is not None and len(calls) == 1
    assert (calls[0].name, calls[0].arguments) == (
        whole.tool_calls[0].name, whole.tool_calls[0].arguments
    )
    assert finishing[0].usage is not None
    assert finishing[0].usage.completion_tokens == whole.usage.completion_tokens


async def test_tool_result_round_trip(llama_chat: LlamaServer, brace_token: int) -> None:
    async with llm_for(llama_chat) as llm:
        first = await llm.chat("Weather in Paris?", **forced_tool_options(brace_token))
        call = first.tool_calls[0]
        history = [
            Message(role="user", content="Weather in Paris?"),
            Message(role="assistant", content="",
                    tool_calls=[ToolCall(id=call.id, name=call.name, arguments=call.arguments)]),
            Message(role="tool", content='{"temperature_c": 21}', tool_call_id=call.id),
        ]
        answer = await llm.chat(history, tools=[WEATHER_TOOL], **GREEDY)
    assert answer.finish_reason == "length"
    assert answer.content
    assert not answer.tool_calls
    # the template rendered the call and its result into the prompt
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens


async def test_response_format_pydantic_class(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        response = await llm.chat("Which city?", response_format=City,
                                  temperature=0.0, max_tokens=200)
    assert response.finish_reason == "stop"
    assert isinstance(response.parsed, City)
    assert response.parsed == City.model_validate_json(response.content)


async def test_response_format_json_object(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        response = await llm.chat("weather in Paris?", response_format={"type": "json_object"},
                                  temperature=0.0, max_tokens=200)
    assert response.finish_reason == "stop"
    assert isinstance(orjson.loads(response.content), dict)


async def test_embed_and_embed_batch(llama_embed: LlamaServer) -> None:
    async with llm_for(llama_embed, model="minilm") as llm:
        single = await llm.embed("The cat sits on the mat.")
        batch = await llm.embed_batch(["The cat sits on the mat.", "Stock prices fell today."])
    assert len(single) == 384
    assert [len(v) for v in batch] == [384, 384]
    assert math.isclose(math.hypot(*single), 1.0, abs_tol=1e-3)
    assert _cosine(single, batch[0]) > 0.999
    assert _cosine(batch[0], batch[1]) < 0.9


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


async def test_list_models(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        models = await llm.list_models()
    assert [m["id"] for m in models] == ["tiny-chat"]
    assert models[0]["object"] == "model"


async def test_create_chat_completion_raw(llama_chat: LlamaServer) -> None:
    request = {"messages": [{"role": "user", "content": "Raw request."}], **GREEDY}
    async with llm_for(llama_chat) as llm:
        whole = await llm.create_chat_completion(request)
        stream = await llm.create_chat_completion({**request, "stream": True})
        chunks = [c async for c in stream]
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == GREEDY["max_tokens"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


async def test_max_tokens_one(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        response = await llm.chat("One token please.", temperature=0.0, max_tokens=1)
    assert response.usage.completion_tokens == 1
    assert response.finish_reason == "length"


async def test_stop_sequence(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        free = await llm.generate("Say something.", temperature=0.0, max_tokens=48)
        words = free.split()
        stop = next(w for w in words[2:] if free.index(w) > 0)
        cut = await llm.chat("Say something.", temperature=0.0, max_tokens=48, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.content == free[: free.index(stop)]


async def test_seed_reproducibility(llama_chat: LlamaServer) -> None:
    sampled = {"temperature": 1.0, "max_tokens": 24}
    async with llm_for(llama_chat) as llm:
        first = await llm.generate("Be random.", seed=1234, **sampled)
        again = await llm.generate("Be random.", seed=1234, **sampled)
        others = {await llm.generate("Be random.", seed=s, **sampled) for s in (1, 2, 3)}
    assert first == again
    assert len(others | {first}) > 1  # the seed matters: sampling is really random


async def test_prompt_longer_than_context(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        with pytest.raises(ContextLengthError) as info:
            await llm.generate("llama " * 3000, max_tokens=4)
    assert info.value.status == 400
    assert "context" in info.value.message


async def test_model_info_context_length_from_server(llama_chat: LlamaServer) -> None:
    props = llama_chat.get_json("/props")
    assert isinstance(props, dict)
    n_ctx = props["default_generation_settings"]["n_ctx"]
    assert n_ctx == 2048  # -c 8192 shared by 4 slots
    async with llm_for(llama_chat) as llm:
        await llm.health_check()
        assert llm.get_model_info().context_length == n_ctx


async def test_health_check_healthy(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        assert await llm.health_check() is None


async def test_batch_generate_matches_sequential_calls(llama_chat: LlamaServer) -> None:
    prompts = [f"Prompt number {i}." for i in range(8)]
    async with llm_for(llama_chat) as llm:
        one_by_one = [await llm.generate(p, **GREEDY) for p in prompts]
        batched = await llm.batch_generate(prompts, concurrency=4, temperature=0.0, max_tokens=24)
    assert batched == one_by_one  # the server's 4 slots in parallel, order kept
    assert len(set(batched)) > 1


async def test_logprobs_are_returned(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        response = await llm.chat("Two tokens.", temperature=0.0, max_tokens=2,
                                  logprobs=True, top_logprobs=2)
    raw = response.raw["choices"][0]["logprobs"]["content"]
    assert len(raw) == 2
    assert response.logprobs == raw


async def test_raw_completion_usage_is_counted(llama_chat: LlamaServer) -> None:
    request = {"messages": [{"role": "user", "content": "Count me."}], **GREEDY}
    async with llm_for(llama_chat) as llm:
        whole = await llm.create_chat_completion(request)
        stream = await llm.create_chat_completion(
            {**request, "stream": True, "stream_options": {"include_usage": True}}
        )
        assert [c async for c in stream]
        usage = llm.get_token_usage()
    assert usage.completion_tokens == 2 * whole["usage"]["completion_tokens"]


async def test_embedding_input_longer_than_the_batch_is_a_clear_error(
    llama_embed: LlamaServer,
) -> None:
    """llama.cpp answers 500 "input (N tokens) is too large to process" (README): a typed
    error naming the cause, not a hang."""
    async with llm_for(llama_embed, model="minilm", max_retries=1) as llm:
        with pytest.raises(LLMError) as info:
            await llm.embed("word " * 900)
    assert "too large" in info.value.message
    assert info.value.status == 500


async def test_request_after_a_stream_is_resent_on_a_stale_pooled_connection(
    llama_chat: LlamaServer,
) -> None:
    """llama-server closes the connection after a streamed reply without saying so; the next
    request on that pooled connection fails while its body is written. The server never saw
    it, so it is resent once even with max_retries=0 (as httpx and urllib3 do)."""
    async with llm_for(llama_chat) as llm:  # max_retries=0
        for _ in range(12):
            async for _delta in llm.generate_stream("hello", max_tokens=4):
                pass
            assert await llm.generate("hi", max_tokens=2)
        metrics = llm.get_metrics()
    assert metrics.failures == 0 and metrics.retries == 0
