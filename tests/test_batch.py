"""Batched generation: order, per-item errors, cancellation, the bounded window of worker
tasks, the async-iterator form and progress bars."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from llmkit import BaseLLM, InvalidRequestError, MockLLM, OpenAILLM, RateLimitError, ServerError
from llmkit.calls.fanout import fan_out, fan_out_iter
from tests.servers import ServerState, serve_openai


class Reversed(BaseLLM):
    """A provider whose later prompts finish first (prompt ``"<i>"`` sleeps ``n - i`` ticks)."""

    provider_name = "reversed"

    def __init__(self, n: int) -> None:
        super().__init__({"provider": "reversed", "model": "r"})
        self.n = n
        self.finished: list[int] = []

    async def generate(self, messages: Any, **options: Any) -> str:
        i = int(messages)
        await asyncio.sleep((self.n - i) * 0.002)
        self.finished.append(i)
        return f"reply {i}"


class Counting(BaseLLM):
    """A trivial provider that records the number of live tasks on each call."""

    provider_name = "counting"

    def __init__(self) -> None:
        super().__init__({"provider": "counting", "model": "c"})
        self.calls = 0
        self.max_tasks = 0

    async def generate(self, messages: Any, **options: Any) -> str:
        self.calls += 1
        self.max_tasks = max(self.max_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return str(messages)


def llmkit_tasks() -> list[asyncio.Task[Any]]:
    """Live tasks running llmkit code (the test servers' own tasks are not counted)."""
    out = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and "/llmkit/" in code.co_filename:
            out.append(task)
    return out


# --------------------------------------------------------------------------- order


async def test_results_keep_input_order_although_completion_order_differs() -> None:
    n = 30
    llm = Reversed(n)
    results = await llm.batch_generate([str(i) for i in range(n)], concurrency=n)
    assert results == [f"reply {i}" for i in range(n)]
    assert llm.finished[0] > llm.finished[-1]  # they really did complete out of order


async def test_batch_against_server_keeps_order_and_bounds_concurrency() -> None:
    async with serve_openai(ServerState(delay=0.01)) as srv:
        async with OpenAILLM(model="gpt-4o-mini", base_url=srv.url, max_retries=0) as llm:
            results = await llm.batch_generate([f"p{i}" for i in range(40)], concurrency=5)
        assert results == [f"Echo: p{i}" for i in range(40)]
        assert srv.state.request_count == 40
        assert 1 < srv.state.max_in_flight <= 5


# --------------------------------------------------------------------------- errors


async def test_return_exceptions_puts_each_error_in_its_place() -> None:
    rate = RateLimitError("slow down", status=429)
    boom = ServerError("boom", status=500)
    llm = MockLLM(responses=lambda msgs: msgs[-1].content.upper(), failures=[None, rate, None, boom])
    results = await llm.batch_generate(["a", "b", "c", "d", "e"], concurrency=1, return_exceptions=True)
    assert results == ["A", rate, "C", boom, "E"]
    assert llm.get_metrics().failures_by_type == {"rate_limit": 1, "server_error": 1}


async def test_return_exceptions_with_a_server_fault() -> None:
    async with serve_openai() as srv:
        srv.state.add_fault("status", status=500, path="/v1/chat/completions")
        async with OpenAILLM(model="gpt-4o-mini", base_url=srv.url, max_retries=0) as llm:
            results = await llm.batch_generate(
                [f"p{i}" for i in range(10)], concurrency=3, return_exceptions=True
            )
    errors = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(results[errors[0]], ServerError)
    assert results[errors[0]].status == 500
    for i, r in enumerate(results):
        if i not in errors:
            assert r == f"Echo: p{i}"


async def test_first_error_raises_and_stops_the_rest() -> None:
    boom = ServerError("boom", status=500)
    llm = MockLLM(latency=0.01, failures=[None, None, boom])
    with pytest.raises(ServerError, match="boom"):
        await llm.batch_generate([f"p{i}" for i in range(200)], concurrency=2)
    await asyncio.sleep(0.05)
    assert len(llm.calls) < 10  # the remaining prompts were never sent
    assert llmkit_tasks() == []


# --------------------------------------------------------------------------- cancellation


async def test_cancelling_the_caller_cancels_in_flight_requests() -> None:
    async with serve_openai(ServerState(delay=0.3)) as srv:
        async with OpenAILLM(model="gpt-4o-mini", base_url=srv.url, max_retries=0) as llm:
            task = asyncio.create_task(
                llm.batch_generate([f"p{i}" for i in range(100)], concurrency=4)
            )
            for _ in range(500):
                if srv.state.in_flight >= 4:
                    break
                await asyncio.sleep(0.01)
            assert srv.state.in_flight == 4
            sent = srv.state.request_count  # the first request went alone, then four at once
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            seen = srv.state.request_count
            assert seen == sent <= 5
            assert llmkit_tasks() == []
            await asyncio.sleep(0.5)  # longer than a request takes
            assert srv.state.request_count == seen  # nothing else was sent
            assert llm.get_metrics().in_flight == 0


async def test_closing_the_iterator_early_cancels_the_workers() -> None:
    llm = MockLLM(latency=0.01)
    gen = llm.batch_generate_iter([f"p{i}" for i in range(1000)], concurrency=8)
    got = []
    async for pair in gen:
        got.append(pair)
        if len(got) == 5:
            break
    await gen.aclose()
    await asyncio.sleep(0.05)
    calls = len(llm.calls)
    assert calls < 40
    await asyncio.sleep(0.05)
    assert len(llm.calls) == calls
    assert llmkit_tasks() == []


# --------------------------------------------------------------------------- bounded window


async def test_window_is_bounded_for_100k_prompts() -> None:
    concurrency = 16
    drawn = 0
    done = 0
    max_tasks = 0
    max_ahead = 0

    def prompts() -> Iterator[int]:
        nonlocal drawn
        for i in range(100_000):
            drawn += 1
            yield i

    async def func(x: int) -> int:
        nonlocal max_tasks, max_ahead
        max_tasks = max(max_tasks, len(asyncio.all_tasks()))
        max_ahead = max(max_ahead, drawn - done)
        await asyncio.sleep(0)
        return x * 2

    count = 0
    async for index, result in fan_out_iter(func, prompts(), concurrency=concurrency):
        assert result == index * 2
        done += 1
        count += 1
    assert count == 100_000
    # the test task + the runner + one task per worker; never a task per prompt
    assert max_tasks <= concurrency + 3
    # prompts are drawn lazily: at most the workers' items plus the bounded result queue
    assert max_ahead <= 3 * concurrency + 2


async def test_batch_generate_iter_window_with_a_generator() -> None:
    llm = Counting()
    gen = (f"p{i}" for i in range(20_000))
    seen = set()
    async for index, reply in llm.batch_generate_iter(gen, concurrency=32):
        assert reply == f"p{index}"
        seen.add(index)
    assert seen == set(range(20_000))
    assert llm.calls == 20_000
    assert llm.max_tasks <= 32 + 3


async def test_fan_out_over_a_generator_keeps_order() -> None:
    async def func(x: int) -> int:
        await asyncio.sleep(0.001 * (x % 3))
        return -x

    results = await fan_out(func, (i for i in range(500)), concurrency=7)
    assert results == [-i for i in range(500)]


# --------------------------------------------------------------------------- iterator form


async def test_iterator_yields_every_index_once_with_errors_in_place() -> None:
    boom = ServerError("boom")
    llm = MockLLM(failures=[None] * 7 + [boom])
    pairs = [p async for p in llm.batch_generate_iter(
        [f"q{i}" for i in range(25)], concurrency=4, return_exceptions=True
    )]
    assert sorted(i for i, _ in pairs) == list(range(25))
    by_index = dict(pairs)
    errors = [i for i, r in by_index.items() if r is boom]
    assert len(errors) == 1
    for i, r in by_index.items():
        if i not in errors:
            assert r == f"mock response to: q{i}"


# --------------------------------------------------------------------------- progress


async def test_progress_true_draws_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    llm = MockLLM()
    results = await llm.batch_generate([f"x{i}" for i in range(12)], progress=True)
    assert results == [f"mock response to: x{i}" for i in range(12)]
    err = capsys.readouterr().err
    assert "12/12" in err and "100%" in err


async def test_progress_accepts_a_user_supplied_bar() -> None:
    class Bar:
        def __init__(self) -> None:
            self.n = 0
            self.closed = False

        def update(self, k: int) -> None:
            self.n += k

        def close(self) -> None:
            self.closed = True

    bar = Bar()
    llm = MockLLM()
    results = await llm.batch_generate(["a", "b", "c"], progress=bar, return_exceptions=True)
    assert len(results) == 3
    assert bar.n == 3 and bar.closed


async def test_a_string_is_not_a_list_of_prompts() -> None:
    async with MockLLM("mock") as llm:
        with pytest.raises(InvalidRequestError, match="list of prompts"):
            await llm.batch_generate("abc")
        with pytest.raises(InvalidRequestError, match="list of prompts"):
            async for _ in llm.batch_generate_iter("abc"):
                pass
        assert llm.calls == []
