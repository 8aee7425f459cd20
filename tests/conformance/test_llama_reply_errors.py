"""Against a real llama.cpp ``llama-server``, with openai-python side by side: tool
arguments kept as the server sent them, a structured reply cut by the token limit,
an embedding input too large to process, and ``top_k`` (which llama.cpp takes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from llmkit import ContextLengthError, ReplyTruncatedError
from tests.conformance.llama_server import LlamaServer
from tests.conformance.test_llama_openai import WEATHER_TOOL, City, llm_for

openai = pytest.importorskip("openai", reason="openai-python is in the dev extra")

MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
async def official(llama_chat: LlamaServer) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(base_url=llama_chat.url + "/v1", api_key="none", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def test_tool_arguments_are_the_text_the_server_sent(
    llama_chat: LlamaServer, brace_token: int, official: Any
) -> None:
    # logit_bias with an int key, as openai-python takes it
    options: dict[str, Any] = {
        "tool_choice": "required", "logit_bias": {brace_token: 100},
        "parallel_tool_calls": False, "temperature": 0.0, "max_tokens": 200,
    }
    theirs = await official.chat.completions.create(
        model="tiny-chat", messages=MESSAGES, tools=[WEATHER_TOOL], **options
    )
    async with llm_for(llama_chat) as llm:
        ours = await llm.chat(MESSAGES, tools=[WEATHER_TOOL], **options)
    (their_call,) = theirs.choices[0].message.tool_calls
    (call,) = ours.tool_calls
    assert call.raw_arguments == their_call.function.arguments
    decoded = orjson.loads(call.raw_arguments)
    assert isinstance(decoded, dict)
    assert (call.arguments, call.arguments_error) == (decoded, None)


async def test_a_structured_reply_cut_by_max_tokens_is_reply_truncated(
    llama_chat: LlamaServer, official: Any
) -> None:
    async with llm_for(llama_chat) as llm:
        with pytest.raises(ReplyTruncatedError) as info:
            await llm.chat("Which city?", response_format=City, temperature=0.0, max_tokens=3)
        usage = llm.get_token_usage()
    response = info.value.response
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == 3 == usage.completion_tokens
    # the grammar lets the random model start with whitespace: 3 tokens hold no whole City
    with pytest.raises(openai.LengthFinishReasonError) as theirs:
        await official.chat.completions.parse(
            model="tiny-chat", messages=[{"role": "user", "content": "Which city?"}],
            response_format=City, temperature=0.0, max_tokens=3,
        )
    assert theirs.value.completion.choices[0].message.content == response.content
    assert theirs.value.completion.usage.completion_tokens == 3


async def test_embedding_input_too_large_is_context_length_and_not_retried(
    llama_embed: LlamaServer,
) -> None:
    async with llm_for(llama_embed, model="minilm", max_retries=2) as llm:
        with pytest.raises(ContextLengthError) as info:
            await llm.embed("word " * 900)
        metrics = llm.get_metrics()
    assert "too large to process" in info.value.message
    assert info.value.status == 500
    assert metrics.retries == 0 and metrics.requests == 1


async def test_top_k_is_taken_by_llama_cpp(llama_chat: LlamaServer, official: Any) -> None:
    """top_k=1 makes sampling at temperature 1 pick the most likely token: the greedy text."""
    prompt = [{"role": "user", "content": "Tell me about llama.cpp"}]
    async with llm_for(llama_chat) as llm:
        greedy = await llm.chat(prompt, temperature=0.0, max_tokens=24)
        top1 = await llm.chat(prompt, temperature=1.0, top_k=1, seed=3, max_tokens=24)
    theirs = await official.chat.completions.create(
        model="tiny-chat", messages=prompt, temperature=1.0, seed=3, max_tokens=24,
        extra_body={"top_k": 1},
    )
    assert top1.content == greedy.content == theirs.choices[0].message.content
