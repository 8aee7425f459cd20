"""Registry, factory, BaseLLM fallbacks, MockLLM, errors, retry policy, metrics."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from typing import Any

import pytest

import llmkit
from llmkit import (
    AuthenticationError,
    BaseLLM,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    LLMConfig,
    LLMError,
    LLMFactory,
    LLMTimeoutError,
    Message,
    MockLLM,
    ModelNotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    ProviderNotFoundError,
    RateLimitError,
    Role,
    ServerError,
    StreamError,
    Usage,
    create_llm,
    list_providers,
    register_provider,
    unregister_provider,
)
from llmkit.http.error_mapping import error_from_response
from llmkit.http.retry import RetryPolicy, parse_retry_after


class EchoLLM(BaseLLM):
    async def generate(self, messages: Any, **options: Any) -> str:
        return "mock response"


async def test_generate_only_subclass_is_a_provider() -> None:
    llm = EchoLLM("mock")
    assert await llm.generate("x") == "mock response"
    assert (await llm.chat("x")).content == "mock response"
    assert [d async for d in llm.generate_stream("x")] == ["mock response"]
    chunks = [c async for c in llm.chat_stream("x")]
    assert chunks[0].delta == "mock response" and chunks[-1].finish_reason == "stop"
    assert await llm.batch_generate(["a", "b", "c"]) == ["mock response"] * 3
    with pytest.raises(NotSupportedError):
        await llm.embed("x")
    with pytest.raises(NotSupportedError):
        await llm.embed_batch(["x"])
    with pytest.raises(NotSupportedError):
        await llm.build_cache("x")
    with pytest.raises(NotSupportedError):
        await llm.chat("x", tools=[{"type": "function", "function": {"name": "f"}}])
    await llm.health_check()
    info = llm.get_model_info()
    assert info.model == "mock" and not info.capabilities.embeddings
    assert llm.supports_batching() is False
    await llm.close()
    await llm.aclose()


def test_subclass_without_generate_or_chat_is_rejected() -> None:
    class Nothing(BaseLLM):
        pass

    with pytest.raises(TypeError, match="generate"):
        Nothing("x")


async def test_mock_llm_features() -> None:
    llm = MockLLM("mock", responses=["one", "two"], chunk_size=2, failures=[None, RateLimitError("slow down")])
    assert await llm.generate("a") == "one"
    with pytest.raises(RateLimitError):
        await llm.generate("b")
    assert await llm.generate("c") == "two"
    assert "".join([d async for d in llm.generate_stream("d")]) == "one"
    assert [d async for d in llm.generate_stream("e")] == ["tw", "o"]
    v = await llm.embed("hello")
    assert len(v) == 16 and v == await llm.embed("hello") and v != await llm.embed("other")
    assert await llm.embed_batch(["hello"]) == [v]
    m = llm.get_metrics()
    assert m.failures_by_type == {"rate_limit": 1}
    assert llm.get_token_usage().completion_tokens > 0


async def test_mock_latency_and_messages_forms() -> None:
    llm = MockLLM("mock", latency=0.05)
    t0 = time.monotonic()
    out = await llm.batch_generate(["a", {"role": "user", "content": "b"},
                                    [Message(Role.user, "c")]], concurrency=3)
    assert time.monotonic() - t0 < 0.14  # ran concurrently
    assert out == ["mock response to: a", "mock response to: b", "mock response to: c"]
    with pytest.raises(InvalidRequestError):
        await llm.generate([{"content": "no role"}])
    with pytest.raises(InvalidRequestError):
        await llm.generate([])
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        await llm.generate("x", max_tokens=0)
    with pytest.raises(InvalidRequestError, match="temperature"):
        await llm.generate("x", temperature=3)


async def test_batch_return_exceptions_keeps_order() -> None:
    llm = MockLLM("mock", failures=[None, ServerError("boom"), None])
    out = await llm.batch_generate(["a", "b", "c"], concurrency=1, return_exceptions=True)
    assert out[0] == "mock response to: a"
    assert isinstance(out[1], ServerError)
    assert out[2] == "mock response to: c"


def test_registry() -> None:
    assert {"openai", "ollama", "huggingface", "mock"} <= set(list_providers())
    register_provider("echo", lambda cfg: EchoLLM(cfg))
    try:
        llm = create_llm({"provider": "echo", "model": "m"})
        assert isinstance(llm, EchoLLM) and llm.config.provider == "echo"
        register_provider("echo", lambda cfg: MockLLM(cfg))  # replaces
        assert isinstance(create_llm({"provider": "echo"}), MockLLM)
    finally:
        unregister_provider("echo")
    with pytest.raises(ProviderNotFoundError, match="openai") as info:
        create_llm({"provider": "echo"})
    assert info.value.type == "provider_not_found"
    with pytest.raises(ConfigError):
        create_llm({"model": "x"})


async def test_create_llm_builtins() -> None:
    llm = create_llm(LLMConfig(provider="openai", model="gpt-4o-mini", api_key="sk-x" * 5))
    assert type(llm).__name__ == "OpenAILLM"
    await llm.aclose()
    mock = create_llm({"provider": "mock"})
    assert isinstance(mock, MockLLM)


async def test_factory_health_and_close() -> None:
    factory = LLMFactory()
    assert "mock" in factory.list_providers()
    good = factory.create_llm({"provider": "mock"})
    bad = factory.create_llm_from_map({"provider": "mock", "model": "m2"})
    assert isinstance(good, MockLLM) and isinstance(bad, MockLLM)
    bad.inject_failure(AuthenticationError("nope"))
    health = await factory.health_check()
    assert isinstance(health["mock"], AuthenticationError)
    await factory.close()
    assert good.closed and bad.closed


async def test_fresh_factory_checks_registered_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Point every provider at a closed port so nothing leaves the machine.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    register_provider("echo", lambda cfg: EchoLLM(cfg))
    try:
        health = await asyncio.wait_for(LLMFactory().health_check(), 30)
    finally:
        unregister_provider("echo")
    assert health["mock"] is None and health["echo"] is None
    assert isinstance(health["openai"], LLMError)
    assert isinstance(health["ollama"], LLMError)


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, b'{"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}}', AuthenticationError),
        (403, b'{"error": "forbidden"}', PermissionDeniedError),
        (404, b'{"error": "model \\"x\\" not found, try pulling it first"}', ModelNotFoundError),
        (400, b'{"error": {"message": "bad", "type": "invalid_request_error", "code": null}}', InvalidRequestError),
        (422, b'{"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096", "error_type": "validation"}', ContextLengthError),
        (400, b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", "code": "context_length_exceeded"}}', ContextLengthError),
        (429, b'{"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}}', RateLimitError),
        (429, b'{"error": "slow down"}', RateLimitError),
        (408, b"", LLMTimeoutError),
        (500, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ServerError),
        (503, b'{"error": "Model x is currently loading", "estimated_time": 12.5}', ServerError),
    ],
)
def test_error_mapping(status: int, body: bytes, cls: type[LLMError]) -> None:
    err = error_from_response(status, body, {"x-request-id": "req_1"}, provider="p", model="x")
    assert type(err) is cls
    assert err.status == status and err.provider == "p" and err.request_id == "req_1"
    assert "<html>" not in err.message and "<h1>" not in err.message
    if b"estimated_time" in body:
        assert err.retry_after == 12.5
    if b"insufficient_quota" in body:
        assert not err.retryable
    pickled = pickle.loads(pickle.dumps(err))
    assert type(pickled) is cls and pickled.message == err.message


def test_error_types_and_builtin_bases() -> None:
    assert issubclass(LLMTimeoutError, TimeoutError)
    assert issubclass(llmkit.LLMConnectionError, ConnectionError)
    assert StreamError("x").type == "stream_error"
    assert ConfigError("x").type == "configuration"
    assert NotSupportedError("x").type == "not_supported"


def test_errors_redact_keys() -> None:
    LLMConfig(provider="openai", model="m", api_key="sk-proj-SECRETSECRETSECRET123")
    err = AuthenticationError("Incorrect API key provided: sk-proj-SECRETSECRETSECRET123")
    assert "SECRETSECRET" not in str(err) and "SECRETSECRET" not in repr(err)
    err2 = LLMError("header was Bearer abcdefghijklmnop")
    assert "abcdefghijklmnop" not in str(err2)


def test_retry_policy() -> None:
    policy = RetryPolicy(max_retries=2, initial_delay=0.5, max_delay=4)
    waits = policy.waits()
    first = [next(waits) for _ in range(6)]
    assert all(0 <= w <= 4 for w in first)
    assert policy.should_retry(ServerError("x"), 0)
    assert not policy.should_retry(ServerError("x"), 2)
    assert not policy.should_retry(AuthenticationError("x"), 0)
    assert not policy.should_retry(RateLimitError("q", retryable=False), 0)
    assert policy.delay_for(RateLimitError("x", retry_after=3.0), 0.1) == 3.0
    assert RetryPolicy(max_retry_after=5).delay_for(RateLimitError("x", retry_after=999), 0.1) == 5
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert parse_retry_after({"retry-after": "garbage"}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_usage_adds() -> None:
    a = Usage.of(1, 2)
    b = Usage.of(10, 20)
    assert a + b == Usage(prompt_tokens=11, completion_tokens=22, total_tokens=33)
    assert sum([a, b]) == a + b


def test_import_is_light() -> None:
    code = (
        "import sys, llmkit; from llmkit import LLMConfig, create_llm, BaseLLM; "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_404_without_an_api_body_points_at_the_url() -> None:
    err = error_from_response(404, b"<html><h1>Not Found</h1></html>", {}, provider="openai",
                              model="gpt-4o-mini", content_type="text/html")
    assert type(err) is InvalidRequestError
    assert "base_url" in err.message


def test_pickled_error_keeps_retryable() -> None:
    err = error_from_response(429, b'{"error": {"message": "q", "code": "insufficient_quota"}}')
    assert not pickle.loads(pickle.dumps(err)).retryable


def test_registered_name_wins_over_builtin_alias() -> None:
    register_provider("hf", lambda cfg: EchoLLM(cfg))
    try:
        llm = create_llm({"provider": "hf", "model": "m"})
        assert isinstance(llm, EchoLLM)
        assert llm.provider == "hf"
        assert isinstance(LLMFactory().create_llm({"provider": "HF", "model": "m"}), EchoLLM)
    finally:
        unregister_provider("hf")
    # the alias is back
    assert type(create_llm({"provider": "hf", "model": "m"})).__name__ == "HuggingFaceLLM"


def test_tool_call_positional_arguments() -> None:
    from llmkit import ToolCall

    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    assert (call.id, call.name, call.arguments) == ("call_1", "get_weather", {"city": "Paris"})
    assert call == ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
