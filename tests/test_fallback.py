"""FallbackLLM against the local OpenAI and Ollama servers, failing on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

import llmkit
from llmkit import (
    AuthenticationError,
    ConfigError,
    FallbackLLM,
    LLMConnectionError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
    StreamError,
    create_llm,
)
from tests.servers import ServerHandle, ServerState, serve_ollama, serve_openai

FAST = {"retry_initial_delay": 0.01, "retry_max_delay": 0.02}
OPENAI_CHAT = "/v1/chat/completions"
OLLAMA_CHAT = "/api/chat"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ServerHandle, ServerHandle]]:
    async with serve_openai(ServerState(reply="from openai")) as a, serve_ollama(
        ServerState(reply="from ollama")
    ) as b:
        yield a, b


def chain(a_url: str, b_url: str, **first: Any) -> dict[str, Any]:
    return {
        "provider": "fallback",
        "chain": [
            {"provider": "openai", "model": "gpt-4o-mini", "base_url": a_url, "api_key": "sk-test-abcdefgh",
             "max_retries": 1, "extra": FAST, **first},
            {"provider": "ollama", "model": "llama3.2", "base_url": b_url, "max_retries": 0},
        ],
    }


async def test_create_llm_builds_a_fallback_chain(servers: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = servers
    llm = create_llm(chain(a.url, b.url))
    async with llm:
        assert isinstance(llm, FallbackLLM)
        assert [m.provider for m in llm.members] == ["openai", "ollama"]
        assert await llm.generate("hi") == "from openai"
    assert len(b.state.requests_to(OLLAMA_CHAT)) == 0
    assert all(m.closed for m in llm.members)


@pytest.mark.parametrize(
    ("fault", "params", "error"),
    [
        ("status", {"status": 503}, ServerError),
        ("status", {"status": 429, "headers": {"Retry-After": "0"}}, RateLimitError),
        ("quota", {}, RateLimitError),
        ("reset_before_headers", {}, LLMConnectionError),
        ("slow_headers", {"delay": 1.0}, LLMTimeoutError),
    ],
)
async def test_moves_on_after_the_members_own_retries(
    servers: tuple[ServerHandle, ServerHandle],
    fault: str,
    params: dict[str, Any],
    error: type[llmkit.LLMError],
) -> None:
    a, b = servers
    a.state.add_fault(fault, path=OPENAI_CHAT, times=10, **params)
    async with create_llm(chain(a.url, b.url, timeout=0.3)) as llm:
        response = await llm.chat("hi")
        reply = await llm.generate("hi")
        metrics = llm.member_metrics()
        overall = llm.get_metrics()
    assert reply == response.content == "from ollama"
    assert response.model == "llama3.2"
    sent = len(a.state.requests_to(OPENAI_CHAT))
    retried = 0 if fault == "quota" else 1  # a quota 429 is not retried by the member
    assert sent == 2 * (1 + retried)  # two calls, each with the member's own retries
    assert metrics[0].failures_by_type == {error.type: 2}
    assert metrics[0].retries == 2 * retried
    assert metrics[1].successes == 2 and metrics[1].failures == 0
    # the caller's view: two calls, both answered
    assert (overall.requests, overall.successes, overall.failures) == (2, 2, 0)
    assert overall.retries == 2 * retried and overall.total_tokens == metrics[1].total_tokens > 0


async def test_other_errors_raise_at_once(servers: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = servers
    a.state.add_fault("status", path=OPENAI_CHAT, status=401)
    async with create_llm(chain(a.url, b.url)) as llm:
        with pytest.raises(AuthenticationError) as info:
            await llm.generate("hi")
    assert len(b.state.requests_to(OLLAMA_CHAT)) == 0
    assert info.value.attempts == [info.value]  # type: ignore[attr-defined]


async def test_all_failing_raises_the_last_error_with_every_attempt(
    servers: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = servers
    a.state.add_fault("status", path=OPENAI_CHAT, status=500, times=5)
    b.state.add_fault("status", path=OLLAMA_CHAT, status=502, times=5)
    async with create_llm(chain(a.url, b.url)) as llm:
        with pytest.raises(ServerError) as info:
            await llm.chat("hi")
        assert llm.get_metrics().failures_by_type == {"server_error": 1}
    err = info.value
    assert err.provider == "ollama" and err.status == 502
    attempts = err.attempts  # type: ignore[attr-defined]
    assert [(e.provider, e.status) for e in attempts] == [("openai", 500), ("ollama", 502)]
    assert attempts[-1] is err


async def test_stream_moves_on_before_its_first_chunk(servers: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = servers
    a.state.add_fault("status", path=OPENAI_CHAT, status=503, times=2)
    async with create_llm(chain(a.url, b.url)) as llm:
        text = "".join([d async for d in llm.generate_stream("hi")])
        chunks = [c async for c in llm.chat_stream("hi")]
    assert text == "from ollama"
    assert "".join(c.delta for c in chunks) == "from openai"  # the faults were used up
    assert chunks[-1].finish_reason == "stop"


async def test_stream_does_not_move_on_after_its_first_chunk(
    servers: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = servers
    a.state.reply = "one two three four five"
    a.state.add_fault("reset_mid_body", path=OPENAI_CHAT, after=3)
    got: list[str] = []
    async with create_llm(chain(a.url, b.url)) as llm:
        with pytest.raises(StreamError):
            async with aclosing(llm.generate_stream("hi")) as deltas:
                async for delta in deltas:
                    got.append(delta)
        assert llm.get_metrics().failures_by_type == {"stream_error": 1}
    assert got and "".join(got) != "from ollama"
    assert len(b.state.requests_to(OLLAMA_CHAT)) == 0


async def test_embeddings_fall_back(servers: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = servers
    a.state.add_fault("status", path="/v1/embeddings", status=500, times=2)
    async with create_llm(chain(a.url, b.url)) as llm:
        vector = await llm.embed("hello")
    assert len(vector) == b.state.embedding_dim
    assert len(b.state.requests_to("/api/embed")) == 1


async def test_instances_in_the_chain_stay_open_and_bad_chains_fail() -> None:
    mock = llmkit.MockLLM(responses=["kept"])
    llm = FallbackLLM(chain=[mock])
    assert await llm.generate("x") == "kept"
    await llm.aclose()
    assert not mock.closed
    with pytest.raises(ConfigError):
        create_llm({"provider": "fallback", "chain": []})
    with pytest.raises(ConfigError):
        create_llm({"provider": "fallback"})
    with pytest.raises(ConfigError):
        FallbackLLM(chain=["not a config"])


@pytest.mark.parametrize("owner", ["chain", "caller"])
@pytest.mark.parametrize("when", ["mid-stream", "before headers", "call"])
async def test_close_ends_what_the_fallback_has_in_flight(owner: str, when: str) -> None:
    """Closing the fallback ends its stream or call at once, on members it built and on
    members the caller passed in (which stay open), and never moves on to the next member."""
    async with serve_openai(ServerState(reply="one two three four five")) as a, serve_openai(
        ServerState(reply="from b")
    ) as b:
        if when == "mid-stream":
            a.state.add_fault("slow_body", after=2, delay=30)
        else:
            a.state.add_fault("slow_headers", delay=30)
        configs = [
            {"provider": "openai", "model": "gpt-4o-mini", "base_url": s.url,
             "api_key": "sk-test-abcdefgh", "timeout": 60, "max_retries": 0}
            for s in (a, b)
        ]
        members = [create_llm(c) for c in configs] if owner == "caller" else []
        llm = FallbackLLM(chain=members or configs)
        got: list[str] = []

        async def consume() -> None:
            if when == "call":
                got.append(await llm.generate("hi"))
                return
            async for delta in llm.generate_stream("hi"):
                got.append(delta)

        task = asyncio.create_task(consume())
        for _ in range(1000):
            await asyncio.sleep(0.005)
            if (got if when == "mid-stream" else a.state.in_flight):
                break
        await llm.aclose()
        expected: type[Exception] = ConfigError if when == "call" else StreamError
        with pytest.raises(expected, match="closed"):
            await asyncio.wait_for(task, 10)
        assert len(b.state.requests) == 0  # never moved on
        if owner == "caller":
            assert not any(m.closed for m in members)  # the caller's, still open
            assert await members[1].generate("still usable") == "from b"
            for m in members:
                await m.aclose()
            assert all(m.get_metrics().in_flight == 0 for m in members)
