"""Client-side rate limits against the rate-limited OpenAI test server (tests/servers/
ratelimit_server.py): configured limits, adaptation to OpenAI's x-ratelimit-* headers
without configuration, a 429 pausing every task, token costs corrected by usage.

Timing bounds carry slack for a loaded 2-core machine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from llmkit import LLMConfig, OpenAILLM
from llmkit.http.ratelimit import Feedback, LimiterState, estimate_tokens, parse_reset, usage_tokens
from llmkit.http.ratelimit_state import POLL_SECONDS
from tests.servers import ServerState
from tests.servers.ratelimit_server import RateLimits, format_reset, serve_ratelimited_openai


def prompts(n: int, words: int = 1) -> list[str]:
    return [" ".join(f"p{i}w{j}" for j in range(words)) for i in range(n)]


def most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# --------------------------------------------------------------------------- parsing


def test_reset_durations_in_openai_form() -> None:
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("1s") == 1.0
    assert parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_reset("2.5") == 2.5
    assert parse_reset("soon") is None and parse_reset("") is None and parse_reset("5x") is None
    for seconds in (0.02, 0.999, 1.0, 1.5, 59.25, 360.0):
        assert parse_reset(format_reset(seconds)) == pytest.approx(seconds, abs=0.001)


def test_feedback_reads_both_dimensions_and_retry_after() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6ms",
        "retry-after-ms": "250",
        "retry-after": "1",
    }
    fb = Feedback.from_headers(headers, 429)
    assert fb.requests is not None and (fb.requests.limit, fb.requests.remaining) == (60, 59)
    assert fb.requests.reset == 1.0
    assert fb.tokens is not None and fb.tokens.reset == pytest.approx(0.006)
    assert fb.retry_after == pytest.approx(0.25)  # the millisecond header wins
    assert Feedback.from_headers(headers, 200).retry_after is None


def test_a_server_answer_teaches_rate_and_level() -> None:
    state = LimiterState()
    wait, first = state.reserve(0, now=0.0)
    assert wait == 0 and first is not None
    assert state.reserve(0, now=0.001) == (pytest.approx(POLL_SECONDS), None)  # held behind the first
    # a 10-request bucket refilling at 40/s, 9 left after the first request
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "25ms",
    }
    state.observe(first, Feedback.from_headers(headers, 200), now=0.002)
    # "9 left" is rounded down and "25ms" up: this answer only bounds the rate from above
    assert 0 < state.learned.rate <= 10 / 0.024
    # the last one's answer: none left, full again in 250ms: the rate is about 40/s
    _, last = state.reserve(0, now=0.003)
    headers.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "250ms"})
    state.observe(last, Feedback.from_headers(headers, 200), now=0.004)
    assert state.learned.rate == pytest.approx(40, rel=0.1)
    # then spaced at the learned rate; what goes at once is at most a tenth of a second's
    # worth (this changed on purpose: the bucket's size is never sent as one burst)
    waits = [state.reserve(0, now=0.3)[0] for _ in range(8)]
    assert sum(w == 0 for w in waits) <= max(1, round(0.1 * state.learned.rate))
    assert waits[-1] - waits[-2] == pytest.approx(1 / state.learned.rate)


def test_remaining_zero_without_a_known_rate_pauses_until_reset() -> None:
    state = LimiterState()
    _, ticket = state.reserve(0, now=0.0)
    state.observe(
        ticket,
        Feedback.from_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, 200),
        now=0.0,
    )
    wait, held = state.reserve(0, now=0.5)
    assert held is None and wait == pytest.approx(1.5)


def test_token_estimates_and_usage() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert estimate_tokens(body) == pytest.approx(100 + 1 + 50, abs=2)
    assert estimate_tokens({"prompt": "abcd" * 10, "options": {"num_predict": 7}}) == 17
    assert estimate_tokens({"inputs": "abcd", "parameters": {"max_new_tokens": 3}}) == 4
    assert usage_tokens({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}) == 7
    assert usage_tokens({"prompt_eval_count": 5, "eval_count": 6}) == 11
    assert usage_tokens({"choices": []}) is None


def test_config_limits_are_validated() -> None:
    assert LLMConfig(provider="openai", requests_per_minute=90).requests_per_minute == 90
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="tokens_per_minute"):
            LLMConfig(provider="openai", tokens_per_minute=bad)


# --------------------------------------------------------------------------- against servers


async def test_fan_out_adapts_to_headers_without_configuration() -> None:
    """150 prompts at concurrency 64 against 40 requests/s (burst 10), default settings."""
    n, rate, burst = 150, 40.0, 10
    limits = RateLimits(requests_per_second=rate, request_burst=burst)
    async with serve_ratelimited_openai(limits, ServerState(record_requests=False)) as srv:
        async with OpenAILLM(model="gpt-4o-mini", base_url=srv.url) as llm:
            started = time.perf_counter()
            results = await llm.batch_generate(prompts(n), concurrency=64, return_exceptions=True)
            elapsed = time.perf_counter() - started
    assert results == [f"Echo: {p}" for p in prompts(n)]  # no prompt failed
    assert limits.admitted == n
    assert limits.rejected <= 0.10 * (limits.admitted + limits.rejected)
    ideal = (n - burst) / rate
    assert elapsed <= 1.25 * ideal + 0.5, (elapsed, ideal)


async def test_configured_requests_per_minute_is_never_exceeded() -> None:
    limits = RateLimits()  # an unlimited server that notes when it admitted each request
    async with serve_ratelimited_openai(limits) as srv:
        async with OpenAILLM(
            model="gpt-4o-mini", base_url=srv.url, requests_per_minute=1200
        ) as llm:  # 20/s
            started = time.perf_counter()
            await llm.batch_generate(prompts(30), concurrency=30)
            elapsed = time.perf_counter() - started
    assert limits.admitted == 30
    assert elapsed >= 29 / 20 * 0.95
    assert most_in_window(limits.admitted_at, 1.0) <= 21  # one at once, then 20 a second


async def test_one_limit_across_threads_and_loops() -> None:
    limits = RateLimits()
    async with serve_ratelimited_openai(limits) as srv:
        llm = OpenAILLM(model="gpt-4o-mini", base_url=srv.url, requests_per_minute=1200)
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            async def run() -> None:
                # no aclose() here: closing is final for the instance (API.md), and the
                # other thread is still using it; this loop's session closes with the loop
                await llm.batch_generate(prompts(10), concurrency=10)

            try:
                asyncio.run(run())
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:  # joined off the loop, which keeps the server answering
            await asyncio.to_thread(t.join)
        elapsed = time.perf_counter() - started
        await llm.aclose()
    assert errors == []
    assert limits.admitted == 20
    assert elapsed >= 19 / 20 * 0.95  # one 20/s limit for both threads, not one each
    assert most_in_window(limits.admitted_at, 1.0) <= 21  # one at once, then 20 a second


async def test_a_429_pauses_every_task_of_the_instance() -> None:
    limits = RateLimits()  # notes when it admitted each request
    async with serve_ratelimited_openai(limits, ServerState(delay=0.05)) as srv:
        async with OpenAILLM(model="gpt-4o-mini", base_url=srv.url) as llm:
            await llm.generate("warm up")  # the server's first answer is known
            srv.state.add_fault("status", status=429, headers={"retry-after-ms": "600"})
            started = time.monotonic()
            results = await llm.batch_generate(prompts(20), concurrency=4)
    assert results == [f"Echo: {p}" for p in prompts(20)]
    after = sorted(t - started for t in limits.admitted_at[1:])
    assert len(after) == 20
    # the three sent with the rejected one were answered; then nothing until the pause ended
    assert sum(t < 0.15 for t in after) == 3
    assert after[3] >= 0.6
    assert llm.get_metrics().retries == 1


async def test_tokens_per_minute_against_a_token_limited_server() -> None:
    """Token costs are estimated from prompt and max_tokens, then corrected by usage."""
    n, rate, burst = 60, 800.0, 400.0  # tokens per second; each request costs ~41
    limits = RateLimits(tokens_per_second=rate, token_burst=burst)
    async with serve_ratelimited_openai(limits, ServerState(record_requests=False)) as srv:
        async with OpenAILLM(
            model="gpt-4o-mini", base_url=srv.url, tokens_per_minute=rate * 60, max_tokens=1000
        ) as llm:
            started = time.perf_counter()
            results = await llm.batch_generate(prompts(n, words=20), concurrency=32)
            elapsed = time.perf_counter() - started
    assert len(results) == n
    assert limits.rejected <= 0.10 * (limits.admitted + limits.rejected)
    ideal = (limits.tokens_admitted - burst) / rate
    assert ideal > 2.0
    assert elapsed <= 1.25 * ideal + 0.5, (elapsed, ideal)
    # estimates of 1000+ tokens would have allowed under one request a second
    assert elapsed < n / 2
