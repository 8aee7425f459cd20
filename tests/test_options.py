"""Per-call options: checks, unknown names, client options applied by the client (never sent),
and requests carrying only what the user set."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llmkit import InvalidRequestError, LLMConfig, LLMTimeoutError, OpenAILLM, ServerError
from llmkit.core.options import (
    CLIENT_OPTIONS,
    NO_CLIENT_OPTIONS,
    PORTABLE_OPTIONS,
    CallOptions,
    ClientOptions,
    resolve_options,
)
from tests.servers import ServerHandle

KEY = "sk-test-options-abcdefghijklmnop"


def resolve(options: dict[str, Any], **config: Any) -> tuple[dict[str, Any], ClientOptions]:
    cfg = LLMConfig(provider="openai", model="m", **config)
    return resolve_options(
        cfg, options, provider="openai", provider_options=frozenset({"logit_bias"}),
        unsupported={"think": "use reasoning_effort"},
    )


def make(server: ServerHandle, **kw: Any) -> OpenAILLM:
    extra = {"retry_initial_delay": 0.01, "retry_max_delay": 0.02, **kw.pop("extra", {})}
    return OpenAILLM(
        LLMConfig(provider="openai", model="gpt-4o-mini", base_url=server.url, api_key=KEY,
                  extra=extra, **kw)
    )


def test_typed_dict_names_every_option() -> None:
    assert set(CallOptions.__annotations__) == PORTABLE_OPTIONS | CLIENT_OPTIONS
    assert {"max_tokens", "temperature", "top_p", "stop", "seed", "n", "think"} <= PORTABLE_OPTIONS
    assert CLIENT_OPTIONS == {"timeout", "max_retries", "extra_headers", "extra_query", "extra_body"}


def test_only_set_values_are_sent_and_per_call_wins() -> None:
    assert resolve({}) == ({}, NO_CLIENT_OPTIONS)
    send, client = resolve({"temperature": None, "seed": 3, "stop": "END"}, max_tokens=50, temperature=0.5)
    assert send == {"max_tokens": 50, "temperature": 0.5, "seed": 3, "stop": ["END"]}
    assert client is NO_CLIENT_OPTIONS
    send, _ = resolve({"max_tokens": 7}, max_tokens=50)
    assert send == {"max_tokens": 7}


def test_client_options_are_separated() -> None:
    send, client = resolve(
        {"timeout": "500ms", "max_retries": 0, "extra_headers": {"X-A": "1"},
         "extra_query": {"q": 1}, "extra_body": {"foo": 1}, "logit_bias": {"5": 1}}
    )
    assert send == {"logit_bias": {"5": 1}}
    assert client == ClientOptions(
        timeout=0.5, max_retries=0, extra_headers={"X-A": "1"}, extra_query={"q": 1},
        extra_body={"foo": 1},
    )


def test_unknown_option_names_it_suggests_and_hints_extra_body() -> None:
    with pytest.raises(InvalidRequestError) as info:
        resolve({"temprature": 0.2})
    msg = str(info.value)
    assert "'temprature'" in msg and "'temperature'" in msg and "extra_body" in msg
    with pytest.raises(InvalidRequestError, match="'frobnicate'") as info:
        resolve({"frobnicate": 1})
    assert "did you mean" not in str(info.value)


def test_unsupported_portable_option_says_why() -> None:
    with pytest.raises(InvalidRequestError, match=r"think.*use reasoning_effort"):
        resolve({"think": True})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("temperature", "hot"), ("temperature", 3.0), ("temperature", float("nan")),
        ("temperature", True), ("top_p", 1.5), ("max_tokens", 0), ("max_tokens", 1.5),
        ("max_tokens", "10"), ("stop", {"a"}), ("stop", ["a", 1]), ("seed", "1"),
        ("top_k", -1), ("presence_penalty", 5), ("frequency_penalty", "x"),
        ("logprobs", 1), ("top_logprobs", -1), ("n", 0), ("reasoning_effort", 3),
        ("think", 1), ("think", ""), ("timeout", -1), ("timeout", "soon"),
        ("timeout", float("inf")), ("max_retries", -1), ("extra_headers", {"X": 1}),
        ("extra_body", ["a"]), ("extra_query", "q=1"),
    ],
)
def test_wrong_value_is_invalid_request(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequestError, match=name):
        resolve({name: value})


@pytest.mark.spec_exempt("sends top_k (llama.cpp / vLLM, not OpenAI) on purpose")
async def test_request_carries_only_what_was_set(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        await llm.generate("hi")
        body = openai_server.state.last_request.json
        assert set(body) == {"model", "messages"}
        await llm.generate("hi", max_tokens=5, logit_bias={"7": 2}, extra_body={"top_k": 3})
        body = openai_server.state.last_request.json
        # a server other than api.openai.com gets max_tokens; logit_bias goes as is
        assert body["max_tokens"] == 5 and body["logit_bias"] == {"7": 2}
        assert "max_completion_tokens" not in body
        assert body["top_k"] == 3
        # not in OpenAI's own format, but an OpenAI-compatible server (llama.cpp, vLLM)
        # takes it: the portable option goes out under its name (refused only for
        # api.openai.com and Azure, below)
        await llm.generate("hi", top_k=4)
        assert openai_server.state.last_request.json["top_k"] == 4


async def test_max_tokens_field_override(openai_server: ServerHandle) -> None:
    async with make(openai_server, max_tokens=4,
                    extra={"max_tokens_field": "max_completion_tokens"}) as llm:
        await llm.generate("hi")
        body = openai_server.state.last_request.json
        assert body["max_completion_tokens"] == 4 and "max_tokens" not in body


def test_api_openai_com_gets_max_completion_tokens() -> None:
    from llmkit.providers.openai.chat import max_tokens_field

    assert max_tokens_field("https://api.openai.com/v1", {}) == "max_completion_tokens"
    assert max_tokens_field("http://127.0.0.1:8080/v1", {}) == "max_tokens"
    assert max_tokens_field("https://api.openai.com/v1", {"max_tokens_field": "max_tokens"}) == "max_tokens"


async def test_client_options_applied_not_sent(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        await llm.chat(
            "hi", extra_headers={"X-Trace": "t1"}, extra_query={"api-version": "2024"},
            extra_body={"metadata": {"run": "1"}}, timeout=30, max_retries=1,
        )
        req = openai_server.state.last_request
        assert req.headers["X-Trace"] == "t1"
        assert req.query == {"api-version": "2024"}
        assert req.json["metadata"] == {"run": "1"}
        assert not CLIENT_OPTIONS & req.json.keys()
        # the same for a stream
        chunks = [c async for c in llm.chat_stream("hi", extra_headers={"X-Trace": "t2"},
                                                   extra_body={"user": "u-3"})]
        assert chunks
        req = openai_server.state.last_request
        assert req.headers["X-Trace"] == "t2" and req.json["user"] == "u-3"
        assert not CLIENT_OPTIONS & req.json.keys()


async def test_per_call_timeout_applies(openai_server: ServerHandle) -> None:
    openai_server.state.add_fault("slow_headers", delay=2.0, path="/v1/chat", times=5)
    async with make(openai_server, timeout=30, max_retries=0) as llm:
        started = time.perf_counter()
        with pytest.raises(LLMTimeoutError):
            await llm.generate("hi", timeout=0.2)
        assert time.perf_counter() - started < 1.5
        started = time.perf_counter()
        with pytest.raises(LLMTimeoutError):
            async for _ in llm.generate_stream("hi", timeout=0.2):
                pass
        assert time.perf_counter() - started < 1.5


async def test_per_call_max_retries(openai_server: ServerHandle) -> None:
    async with make(openai_server, max_retries=3) as llm:
        openai_server.state.add_fault("status", status=500, path="/v1/chat", times=5)
        before = openai_server.state.total_requests
        with pytest.raises(ServerError):
            await llm.generate("hi", max_retries=0)
        assert openai_server.state.total_requests - before == 1
        openai_server.state.faults.clear()
        openai_server.state.add_fault("status", status=500, path="/v1/chat", times=1)
        assert await llm.generate("hi", max_retries=1) == "Echo: hi"


async def test_bad_option_is_raised_before_sending(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        before = openai_server.state.total_requests
        with pytest.raises(InvalidRequestError, match="temperature"):
            await llm.generate("hi", temperature="hot")
        with pytest.raises(InvalidRequestError, match=r"max_tokns.*max_tokens"):
            await llm.generate("hi", max_tokns=3)
        with pytest.raises(InvalidRequestError, match="stop"):
            async for _ in llm.generate_stream("hi", stop={"x": 1}):
                pass
        assert openai_server.state.total_requests == before


async def test_openai_host_refuses_what_it_cannot_honour() -> None:
    """api.openai.com has no top_k and no think switch: refused before anything is sent
    (the base URL points at OpenAI, so a request that went out would fail to connect)."""
    async with OpenAILLM(LLMConfig(provider="openai", model="o3", api_key=KEY,
                                   base_url="https://api.openai.com/v1")) as llm:
        with pytest.raises(InvalidRequestError, match="top_k"):
            await llm.generate("hi", top_k=5)
        with pytest.raises(InvalidRequestError, match="reasoning_effort"):
            await llm.generate("hi", think=True)
        body, _, _ = llm._request("hi", {"max_tokens": 50, "reasoning_effort": "low"},
                                  tools=None, tool_choice=None, response_format=None)
        assert body == {"model": "o3", "messages": [{"role": "user", "content": "hi"}],
                        "max_completion_tokens": 50, "reasoning_effort": "low"}


@pytest.mark.spec_exempt("chat_template_kwargs is llama.cpp's and vLLM's, not in OpenAI's spec")
async def test_think_translated_for_openai_compatible_servers(openai_server: ServerHandle) -> None:
    async with make(openai_server) as llm:
        await llm.generate("hi", think=False, chat_template_kwargs={"x": 1})
        body = openai_server.state.last_request.json
        assert body["chat_template_kwargs"] == {"x": 1, "enable_thinking": False}
        assert "think" not in body
        await llm.generate("hi", think="high")
        body = openai_server.state.last_request.json
        assert body["reasoning_effort"] == "high" and "think" not in body


def test_client_options_repr_hides_headers() -> None:
    _, client = resolve({"extra_headers": {"Authorization": "Bearer very-secret-token"}})
    assert "very-secret-token" not in repr(client)
    with pytest.raises(InvalidRequestError) as info:
        resolve({"extra_headers": {"Authorization": 12345678}, "api_key": "x"})
    assert "extra_headers" in str(info.value)
