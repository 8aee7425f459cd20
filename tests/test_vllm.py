"""OpenAILLM against vLLM 0.32's OpenAI-compatible server (the ``serve_vllm`` test server),
with openai-python side by side where it has an answer: tool arguments as the model wrote
them, structured replies cut by the token limit or not matching, ``top_k``,
``structured_outputs``, error ``param``, reasoning and the model card."""

from __future__ import annotations

import logging
import pickle
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel, field_validator

from llmkit import (
    ContextLengthError,
    InvalidRequestError,
    LLMConfig,
    OpenAILLM,
    ReplyTruncatedError,
    ReplyValidationError,
)
from tests.servers import ServerHandle, ServerState, serve_vllm

MODEL = "meta-llama/Llama-3.2-1B-Instruct"
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
STRICT_WEATHER = {"type": "function", "function": {**WEATHER["function"], "strict": True}}


class City(BaseModel):
    name: str
    population: int


class Capital(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def known(cls, value: str) -> str:
        if value not in ("Paris", "Rome"):  # what no schema can say
            raise ValueError(f"{value!r} is not a capital")
        return value


@pytest.fixture
async def vllm() -> AsyncIterator[ServerHandle]:
    async with serve_vllm(ServerState()) as handle:
        yield handle


def llm_for(server: ServerHandle, **config: Any) -> OpenAILLM:
    settings: dict[str, Any] = {"model": MODEL, "api_key": "none", "max_retries": 0, **config}
    return OpenAILLM(LLMConfig(provider="openai", base_url=server.url, **settings))


def official(server: ServerHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0)


# ----------------------------------------------------------------------- tool arguments


@pytest.mark.parametrize(
    ("written", "why"),
    [("[]", "not a JSON object"), ('{"city": "Paris"', "not valid JSON"), ("42", "not a JSON object")],
)
async def test_tool_arguments_that_are_not_an_object_are_kept_as_written(
    vllm: ServerHandle, written: str, why: str
) -> None:
    vllm.state.tool_arguments = written  # a tool without strict: vLLM constrains only the envelope
    async with llm_for(vllm) as llm:
        response = await llm.chat("Weather in Paris?", tools=[WEATHER])
        chunks = [c async for c in llm.chat_stream("Weather in Paris?", tools=[WEATHER])]
    (call,) = response.tool_calls
    assert (call.name, call.arguments, call.raw_arguments) == ("get_weather", {}, written)
    assert call.arguments_error is not None and why in call.arguments_error
    (streamed,) = [tc for c in chunks for tc in c.completed_tool_calls or ()]
    assert (streamed.arguments, streamed.raw_arguments) == ({}, written)
    assert streamed.arguments_error == call.arguments_error
    async with official(vllm) as client:
        theirs = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert theirs.choices[0].message.tool_calls[0].function.arguments == written  # type: ignore[union-attr,index]


async def test_strict_tool_arguments_follow_the_schema(vllm: ServerHandle) -> None:
    vllm.state.tool_arguments = "[]"  # what the model would write without the constraint
    async with llm_for(vllm) as llm:
        response = await llm.chat("Weather in Paris?", tools=[STRICT_WEATHER])
    (call,) = response.tool_calls
    assert call.arguments == {"city": "text"}
    assert call.raw_arguments == '{"city":"text"}'
    assert call.arguments_error is None
    # the call goes back to the server in history as the exact text it came as
    assert call.to_openai()["function"]["arguments"] == call.raw_arguments


# ----------------------------------------------------------------------- structured replies


async def test_a_structured_reply_cut_by_the_token_limit_is_reply_truncated(
    vllm: ServerHandle,
) -> None:
    async with llm_for(vllm) as llm:
        with pytest.raises(ReplyTruncatedError) as info:
            await llm.chat("A city?", response_format=City, max_tokens=2)
        usage = llm.get_token_usage()
    err = info.value
    assert isinstance(err, ReplyValidationError) and err.type == "reply_truncated"
    assert err.response.finish_reason == "length"
    assert err.response.content == '{"name": "text",'
    assert err.response.usage.completion_tokens == 2
    assert usage.completion_tokens == 2  # counted although the call raised
    assert "max_tokens" in err.message
    again = pickle.loads(pickle.dumps(err))  # errors cross process boundaries (Ray, jobs)
    assert type(again) is ReplyTruncatedError and again.response == err.response
    async with official(vllm) as client:
        with pytest.raises(openai.LengthFinishReasonError) as theirs:
            await client.chat.completions.parse(
                model=MODEL, messages=[{"role": "user", "content": "A city?"}],
                response_format=City, max_tokens=2,
            )
    assert theirs.value.completion.usage.completion_tokens == 2  # type: ignore[union-attr]


async def test_a_structured_reply_that_does_not_validate_is_reply_invalid(
    vllm: ServerHandle,
) -> None:
    async with llm_for(vllm) as llm:
        with pytest.raises(ReplyValidationError) as info:
            await llm.chat("A capital?", response_format=Capital)
        usage = llm.get_token_usage()
    err = info.value
    assert type(err) is ReplyValidationError and err.type == "reply_invalid"
    assert err.response.content == '{"name": "text"}'
    assert err.response.finish_reason == "stop"
    assert usage.completion_tokens == err.response.usage.completion_tokens == 2
    assert "Capital" in err.message
    async with official(vllm) as client:
        with pytest.raises(Exception) as theirs:  # pydantic's ValidationError, as it is
            await client.chat.completions.parse(
                model=MODEL, messages=[{"role": "user", "content": "A capital?"}],
                response_format=Capital,
            )
    assert type(theirs.value).__name__ == "ValidationError"


async def test_pydantic_response_format_is_sent_strict_like_openai_python(
    vllm: ServerHandle,
) -> None:
    class Place(BaseModel):
        name: str
        country: str | None = None
        tags: list[str] = []

    async with llm_for(vllm) as llm:
        response = await llm.chat("A place?", response_format=Place)
    ours = vllm.state.last_request.json["response_format"]
    async with official(vllm) as client:
        await client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": "A place?"}], response_format=Place,
        )
    theirs = vllm.state.last_request.json["response_format"]
    assert ours == theirs
    schema = ours["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["additionalProperties"] is False
    assert schema["schema"]["required"] == ["name", "country", "tags"]
    assert response.parsed == Place(name="text", country="text", tags=["text"])


async def test_a_schema_that_cannot_be_strict_goes_non_strict_with_one_warning(
    vllm: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    class Counts(BaseModel):
        by_city: dict[str, int]  # open keys: OpenAI's strict mode cannot express it

    with caplog.at_level(logging.WARNING, logger="llmkit.structured"):
        async with llm_for(vllm) as llm:
            for _ in range(3):
                await llm.chat("Counts?", response_format=Counts)
    sent = vllm.state.last_request.json["response_format"]["json_schema"]
    assert sent["strict"] is False and sent["schema"] == Counts.model_json_schema()
    warnings = [r.getMessage() for r in caplog.records if r.name == "llmkit.structured"]
    assert len(warnings) == 1 and "Counts" in warnings[0] and "by_city" in warnings[0]


# ----------------------------------------------------------------------- options


async def test_top_k_goes_to_vllm(vllm: ServerHandle) -> None:
    async with llm_for(vllm) as llm:
        await llm.chat("hi", top_k=3)
    assert vllm.state.last_request.json["top_k"] == 3
    assert vllm.state.log == []


async def test_top_k_is_refused_for_api_openai_com_before_sending() -> None:
    llm = OpenAILLM(LLMConfig(provider="openai", model="gpt-4o-mini", api_key="sk-test-key-0000"))
    async with llm:
        with pytest.raises(InvalidRequestError, match="top_k"):
            await llm.chat("hi", top_k=3)
    assert llm.get_metrics().requests == 0


@pytest.mark.parametrize(
    ("constraint", "reply"),
    [
        ({"choice": ["positive", "negative"]}, "positive"),
        ({"regex": r"\d{3}-[a-z]+"}, "000-a"),
        ({"grammar": 'root ::= "yes" | "no"'}, "yes"),
        ({"json": {"type": "object", "properties": {"n": {"type": "integer"}}}}, '{"n": 1}'),
    ],
)
async def test_structured_outputs_constrain_the_reply(
    vllm: ServerHandle, constraint: dict[str, Any], reply: str
) -> None:
    async with llm_for(vllm) as llm:
        response = await llm.chat("Classify: vLLM is wonderful!", structured_outputs=constraint)
    assert response.content == reply
    assert vllm.state.last_request.json["structured_outputs"] == constraint
    assert vllm.state.log == []  # nothing ignored


@pytest.mark.parametrize(
    ("old", "value"),
    [("guided_choice", ["a", "b"]), ("guided_regex", "a+"), ("guided_json", {}),
     ("guided_grammar", 'root ::= "a"')],
)
async def test_removed_guided_fields_are_refused_with_the_new_name(
    vllm: ServerHandle, old: str, value: Any
) -> None:
    async with llm_for(vllm) as llm:
        with pytest.raises(InvalidRequestError, match="structured_outputs") as info:
            await llm.chat("hi", **{old: value})
        assert info.value.param == old
        # what vLLM 0.32 does with them: 200, unconstrained text, a warning in its log
        response = await llm.chat("hi", extra_body={old: value})
    assert response.content == "Echo: hi"
    assert vllm.state.log == [
        f"The following fields were present in the request but ignored: {old}"
    ]
    assert vllm.state.request_count == 1


# ----------------------------------------------------------------------- errors


async def test_error_param_from_vllm(vllm: ServerHandle) -> None:
    vllm.state.context_length = 3
    async with llm_for(vllm) as llm:
        with pytest.raises(ContextLengthError) as too_long:
            await llm.chat("one two three four")
        with pytest.raises(InvalidRequestError) as too_many:
            await llm.chat("hi", max_tokens=100)
        with pytest.raises(InvalidRequestError) as bad_min_p:
            await llm.chat("hi", min_p=1.5)
    assert too_long.value.param == "input_tokens"
    assert pickle.loads(pickle.dumps(too_long.value)).param == "input_tokens"
    assert too_many.value.param == "max_tokens" and "is too large: 100" in too_many.value.message
    assert bad_min_p.value.param == "min_p" and bad_min_p.value.code == "400"
    async with official(vllm) as client:
        with pytest.raises(openai.BadRequestError) as theirs:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "one two three four"}]
            )
    assert theirs.value.param == "input_tokens"


async def test_embedding_input_too_long_is_context_length_with_param(vllm: ServerHandle) -> None:
    vllm.state.context_length = 3
    async with llm_for(vllm) as llm:
        with pytest.raises(ContextLengthError) as info:
            await llm.embed("one two three four")
    assert info.value.param == "input_tokens"
    assert vllm.state.request_count == 1


# ----------------------------------------------------------------------- replies


async def test_reasoning_and_model_card(vllm: ServerHandle) -> None:
    async with llm_for(vllm, model="Qwen/Qwen3-0.6B") as llm:
        response = await llm.chat("why is the sky blue")
        chunks = [c async for c in llm.chat_stream("why is the sky blue")]
        models = await llm.list_models()
        info = await llm.fetch_model_info()
    assert response.reasoning == "The user wrote 5 words."
    assert "".join(c.reasoning for c in chunks) == response.reasoning
    assert response.usage.reasoning_tokens == 0  # vLLM's usage has no details
    assert [m["id"] for m in models] == [MODEL, "Qwen/Qwen3-0.6B"]
    assert models[0]["max_model_len"] == 4096
    assert info.context_length == 4096
