"""The Responses API (``extra={"api": "responses"}``) against llama.cpp's ``/v1/responses``,
side by side with openai-python's ``client.responses.create`` on the same server, and
against the same prompt through chat completions (greedy: the same text).

What llama.cpp implements is a part of the API: no ``previous_response_id`` (a 400), no
reasoning token counts, no ``sequence_number`` / ``output_index`` on events, no
``function_call_arguments.done``, and ``status: "completed"`` even when the token limit cut
the reply. llmkit works with what it sends and raises what it refuses as a typed error."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
import pytest

from llmkit import InvalidRequestError, LLMTimeoutError, OpenAILLM, StreamError
from tests.conformance.llama_server import LlamaServer
from tests.conformance.test_llama_openai import WEATHER_TOOL, llm_for

openai = pytest.importorskip("openai", reason="openai-python is in the dev extra")

PROMPT = "Compare the two clients."
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 32}
# the same definition in the Responses form (what llmkit sends for WEATHER_TOOL)
RESPONSES_TOOL = {"type": "function", **WEATHER_TOOL["function"], "strict": False}


def responses_llm(server: LlamaServer) -> OpenAILLM:
    return llm_for(server, extra={"api": "responses"})


@pytest.fixture
async def official(llama_chat: LlamaServer) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(base_url=llama_chat.url + "/v1", api_key="none", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def test_same_text_and_usage(llama_chat: LlamaServer, official: Any) -> None:
    theirs = await official.responses.create(
        model="tiny-chat", input=PROMPT, temperature=0.0, max_output_tokens=32)
    async with responses_llm(llama_chat) as llm:
        ours = await llm.chat(PROMPT, **GREEDY)
    assert ours.content == theirs.output_text and ours.content
    assert ours.id is not None and ours.id.startswith("resp_") and ours.id == ours.raw["id"]
    assert (ours.usage.prompt_tokens, ours.usage.completion_tokens, ours.usage.total_tokens) == (
        theirs.usage.input_tokens, theirs.usage.output_tokens, theirs.usage.total_tokens)
    assert ours.usage.completion_tokens == 32
    # the same prompt again: llama.cpp reuses the prompt's KV cache and says so
    assert ours.usage.cached_tokens == ours.raw["usage"]["input_tokens_details"]["cached_tokens"] > 0
    # llama.cpp says "completed" although the limit cut the reply, and counts no reasoning
    assert ours.finish_reason == "stop" and theirs.status == "completed"
    assert ours.usage.reasoning_tokens == 0


async def test_same_streamed_text(llama_chat: LlamaServer, official: Any) -> None:
    events = await official.responses.create(
        model="tiny-chat", input=PROMPT, temperature=0.0, max_output_tokens=32, stream=True)
    their_text, their_usage, kinds = "", None, []
    async for event in events:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            their_text += event.delta
        elif event.type == "response.completed":
            their_usage = event.response.usage
    assert kinds[-1] == "response.completed" and their_usage is not None
    async with responses_llm(llama_chat) as llm:
        chunks = [c async for c in llm.chat_stream(PROMPT, **GREEDY)]
        text = "".join([t async for t in llm.generate_stream(PROMPT, **GREEDY)])
        total = llm.get_token_usage()
    assert "".join(c.delta for c in chunks) == their_text == text
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage is not None and last.raw is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        their_usage.input_tokens, their_usage.output_tokens)
    assert total.completion_tokens == 2 * their_usage.output_tokens  # both streams counted
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_chat_completions_agree(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as chat_api, responses_llm(llama_chat) as responses_api:
        via_chat = await chat_api.chat([{"role": "user", "content": PROMPT}], **GREEDY, seed=3)
        via_responses = await responses_api.chat([{"role": "user", "content": PROMPT}], **GREEDY, seed=3)
    assert via_responses.content == via_chat.content
    assert via_responses.usage.prompt_tokens == via_chat.usage.prompt_tokens
    assert via_responses.usage.completion_tokens == via_chat.usage.completion_tokens == 32
    assert via_chat.finish_reason == "length" and via_responses.finish_reason == "stop"


async def test_same_forced_tool_call(llama_chat: LlamaServer, official: Any, brace_token: int) -> None:
    bias = {str(brace_token): 100}
    theirs = await official.responses.create(
        model="tiny-chat", input="weather in Paris?", tools=[RESPONSES_TOOL], tool_choice="required",
        parallel_tool_calls=False, temperature=0.0, max_output_tokens=200,
        extra_body={"logit_bias": bias})
    [their_call] = [i for i in theirs.output if i.type == "function_call"]
    async with responses_llm(llama_chat) as llm:
        ours = await llm.chat("weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required",
                              parallel_tool_calls=False, temperature=0.0, max_tokens=200,
                              extra_body={"logit_bias": bias})
        chunks = [c async for c in llm.chat_stream(
            "weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required",
            parallel_tool_calls=False, temperature=0.0, max_tokens=200,
            extra_body={"logit_bias": bias})]
        [call] = ours.tool_calls
        # the call's result goes back as a function_call_output item, and the server answers
        follow = await llm.chat([
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ], tools=[WEATHER_TOOL], temperature=0.0, max_tokens=8)
    assert ours.finish_reason == "tool_calls"
    assert call.name == their_call.name == "get_weather"
    assert call.id.startswith("call_")
    [item] = [i for i in ours.raw["output"] if i["type"] == "function_call"]
    assert item["arguments"] == their_call.arguments and item["call_id"] == call.id
    assert call.arguments == orjson.loads(their_call.arguments)
    streamed = chunks[-1].completed_tool_calls
    assert streamed is not None and [c.name for c in streamed] == ["get_weather"]
    assert "".join(d.arguments for c in chunks for d in c.tool_calls) == their_call.arguments
    assert chunks[-1].finish_reason == "tool_calls"
    assert follow.usage.completion_tokens == 8 and follow.finish_reason == "stop"


async def test_previous_response_id_is_refused(llama_chat: LlamaServer, official: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        await official.responses.create(model="tiny-chat", input="hi", previous_response_id="resp_1")
    async with responses_llm(llama_chat) as llm:
        with pytest.raises(InvalidRequestError) as err:
            await llm.chat("hi", previous_response_id="resp_1", max_tokens=4)
        with pytest.raises(InvalidRequestError):
            async for _ in llm.generate_stream("hi", previous_response_id="resp_1", max_tokens=4):
                pass
        assert llm.get_metrics().requests == 2
    assert err.value.status == 400 and "previous_response_id" in err.value.message


async def test_raw_create_response(llama_chat: LlamaServer) -> None:
    async with responses_llm(llama_chat) as llm:
        data = await llm.create_response({"input": PROMPT, "temperature": 0.0, "max_output_tokens": 16})
        events = await llm.create_response(
            {"input": PROMPT, "temperature": 0.0, "max_output_tokens": 16, "stream": True})
        kinds = [e["type"] async for e in events]
        usage = llm.get_token_usage()
    assert data["object"] == "response" and data["usage"]["output_tokens"] == 16
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 16
    assert usage.completion_tokens == 32


async def test_killed_mid_stream_is_a_stream_error(own_llama_chat: LlamaServer) -> None:
    """The body ends before response.completed: a StreamError, after the partial output."""
    async with responses_llm(own_llama_chat) as llm:
        received: list[str] = []
        with pytest.raises(StreamError) as info:
            async with aclosing(llm.generate_stream("Go on and on.", temperature=0.0,
                                                    max_tokens=1800)) as stream:
                async for delta in stream:
                    received.append(delta)
                    if len(received) == 1:
                        own_llama_chat.signal(signal.SIGKILL)
        metrics = llm.get_metrics()
    assert received and not isinstance(info.value, LLMTimeoutError)
    assert metrics.failures_by_type == {"stream_error": 1} and metrics.in_flight == 0
