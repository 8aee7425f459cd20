"""Lifecycle and concurrency of one instance: close is final, sessions die with their loops,
and ``max_concurrency`` holds per instance across loops, threads and every kind of
provider, with in-flight and waiting calls told apart in the metrics."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import warnings
from typing import Any

import pytest

from llmkit import BaseLLM, ConfigError, MockLLM, OpenAILLM
from tests.servers import ServerHandle, ServerState, serve_openai
from tests.test_faults import threaded_server

FAST_RETRY = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}


def openai(url: str, **kwargs: Any) -> OpenAILLM:
    kwargs.setdefault("extra", FAST_RETRY)
    return OpenAILLM(model="gpt-4o-mini", base_url=url, api_key="sk-life-0123456789", **kwargs)


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- close


async def test_request_in_flight_during_close_is_not_retried(openai_server: ServerHandle) -> None:
    openai_server.state.delay = 1.0
    llm = openai(openai_server.url, max_retries=3)
    task = asyncio.create_task(llm.generate("hello"))
    await wait_until(lambda: openai_server.state.in_flight == 1)
    await llm.aclose()
    with pytest.raises(ConfigError, match="instance is closed"):
        await task
    await asyncio.sleep(0.1)
    assert openai_server.state.total_requests == 1  # never sent again
    assert llm._http.sessions._entries == {}  # no new pool was made
    assert llm.get_metrics().retries == 0


@pytest.mark.parametrize("method", ["generate", "chat", "embed", "stream"])
async def test_calls_after_close_raise_config_error(
    openai_server: ServerHandle, method: str
) -> None:
    for llm in (openai(openai_server.url), MockLLM()):
        await llm.generate("warm up")
        await llm.close()
        await llm.close()  # idempotent
        with pytest.raises(ConfigError, match="instance is closed"):
            if method == "stream":
                async for _ in llm.chat_stream("hi"):
                    pass
            elif method == "embed":
                await llm.embed("hi")
            else:
                await getattr(llm, method)("hi")
    assert openai_server.state.request_count == 1


def test_aclose_from_another_loop_closes_a_session_on_an_idle_loop() -> None:
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with threaded_server(serve_openai) as handle, warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            llm = openai(handle.url)
            idle = asyncio.new_event_loop()
            try:
                assert idle.run_until_complete(llm.generate("on the first loop"))
                session = llm._http.sessions._entries[idle].session
                asyncio.run(llm.aclose())  # another loop; the first one is idle
                assert session.closed
                assert llm._http.sessions._entries == {}
            finally:
                idle.close()
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert [str(x.message) for x in w] == []
    assert unraisable == []


def test_closed_loops_are_not_kept() -> None:
    with threaded_server(serve_openai) as handle:
        llm = openai(handle.url)
        for _ in range(3):
            assert asyncio.run(llm.generate("hi"))
            # asyncio.run shut its loop down: the session went with it
            assert llm._http.sessions._entries == {}
        asyncio.run(llm.aclose())


# --------------------------------------------------------------------------- max_concurrency


def run_in_threads(n: int, fn: Any) -> list[Any]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = asyncio.run(fn(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_http_max_concurrency_holds_across_threads() -> None:
    state = ServerState(delay=0.2)
    with threaded_server(serve_openai, state) as handle:
        llm = openai(handle.url, max_concurrency=1)

        async def calls(i: int) -> list[str]:
            return list(await asyncio.gather(*(llm.generate(f"t{i} c{j}") for j in range(2))))

        started = time.perf_counter()
        results = run_in_threads(3, calls)
        elapsed = time.perf_counter() - started
        asyncio.run(llm.aclose())
    assert all(len(r) == 2 for r in results)
    assert state.total_requests == 6
    assert state.max_in_flight == 1  # three threads, one request on the wire at a time
    assert elapsed >= 6 * 0.2 * 0.9


class Counting(BaseLLM):
    """A custom provider implementing only ``generate``; it counts its own concurrency."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    async def generate(self, messages: Any, **options: Any) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.05)
        finally:
            with self.lock:
                self.now -= 1
        return "ok"


def test_custom_provider_obeys_max_concurrency_across_threads() -> None:
    llm = Counting({"provider": "counting", "model": "m", "max_concurrency": 2})

    async def calls(i: int) -> list[Any]:
        async def stream() -> str:
            return "".join([d async for d in llm.generate_stream("s")])

        return list(
            await asyncio.gather(*(llm.generate("x") for _ in range(4)), stream(), llm.chat("c"))
        )

    results = run_in_threads(3, calls)
    assert all(r[:5] == ["ok"] * 5 and r[5].content == "ok" for r in results)
    assert llm.peak == 2  # 18 calls from three loops, never more than two at once
    m = llm.get_metrics()
    assert (m.requests, m.successes, m.in_flight, m.waiting, m.max_in_flight) == (18, 18, 0, 0, 2)


