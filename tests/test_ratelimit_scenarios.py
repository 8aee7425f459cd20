"""Fan-outs against the scenario server (tests/servers/ratelimit_server.py), default
settings: every scenario of benchmarks/bench_ratelimit.py at a smaller size and a higher
rate, asserting counts and order (no prompt lost, few refusals, the first request alone),
plus the cases where the answer is to raise at once: a Retry-After beyond the retry cap,
in a fan-out and in a fallback chain."""

from __future__ import annotations

from typing import Any

import pytest

from llmkit import FallbackLLM, OllamaLLM, OpenAILLM, RateLimitError
from tests.servers import ServerState
from tests.servers.ratelimit_server import RateLimits, serve_scenario

N = 200
RATE: dict[str, Any] = {"requests_per_second": 100.0, "request_burst": 10}
FLIGHT: dict[str, Any] = {"max_in_flight": 8, "service_time": 0.05}

SCENARIOS: dict[str, tuple[dict[str, Any], str]] = {
    "quantized": ({**RATE, "headers": "per_minute"}, "openai"),
    "quantized_burst": ({**RATE, "headers": "per_minute_burst"}, "openai"),
    "consistent": ({**RATE}, "openai"),
    "retry_after_seconds": ({**RATE, "headers": "none", "retry_after": "seconds"}, "openai"),
    "bare_429": ({**RATE, "headers": "none", "retry_after": "none"}, "openai"),
    "in_flight_503": ({**FLIGHT}, "openai"),
    "tgi_overloaded": ({**FLIGHT, "overload": "tgi"}, "tgi"),
    "ollama_full_queue": ({"max_in_flight": 8, "parallel": 2, "service_time": 0.0125, "overload": "ollama"}, "ollama"),
    "reset_unix_ms": ({**RATE, "reset_format": "unix_ms"}, "openai"),
    "reset_unix_s": ({**RATE, "reset_format": "unix_s"}, "openai"),
    "reset_inf": ({**RATE, "extra_headers": {"x-ratelimit-reset-requests": "inf"}}, "openai"),
}


def make(flavour: str, url: str, **kwargs: Any) -> Any:
    if flavour == "ollama":
        return OllamaLLM(model="llama3.2:latest", base_url=url, **kwargs)
    return OpenAILLM(model="gpt-4o-mini", base_url=url if flavour == "openai" else url + "/v1",
                     api_key=kwargs.pop("api_key", "sk-test"), **kwargs)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_fan_out_holds_against_each_scenario(name: str) -> None:
    spec, flavour = SCENARIOS[name]
    limits = RateLimits(**spec)
    async with serve_scenario(limits, ServerState(record_requests=False), flavour) as srv:
        async with make(flavour, srv.url) as llm:
            prompts = [f"p{i}" for i in range(N)]
            results = await llm.batch_generate(prompts, concurrency=64, return_exceptions=True)
            state = llm.rate_limit_state()
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed == [], failed[:3]
    assert limits.admitted == N
    assert limits.rejected <= 0.10 * N, (limits.rejected, state)
    # the first request went alone: nothing was refused before it was answered
    assert not limits.rejected_at or limits.admitted_at[0] < limits.rejected_at[0]
    if limits.max_in_flight is not None:
        assert state is not None and state.window is not None and state.window < 9.5  # grows by fractions of a slot
        assert limits.overloaded == limits.rejected  # refusals were all overload answers


async def test_two_instances_with_one_key_learn_together() -> None:
    limits = RateLimits(**RATE, headers="none", retry_after="none")
    async with serve_scenario(limits, ServerState(record_requests=False)) as srv:
        async with make("openai", srv.url) as one, make("openai", srv.url) as two, \
                make("openai", srv.url, api_key="sk-other") as other:
            import asyncio

            done = await asyncio.gather(
                one.batch_generate([f"a{i}" for i in range(N // 2)], concurrency=64, return_exceptions=True),
                two.batch_generate([f"b{i}" for i in range(N // 2)], concurrency=64, return_exceptions=True),
            )
            s1, s2, s3 = one.rate_limit_state(), two.rate_limit_state(), other.rate_limit_state()
    assert [r for part in done for r in part if isinstance(r, BaseException)] == []
    assert limits.admitted == N and limits.rejected <= 0.10 * N
    assert s1 is not None and s2 is not None and s3 is not None
    assert s1.shared and s1.successes == s2.successes == N  # one view of the server
    assert s3.successes == 0  # another key: another account, learned apart


async def test_a_retry_after_over_the_cap_raises_at_once_for_every_call() -> None:
    limits = RateLimits(closed_for=120.0)
    async with serve_scenario(limits, ServerState(record_requests=False)) as srv:
        async with make("openai", srv.url) as llm:
            results = await llm.batch_generate([f"p{i}" for i in range(50)], concurrency=16,
                                               return_exceptions=True)
            state = llm.rate_limit_state()
    assert all(isinstance(r, RateLimitError) for r in results)
    assert all(60 < (r.retry_after or 0) <= 120 for r in results if isinstance(r, RateLimitError))
    assert (limits.admitted, limits.rejected) == (0, 1)  # only the first request was sent
    assert state is not None and state.pause_length == 120 and state.paused_for > 60


async def test_a_fallback_chain_moves_on_from_a_member_paused_beyond_the_cap() -> None:
    closed = RateLimits(closed_for=3600.0)
    async with serve_scenario(closed, ServerState(record_requests=False)) as bad, \
            serve_scenario(RateLimits(), ServerState(record_requests=False)) as good:
        first = make("openai", bad.url, max_retries=3)
        second = make("openai", good.url)
        async with FallbackLLM(chain=[first, second]) as chain:
            replies = [await chain.generate(f"q{i}") for i in range(3)]
        await first.aclose()
        await second.aclose()
    assert replies == [f"Echo: q{i}" for i in range(3)]
    assert (closed.rejected, closed.admitted) == (1, 0)  # the paused member sent nothing more


async def test_infinite_reset_without_a_limit_header_pauses_nobody_forever() -> None:
    limits = RateLimits(headers="none", extra_headers={
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "inf",
        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "-1",
    })
    async with serve_scenario(limits, ServerState(record_requests=False)) as srv:
        async with make("openai", srv.url) as llm:
            results = await llm.batch_generate([f"p{i}" for i in range(20)], concurrency=8)
            state = llm.rate_limit_state()
    assert results == [f"Echo: p{i}" for i in range(20)]
    assert state is not None and state.paused_for == 0 and state.rate is None
