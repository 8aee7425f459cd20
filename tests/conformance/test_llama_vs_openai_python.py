"""OpenAILLM side by side with the official openai-python client (``bench`` extra) on the
same llama-server: the same call must give the same content, usage and finish reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conformance.llama_server import LlamaServer
from tests.conformance.test_llama_openai import llm_for

openai = pytest.importorskip("openai", reason="openai-python is in the dev extra")

MESSAGES = [{"role": "user", "content": "Compare the two clients."}]
# With the server's defaults a reply runs until the context is full: a prompt that fills
# most of the 2048-token slot keeps that short.
FILLED = [{"role": "user", "content": "Compare the two clients. " * 228}]


@pytest.fixture
async def official(llama_chat: LlamaServer) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(base_url=llama_chat.url + "/v1", api_key="none", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def test_same_greedy_chat(llama_chat: LlamaServer, official: Any) -> None:
    theirs = await official.chat.completions.create(
        model="tiny-chat", messages=MESSAGES, temperature=0.0, max_tokens=32
    )
    async with llm_for(llama_chat) as llm:
        ours = await llm.chat(MESSAGES, temperature=0.0, max_tokens=32)
    assert ours.content == theirs.choices[0].message.content
    assert ours.finish_reason == theirs.choices[0].finish_reason == "length"
    assert (ours.usage.prompt_tokens, ours.usage.completion_tokens, ours.usage.total_tokens) == (
        theirs.usage.prompt_tokens, theirs.usage.completion_tokens, theirs.usage.total_tokens
    )


async def test_same_greedy_stream(llama_chat: LlamaServer, official: Any) -> None:
    stream = await official.chat.completions.create(
        model="tiny-chat", messages=MESSAGES, temperature=0.0, max_tokens=32, stream=True,
        stream_options={"include_usage": True},
    )
    their_text, their_finish, their_usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            their_text += chunk.choices[0].delta.content or ""
            their_finish = chunk.choices[0].finish_reason or their_finish
        if chunk.usage is not None:
            their_usage = chunk.usage
    async with llm_for(llama_chat) as llm:
        chunks = [c async for c in llm.chat_stream(MESSAGES, temperature=0.0, max_tokens=32)]
    assert "".join(c.delta for c in chunks) == their_text
    assert chunks[-1].finish_reason == their_finish == "length"
    usage = chunks[-1].usage
    assert usage is not None and their_usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        their_usage.prompt_tokens, their_usage.completion_tokens
    )


async def test_server_default_sampling_is_reproducible(official: Any) -> None:
    """The control for the next test: with only a seed set, the server's default sampling
    gives the same reply twice."""
    first = await official.chat.completions.create(model="tiny-chat", messages=FILLED, seed=7)
    again = await official.chat.completions.create(model="tiny-chat", messages=FILLED, seed=7)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.prompt_tokens > 1800
    assert first.usage.completion_tokens > 32  # the default has no small length limit


async def test_server_default_sampling_is_left_alone(llama_chat: LlamaServer, official: Any) -> None:
    # Only the seed is set: everything else is llama-server's default (temperature 0.8,
    # top_p 0.95, no length limit but the context), so both clients must get the same text.
    theirs = await official.chat.completions.create(model="tiny-chat", messages=FILLED, seed=7)
    async with llm_for(llama_chat) as llm:
        ours = await llm.chat(FILLED, seed=7)
    assert ours.content == theirs.choices[0].message.content
    assert ours.usage.completion_tokens == theirs.usage.completion_tokens
