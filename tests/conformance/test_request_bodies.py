"""What llmkit puts on the wire, checked on the strict test servers (tests/servers, every
body validated against the provider's spec): a request carries exactly what the user set
(API.md "Configuration": sampling fields default to None, "not sent"), client options never
become body fields, and each server gets its own documented shapes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from llmkit import HuggingFaceLLM, InvalidRequestError, LLMConfig, Message, OllamaLLM, OpenAILLM
from tests.servers import (
    ServerState,
    serve,
    serve_hf,
    serve_ollama,
    serve_openai,
    serve_tgi,
    serve_vllm,
)
from tests.servers.hf_server import make_tgi_app

FAST_RETRY = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}


class City(BaseModel):
    city: str


def openai_llm(url: str) -> OpenAILLM:
    return OpenAILLM(LLMConfig(provider="openai", model="gpt-4o-mini", base_url=url,
                               api_key="sk-test", max_retries=0, extra=FAST_RETRY))


def body_keys(state: ServerState, path: str) -> list[set[str]]:
    return [set(r.json) for r in state.requests_to(path)]


async def test_openai_minimal_request_carries_only_model_and_messages() -> None:
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        await llm.generate("hi")
        await llm.chat("hi")
        assert [t async for t in llm.generate_stream("hi")]
    assert body_keys(srv.state, "/v1/chat/completions") == [
        {"model", "messages"},
        {"model", "messages"},
        {"model", "messages", "stream", "stream_options"},
    ]


async def test_openai_set_options_are_sent_as_given() -> None:
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        await llm.generate("hi", temperature=0.2, seed=5, stop=["x"], max_tokens=7, top_p=0.5)
    body = srv.state.last_request.json
    assert {k: body[k] for k in ("temperature", "seed", "stop", "top_p")} == {
        "temperature": 0.2, "seed": 5, "stop": ["x"], "top_p": 0.5,
    }
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 7


async def test_openai_per_call_timeout_is_not_a_body_field() -> None:
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        await llm.generate("hi", timeout=5)
    assert "timeout" not in srv.state.last_request.json


async def test_openai_compatible_top_k_goes_out_and_api_openai_com_refuses_it() -> None:
    async with serve_vllm() as srv, openai_llm(srv.url) as llm:
        await llm.generate("hi", top_k=3)
    assert srv.state.last_request.json["top_k"] == 3
    async with OpenAILLM(LLMConfig(provider="openai", model="gpt-4o-mini",
                                   api_key="sk-test", max_retries=0)) as official:
        with pytest.raises(InvalidRequestError, match="top_k"):
            await official.generate("hi", top_k=3)
        assert official.get_metrics().requests == 0


async def test_ollama_minimal_request_carries_no_options() -> None:
    async with serve_ollama() as srv, OllamaLLM(
        LLMConfig(provider="ollama", model="llama3.2", base_url=srv.url, max_retries=0)
    ) as llm:
        await llm.generate("hi")
    body = srv.state.last_request.json
    assert set(body) == {"model", "messages", "stream"}
    assert body["stream"] is False


async def test_hf_router_minimal_request_carries_only_model_and_messages() -> None:
    async with serve_hf() as srv, HuggingFaceLLM(
        model="meta-llama/Llama-3.1-8B-Instruct", base_url=srv.url, api_key="hf_test",
        max_retries=0, extra={"api": "router", **FAST_RETRY},
    ) as llm:
        await llm.generate("hi")
    assert body_keys(srv.state, "/v1/chat/completions") == [{"model", "messages"}]


async def test_tgi_chat_response_format_in_tgi_shape() -> None:
    async with serve_tgi() as srv, HuggingFaceLLM(
        model="tgi", base_url=srv.url, max_retries=0, extra={"api": "tgi-chat", **FAST_RETRY},
    ) as llm:
        response = await llm.chat("Which city?", response_format=City)
    assert isinstance(response.parsed, City)
    sent: dict[str, Any] = srv.state.last_request.json["response_format"]
    assert sent["type"] == "json"
    assert sent["value"]["properties"] == City.model_json_schema()["properties"]


async def test_strict_server_rejects_an_undocumented_field() -> None:
    """The validation itself: a field the spec does not define is a 400 naming it, recorded
    as a violation that fails the test when the server stops."""
    state = ServerState()
    with pytest.raises(AssertionError, match="top_kk"):
        async with serve(make_tgi_app, state) as srv, aiohttp.ClientSession() as session:
            body = {"inputs": "hi", "parameters": {"top_kk": 1}}
            async with session.post(srv.url + "/generate", json=body) as resp:
                assert resp.status == 400
                assert "top_kk" in (await resp.json())["error"]
    assert len(state.spec_violations) == 1


async def test_openai_unknown_option_is_refused_before_sending() -> None:
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        with pytest.raises(InvalidRequestError, match="temprature"):
            await llm.generate("hi", temprature=0.5)
    assert srv.state.request_count == 0


async def test_openai_extra_body_is_merged() -> None:
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        await llm.generate("hi", extra_body={"logit_bias": {"42": 5}})
    assert srv.state.last_request.json["logit_bias"] == {"42": 5}


async def test_openai_message_images_are_sent_as_image_parts() -> None:
    image = "https://example.com/cat.png"
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        await llm.chat([Message(role="user", content="What is this?", images=[image])])
    content = srv.state.last_request.json["messages"][0]["content"]
    assert {"type": "image_url", "image_url": {"url": image}} in content


async def test_openai_bogus_tool_choice_is_refused() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    async with serve_openai() as srv, openai_llm(srv.url) as llm:
        with pytest.raises(InvalidRequestError, match="bogus"):
            await llm.chat("hi", tools=[tool], tool_choice="bogus")
    assert srv.state.request_count == 0


async def test_tgi_generate_response_format_as_grammar() -> None:
    async with serve_tgi() as srv, HuggingFaceLLM(
        model="tgi", base_url=srv.url, max_retries=0, extra={"api": "tgi", **FAST_RETRY},
    ) as llm:
        response = await llm.chat("Which city?", response_format=City)
    assert isinstance(response.parsed, City)
    grammar = srv.state.last_request.json["parameters"]["grammar"]
    assert grammar["type"] == "json"
    assert grammar["value"]["properties"] == City.model_json_schema()["properties"]


async def test_tgi_stop_sequence_limit_checked_before_sending() -> None:
    async with serve_tgi() as srv, HuggingFaceLLM(
        model="tgi", base_url=srv.url, max_retries=0, extra={"api": "tgi", **FAST_RETRY},
    ) as llm:
        with pytest.raises(InvalidRequestError, match="stop"):
            await llm.generate("hi", stop=["1", "2", "3", "4", "5"])
    assert srv.state.requests_to("/generate") == []