async def test_mock_obeys_max_concurrency_and_metrics_tell_waiting_apart() -> None:
    llm = MockLLM(latency=0.2, max_concurrency=2)
    tasks = [asyncio.create_task(llm.generate(f"p{i}")) for i in range(6)]
    await wait_until(lambda: llm.get_metrics().in_flight == 2)
    m = llm.get_metrics()
    assert (m.in_flight, m.waiting) == (2, 4)
    await asyncio.gather(*tasks)
    m = llm.get_metrics()
    assert (m.in_flight, m.waiting, m.max_in_flight, m.successes) == (0, 0, 2, 6)


async def test_http_metrics_tell_in_flight_and_waiting_apart(openai_server: ServerHandle) -> None:
    openai_server.state.delay = 0.3
    llm = openai(openai_server.url, max_concurrency=1)
    tasks = [asyncio.create_task(llm.generate(f"p{i}")) for i in range(5)]
    await wait_until(lambda: openai_server.state.in_flight == 1)
    m = llm.get_metrics()
    assert (m.in_flight, m.waiting) == (1, 4)
    await asyncio.gather(*tasks)
    m = llm.get_metrics()
    assert (m.in_flight, m.waiting, m.max_in_flight) == (0, 0, 1)
    assert openai_server.state.max_in_flight == 1
    await llm.aclose()


async def test_cancelled_mock_call_frees_its_slot() -> None:
    llm = MockLLM(latency=5.0, max_concurrency=1)
    running = asyncio.create_task(llm.generate("slow"))
    queued = asyncio.create_task(llm.generate("queued"))
    await wait_until(lambda: llm.get_metrics().waiting == 1)
    queued.cancel()
    running.cancel()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    m = llm.get_metrics()
    assert (m.in_flight, m.waiting) == (0, 0)
    assert m.failures_by_type == {"cancelled": 2}
    llm.latency = 0.0
    assert await asyncio.wait_for(llm.generate("after"), 1.0)  # the slot is free again


async def test_nested_calls_of_one_instance_share_the_slot() -> None:
    """MockLLM's chat_stream is built on its chat: with one slot it must not wait on itself."""
    llm = MockLLM(responses="one two three", max_concurrency=1)
    chunks = await asyncio.wait_for(_collect(llm), 2.0)
    assert "".join(c.delta for c in chunks) == "one two three"
    assert llm.get_metrics().requests == 1


async def _collect(llm: BaseLLM) -> list[Any]:
    return [c async for c in llm.chat_stream("hi")]


def test_limiter_holds_across_threads_through_cancellations() -> None:
    """Four loops in four threads share one limiter of 3; a third of the holders and
    waiters are cancelled at random points: never more than 3 inside, nothing leaked."""
    from llmkit.calls.limiter import ConcurrencyLimiter

    limiter = ConcurrencyLimiter(3)
    lock = threading.Lock()
    inside = [0, 0]  # now, peak

    async def hold(i: int) -> None:
        async with limiter:
            with lock:
                inside[0] += 1
                inside[1] = max(inside[1], inside[0])
            try:
                await asyncio.sleep(0.002 * (i % 3))
            finally:
                with lock:
                    inside[0] -= 1

    async def loop_body(t: int) -> int:
        tasks = [asyncio.create_task(hold(i)) for i in range(60)]
        await asyncio.sleep(0.001 * t)
        for task in tasks[t::3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(isinstance(r, asyncio.CancelledError) for r in results)

    cancelled = run_in_threads(4, loop_body)
    assert sum(cancelled) > 0
    assert inside == [0, 3]
    assert (limiter.in_use(), limiter.waiting(), limiter.peak()) == (0, 0, 3)


def test_limiter_close_wakes_waiters_of_every_loop_and_refuses_later_waits() -> None:
    """Waiters parked on three loops in three threads are all woken by a close from the
    main thread with LimiterClosed; a later wait is refused, a held slot stays held until
    released, and a slot handed over is never lost."""
    from llmkit.calls.limiter import ConcurrencyLimiter, LimiterClosed

    limiter = ConcurrencyLimiter(1)
    assert limiter.try_acquire()  # the slot an idle stream holds
    parked = threading.Barrier(4)

    async def wait(i: int) -> str:
        task = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        parked.wait(10)  # all three are queued
        try:
            await asyncio.wait_for(task, 10)
        except LimiterClosed:
            return "closed"
        return "acquired"

    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.extend(run_in_threads(3, wait)))
    thread.start()
    parked.wait(10)
    while limiter.waiting() < 3:
        time.sleep(0.001)
    limiter.close()
    thread.join(30)
    assert results == ["closed"] * 3
    assert (limiter.in_use(), limiter.waiting()) == (1, 0)

    async def later() -> None:
        with pytest.raises(LimiterClosed):
            await limiter.acquire()
        limiter.release()  # the holder ends: the slot is free again, and taken without waiting
        await limiter.acquire()
        limiter.release()

    asyncio.run(later())
    assert limiter.in_use() == 0
