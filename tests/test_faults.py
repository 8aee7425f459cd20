"""Fault matrix: every injected server fault against every HTTP provider in API mode.

Each provider runs against its own local wire-format server (tests/servers), started in a
separate thread with its own event loop, so that the client's loop holds only the client's
tasks and the checks after each case (no acquired connections, no pending tasks, metrics)
see the library alone. Timeouts and retry waits are kept short.
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from llmkit import (
    BaseLLM,
    HuggingFaceLLM,
    LLMConfig,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    OllamaLLM,
    OpenAILLM,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamError,
    StreamTimeoutError,
)
from tests.servers import ServerHandle, ServerState, serve_hf, serve_ollama, serve_openai

KEY = "sk-fault-0123456789abcdefghijklmnop"
TIMEOUT = 2.0  # cases about timeouts set their own 0.2-0.3 s
FAST_RETRY = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}
REPLY = "alpha beta gamma delta epsilon zeta eta theta"
WORDS = REPLY.split()
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- servers


@contextmanager
def threaded_server(
    serve: Callable[[ServerState], AbstractAsyncContextManager[ServerHandle]],
    state: ServerState | None = None,
) -> Iterator[ServerHandle]:
    """Run a test server on its own loop in a daemon thread; yields its handle."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            try:
                async with serve(state if state is not None else ServerState()) as handle:
                    box["handle"] = handle
                    box["loop"] = asyncio.get_running_loop()
                    box["stop"] = stop = asyncio.Event()
                    ready.set()
                    await stop.wait()
            except BaseException as exc:  # pragma: no cover - startup failure
                box["error"] = exc
                ready.set()

        asyncio.run(main())

    thread = threading.Thread(target=run, name="fault-server", daemon=True)
    thread.start()
    assert ready.wait(10), "test server did not start"
    if "error" in box:  # pragma: no cover
        raise box["error"]
    try:
        yield box["handle"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        assert not thread.is_alive()


_CHILD_SERVER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import tests.servers as servers

async def main():
    state = servers.ServerState()
    state.reply = json.loads(sys.argv[3])
    for fault in json.loads(sys.argv[4]):
        state.add_fault(**fault)
    async with getattr(servers, sys.argv[2])(state) as handle:
        print(handle.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@asynccontextmanager
async def child_server(serve_name: str, faults: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A test server in a child process (so that tracemalloc sees the client alone);
    yields its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD_SERVER, str(ROOT), serve_name, json.dumps(REPLY),
        json.dumps(faults), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.startswith(b"http://"), line
        yield line.decode().strip()
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:  # pragma: no cover
            proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- providers


@dataclass(frozen=True)
class Provider:
    """How to build a client for one provider and where its chat endpoint lives."""

    name: str
    serve: Callable[[ServerState], AbstractAsyncContextManager[ServerHandle]]
    serve_name: str
    cls: type[BaseLLM]
    model: str
    chat_path: str  # server-side path of the chat endpoint (fault matching)
    extra: dict[str, Any] = field(default_factory=dict)
    lead_events: int = 0  # stream events before the first text delta (OpenAI's role chunk)

    def make(self, url: str, **kw: Any) -> BaseLLM:
        extra = {**FAST_RETRY, **self.extra, **kw.pop("extra", {})}
        kw.setdefault("timeout", TIMEOUT)
        config = LLMConfig(
            provider=self.name, model=self.model, base_url=url, api_key=KEY, extra=extra, **kw
        )
        return self.cls(config)


PROVIDERS = {
    "openai": Provider(
        "openai", serve_openai, "serve_openai", OpenAILLM, "gpt-4o-mini", "/v1/chat/completions", lead_events=1
    ),
    "ollama": Provider("ollama", serve_ollama, "serve_ollama", OllamaLLM, "llama3.2", "/api/chat"),
    "huggingface": Provider(
        "huggingface", serve_hf, "serve_hf", HuggingFaceLLM, "meta-llama/Llama-3.1-8B-Instruct",
        "/v1/chat/completions", {"api": "router"}, lead_events=1,
    ),
}


@dataclass
class Target:
    """One provider, its running server, and the clients a test made."""

    provider: Provider
    server: ServerHandle
    clients: list[BaseLLM] = field(default_factory=list)

    @property
    def state(self) -> ServerState:
        return self.server.state

    @property
    def name(self) -> str:
        return self.provider.name

    def make(self, **kw: Any) -> BaseLLM:
        llm = self.provider.make(self.server.url, **kw)
        self.clients.append(llm)
        return llm

    def fault(self, kind: str, **params: Any) -> None:
        self.state.add_fault(kind, path=self.provider.chat_path, **params)

    def text_after(self, events: int) -> str:
        """The text a stream delivered after its first ``events`` events."""
        return " ".join(WORDS[: events - self.provider.lead_events])

    @property
    def chat_requests(self) -> int:
        return len(self.state.requests_to(self.provider.chat_path))


async def generate(llm: BaseLLM, prompt: str = "hello there") -> str:
    return await llm.generate(prompt)


async def stream_into(llm: BaseLLM, out: list[str], prompt: str = "hello there") -> None:
    """Consume ``generate_stream``, appending each delta to ``out`` as it arrives (so a
    test sees what was yielded before an error)."""
    async with aclosing(llm.generate_stream(prompt)) as deltas:
        async for delta in deltas:
            out.append(delta)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def check_clean(
    llm: BaseLLM,
    *,
    retries: int | range,
    failures: dict[str, int] | None = None,
    successes: int | None = None,
) -> None:
    """No connection held, no task left behind, metrics as expected."""
    await asyncio.sleep(0)
    conn = llm._http.sessions.connector()  # type: ignore[attr-defined]
    assert conn is not None, "the client never opened a session"
    assert len(conn._acquired) == 0, f"connections still acquired: {conn._acquired}"
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert pending == [], f"tasks left pending: {pending}"
    m = llm.get_metrics()
    assert m.in_flight == 0
    assert (m.retries in retries) if isinstance(retries, range) else (m.retries == retries), m
    assert m.failures_by_type == (failures or {}), m
    if successes is not None:
        assert m.successes == successes, m


@pytest.fixture(params=list(PROVIDERS))
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    provider = PROVIDERS[request.param]
    with threaded_server(provider.serve) as handle:
        handle.state.reply = REPLY
        t = Target(provider, handle)
        try:
            yield t
        finally:
            for llm in t.clients:
                await llm.aclose()


# --------------------------------------------------------------------------- 429


async def test_429_retry_after_seconds(target: Target) -> None:
    target.fault("status", status=429, headers={"Retry-After": "1"})
    llm = target.make()
    started = time.perf_counter()
    assert await generate(llm) == REPLY
    elapsed = time.perf_counter() - started
    assert 0.95 <= elapsed < 2.5, elapsed
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


async def test_429_retry_after_http_date(target: Target) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=2)
    target.fault(
        "status", status=429, headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)}
    )
    llm = target.make()
    started = time.perf_counter()
    assert await generate(llm) == REPLY
    elapsed = time.perf_counter() - started
    # The date has one-second resolution: the wait is between 1 and 2 seconds.
    assert 0.9 <= elapsed < 3.0, elapsed
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


async def test_429_retry_after_ms(target: Target) -> None:
    # retry-after-ms wins over a Retry-After that would wait far longer.
    target.fault("status", status=429, headers={"retry-after-ms": "300", "Retry-After": "30"})
    llm = target.make()
    started = time.perf_counter()
    assert await generate(llm) == REPLY
    elapsed = time.perf_counter() - started
    assert 0.28 <= elapsed < 2.0, elapsed
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


async def test_429_in_stream_before_output_is_retried(target: Target) -> None:
    target.fault("status", status=429, headers={"retry-after-ms": "100"})
    llm = target.make()
    out: list[str] = []
    await stream_into(llm, out)
    assert "".join(out) == REPLY
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


async def test_429_quota(target: Target) -> None:
    llm = target.make()
    if target.name == "openai":
        # insufficient_quota: a RateLimitError that is not retried.
        target.fault("quota")
        with pytest.raises(RateLimitError) as info:
            await generate(llm)
        assert info.value.code == "insufficient_quota"
        assert info.value.status == 429
        assert info.value.retryable is False
        assert "quota" in info.value.message
        assert target.chat_requests == 1
        await check_clean(llm, retries=0, failures={"rate_limit": 1})
    else:
        # The provider's own 429 body has no quota code: retried like any rate limit.
        target.fault("status", status=429)
        assert await generate(llm) == REPLY
        assert target.chat_requests == 2
        await check_clean(llm, retries=1, successes=1)


async def test_429_exhausts_retries(target: Target) -> None:
    target.fault("status", status=429, times=5, headers={"retry-after-ms": "10"})
    llm = target.make(max_retries=2)
    with pytest.raises(RateLimitError) as info:
        await generate(llm)
    assert info.value.status == 429 and info.value.retry_after == pytest.approx(0.01)
    assert target.chat_requests == 3
    await check_clean(llm, retries=2, failures={"rate_limit": 1})


# --------------------------------------------------------------------------- 5xx


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_then_success(target: Target, status: int) -> None:
    target.fault("status", status=status, times=2)
    llm = target.make(max_retries=2)
    assert await generate(llm) == REPLY
    assert target.chat_requests == 3
    await check_clean(llm, retries=2, successes=1)


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_always(target: Target, status: int) -> None:
    target.fault("status", status=status, times=10)
    llm = target.make(max_retries=1)
    with pytest.raises(ServerError) as info:
        await generate(llm)
    assert info.value.status == status
    assert info.value.provider == target.name
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, failures={"server_error": 1})


async def test_5xx_in_stream_before_output_is_retried(target: Target) -> None:
    target.fault("status", status=502)
    llm = target.make()
    out: list[str] = []
    await stream_into(llm, out)
    assert "".join(out) == REPLY
    await check_clean(llm, retries=1, successes=1)


# --------------------------------------------------------------------------- connections


async def test_connection_refused(target: Target, refused_url: str) -> None:
    url = refused_url + ("/v1" if target.name == "openai" else "")
    llm = target.provider.make(url, max_retries=1)
    target.clients.append(llm)
    started = time.perf_counter()
    with pytest.raises(LLMConnectionError) as info:
        await generate(llm)
    assert isinstance(info.value, ConnectionError)
    assert info.value.type == "connection"
    assert "cannot connect" in info.value.message
    assert time.perf_counter() - started < 2.0
    await check_clean(llm, retries=1, failures={"connection": 1})
    out: list[str] = []
    with pytest.raises(LLMConnectionError):
        await stream_into(llm, out)
    assert out == []
    await check_clean(llm, retries=2, failures={"connection": 2})


async def test_reset_before_headers_then_success(target: Target) -> None:
    target.fault("reset_before_headers")
    llm = target.make()
    assert await generate(llm) == REPLY
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


async def test_reset_before_headers_always(target: Target) -> None:
    target.fault("reset_before_headers", times=10)
    llm = target.make(max_retries=2)
    with pytest.raises(LLMConnectionError) as info:
        await generate(llm)
    assert isinstance(info.value, ConnectionError)
    assert target.chat_requests == 3
    await check_clean(llm, retries=2, failures={"connection": 1})


async def test_reset_before_headers_in_stream_is_retried(target: Target) -> None:
    target.fault("reset_before_headers")
    llm = target.make()
    out: list[str] = []
    await stream_into(llm, out)
    assert "".join(out) == REPLY
    await check_clean(llm, retries=1, successes=1)


async def test_reset_mid_body_non_stream_is_retried(target: Target) -> None:
    target.fault("reset_mid_body")
    llm = target.make()
    assert await generate(llm) == REPLY
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


async def test_reset_mid_body_non_stream_always(target: Target) -> None:
    target.fault("reset_mid_body", times=10)
    llm = target.make(max_retries=1)
    with pytest.raises(LLMConnectionError) as info:
        await generate(llm)
    assert "incomplete" in info.value.message or "disconnected" in info.value.message
    await check_clean(llm, retries=1, failures={"connection": 1})


async def test_reset_mid_stream_after_output(target: Target) -> None:
    target.fault("reset_mid_body", after=3)
    llm = target.make()
    out: list[str] = []
    with pytest.raises(StreamError) as info:
        await stream_into(llm, out)
    assert not isinstance(info.value, ConnectionError)
    # The deltas sent before the reset reached the consumer; nothing was retried.
    assert out and REPLY.startswith("".join(out)) and "".join(out) != REPLY
    assert target.chat_requests == 1
    await check_clean(llm, retries=0, failures={"stream_error": 1})


async def test_reset_mid_stream_before_output_is_retried(target: Target) -> None:
    target.fault("reset_mid_body", after=0)
    llm = target.make()
    out: list[str] = []
    await stream_into(llm, out)
    assert "".join(out) == REPLY
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


# --------------------------------------------------------------------------- timeouts


async def test_slow_headers_timeout(target: Target) -> None:
    target.fault("slow_headers", delay=2.0, times=10)
    llm = target.make(max_retries=1, timeout=0.2)
    started = time.perf_counter()
    with pytest.raises(LLMTimeoutError) as info:
        await generate(llm)
    elapsed = time.perf_counter() - started
    assert isinstance(info.value, TimeoutError)
    assert info.value.type == "timeout"
    assert "timed out" in info.value.message
    assert 0.4 <= elapsed < 1.5, elapsed  # two attempts of 0.2 s, not the server's 2 s
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, failures={"timeout": 1})


async def test_slow_headers_once_then_success(target: Target) -> None:
    target.fault("slow_headers", delay=2.0)
    llm = target.make(timeout=0.5)
    assert await generate(llm) == REPLY
    await check_clean(llm, retries=1, successes=1)


async def test_slow_headers_in_stream_timeout(target: Target) -> None:
    target.fault("slow_headers", delay=2.0, times=10)
    llm = target.make(max_retries=1, timeout=0.2)
    out: list[str] = []
    with pytest.raises(LLMTimeoutError):
        await stream_into(llm, out)
    assert out == []
    await check_clean(llm, retries=1, failures={"timeout": 1})


async def test_slow_body_non_stream_times_out(target: Target) -> None:
    target.fault("slow_body", delay=2.0, times=10)
    llm = target.make(max_retries=1, timeout=0.2)
    with pytest.raises(LLMTimeoutError) as info:
        await generate(llm)
    assert isinstance(info.value, TimeoutError)
    await check_clean(llm, retries=1, failures={"timeout": 1})


async def test_slow_body_in_stream_after_output(target: Target) -> None:
    # sock_read timeout after deltas were yielded: a StreamError (not retried, since output
    # was already delivered) that is also an LLMTimeoutError (and says the read timed out).
    target.fault("slow_body", after=2, delay=2.0)
    llm = target.make(timeout=0.3)
    out: list[str] = []
    started = time.perf_counter()
    with pytest.raises(StreamError) as info:
        await stream_into(llm, out)
    assert time.perf_counter() - started < 1.5
    assert isinstance(info.value, LLMTimeoutError) and isinstance(info.value, TimeoutError)
    assert isinstance(info.value, StreamTimeoutError) and not info.value.retryable
    assert "timed out" in info.value.message
    assert "".join(out) == target.text_after(2) and out
    assert target.chat_requests == 1
    await check_clean(llm, retries=0, failures={"stream_error": 1})


async def test_slow_body_in_stream_before_output_is_retried(target: Target) -> None:
    target.fault("slow_body", after=0, delay=2.0)
    llm = target.make(timeout=0.5)
    out: list[str] = []
    await stream_into(llm, out)
    assert "".join(out) == REPLY
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)


# --------------------------------------------------------------------------- stream shape


async def test_truncated_stream(target: Target) -> None:
    target.fault("truncate_stream", after=3)
    llm = target.make()
    out: list[str] = []
    with pytest.raises(StreamError) as info:
        await stream_into(llm, out)
    assert "truncated" in info.value.message
    assert "".join(out) == target.text_after(3)
    assert target.chat_requests == 1
    await check_clean(llm, retries=0, failures={"stream_error": 1})


async def test_truncated_stream_without_any_event(target: Target) -> None:
    target.fault("truncate_stream", after=0)
    llm = target.make()
    out: list[str] = []
    with pytest.raises(StreamError, match="truncated"):
        await stream_into(llm, out)
    assert out == []
    assert target.chat_requests == 1
    await check_clean(llm, retries=0, failures={"stream_error": 1})


async def test_malformed_json_body(target: Target) -> None:
    target.fault("malformed_json")
    llm = target.make()
    with pytest.raises(ServerError) as info:
        await generate(llm)
    err = info.value
    assert err.status == 200 and err.retryable is False
    assert "malformed JSON" in err.message and '{"id": "x", ' in err.message
    assert target.chat_requests == 1
    await check_clean(llm, retries=0, failures={"server_error": 1})


async def test_malformed_stream_line(target: Target) -> None:
    target.fault("malformed_line", after=2)
    llm = target.make()
    out: list[str] = []
    with pytest.raises(StreamError) as info:
        await stream_into(llm, out)
    expected = "malformed NDJSON line" if target.name == "ollama" else "malformed JSON in SSE event"
    assert expected in info.value.message
    assert "".join(out) == target.text_after(2)
    assert target.chat_requests == 1
    # OpenAI/HF: the SSE data fails to decode in the provider; Ollama: in the NDJSON
    # parser inside the transport. Either way one stream_error failure.
    await check_clean(llm, retries=0, failures={"stream_error": 1})


async def test_error_event_mid_stream(target: Target) -> None:
    target.fault("error_event", after=2, message="upstream worker crashed")
    llm = target.make()
    out: list[str] = []
    with pytest.raises(StreamError) as info:
        await stream_into(llm, out)
    assert "upstream worker crashed" in info.value.message
    assert info.value.status is None and info.value.provider == target.name
    assert "".join(out) == target.text_after(2)
    assert target.chat_requests == 1
    await check_clean(llm, retries=0, failures={"stream_error": 1})


@pytest.mark.parametrize(
    ("status", "error", "retried"),
    [(502, ServerError, True), (403, PermissionDeniedError, False)],
)
async def test_html_error_page(
    target: Target, status: int, error: type[LLMError], retried: bool
) -> None:
    target.fault("html_error", status=status, times=10)
    llm = target.make(max_retries=1)
    with pytest.raises(error) as info:
        await generate(llm)
    err = info.value
    assert type(err) is error and err.status == status
    assert "<" not in err.message and ">" not in err.message
    assert "text/html" in err.message and "nginx" in err.message
    assert target.chat_requests == (2 if retried else 1)
    await check_clean(llm, retries=1 if retried else 0, failures={err.type: 1})


# --------------------------------------------------------------------------- huge bodies


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream-event"])
async def test_huge_response_is_bounded(target: Target, stream: bool) -> None:
    """A response far over max_response_bytes fails fast with a typed error, and the
    client never holds more than a small fraction of it (the server runs in a child
    process here so that tracemalloc measures the client alone)."""
    size = 16 * 1024 * 1024
    spec = target.provider
    fault: dict[str, Any] = {"kind": "huge", "size": size, "path": spec.chat_path}
    if stream:
        fault["after"] = 1 + spec.lead_events
    async with child_server(spec.serve_name, [fault]) as url:
        llm = spec.make(url, extra={"max_response_bytes": 64 * 1024})
        target.clients.append(llm)
        out: list[str] = []
        tracemalloc.start()
        try:
            with pytest.raises(StreamError if stream else ServerError) as info:
                if stream:
                    await stream_into(llm, out)
                else:
                    await generate(llm)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.value.retryable is False
        if stream:
            assert "exceeds max_event_bytes=65536" in info.value.message
            assert out == [WORDS[0]]
            await check_clean(llm, retries=0, failures={"stream_error": 1})
        else:
            assert "exceeds max_response_bytes=65536" in info.value.message
            await check_clean(llm, retries=0, failures={"server_error": 1})
        assert peak < size // 16, peak


async def test_large_response_within_limit(target: Target) -> None:
    size = 256 * 1024
    target.fault("huge", size=size)
    llm = target.make(extra={"max_response_bytes": 1024 * 1024})
    text = await generate(llm)
    assert len(text) > size // 2 and set(text) == {"a"}
    await check_clean(llm, retries=0, successes=1)


# --------------------------------------------------------------------------- consumers


async def test_consumer_breaks_mid_stream(target: Target) -> None:
    target.state.chunk_delay = 0.01
    llm = target.make()
    out: list[str] = []
    async with aclosing(llm.generate_stream("hello")) as deltas:
        async for delta in deltas:
            out.append(delta)
            if len(out) == 2:
                break
    assert out == [WORDS[0], " " + WORDS[1]]
    await check_clean(llm, retries=0, failures={})
    # The instance is still usable afterwards.
    assert await generate(llm) == REPLY
    await check_clean(llm, retries=0, failures={})


async def test_consumer_task_cancelled_mid_stream(target: Target) -> None:
    target.state.chunk_delay = 0.2
    llm = target.make(timeout=2.0)
    out: list[str] = []
    task = asyncio.create_task(stream_into(llm, out))
    await wait_until(lambda: bool(out))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out == [WORDS[0]]
    await check_clean(llm, retries=0, failures={"cancelled": 1})
    target.state.chunk_delay = 0.0
    assert await generate(llm) == REPLY


async def test_cancel_while_waiting_for_retry(target: Target) -> None:
    target.fault("status", status=429, headers={"Retry-After": "5"})
    llm = target.make()
    task = asyncio.create_task(generate(llm))
    await wait_until(lambda: target.chat_requests > 0)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await check_clean(llm, retries=1, failures={"cancelled": 1})


# --------------------------------------------------------------------------- loops, load


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_instance_used_from_two_event_loops(provider: str) -> None:
    """The same instance in two consecutive ``asyncio.run`` calls, not closed in between:
    both work, and no warning (unclosed session / connector, unraisable) is emitted."""
    spec = PROVIDERS[provider]
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with threaded_server(spec.serve) as handle, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            llm = spec.make(handle.url)

            async def use(tag: str) -> tuple[str, str]:
                text = await llm.generate(tag)
                out: list[str] = []
                await stream_into(llm, out, tag)
                conn = llm._http.sessions.connector()  # type: ignore[attr-defined]
                assert conn is not None and len(conn._acquired) == 0
                return text, "".join(out)

            assert asyncio.run(use("first")) == ("Echo: first", "Echo: first")
            assert asyncio.run(use("second")) == ("Echo: second", "Echo: second")
            asyncio.run(llm.aclose())
            gc.collect()
        assert handle.state.request_count == 4
    finally:
        sys.unraisablehook = old_hook
    assert [str(w.message) for w in caught] == []
    assert unraisable == []


async def test_thousand_concurrent_requests(target: Target) -> None:
    target.state.reply = None  # echo, so that order can be checked
    target.state.delay = 0.002
    target.state.record_requests = False
    llm = target.make(max_concurrency=32, timeout=10.0)
    prompts = [f"prompt {i}" for i in range(1000)]
    results = await asyncio.gather(*(llm.generate(p) for p in prompts))
    assert results == [f"Echo: {p}" for p in prompts]
    assert target.state.total_requests == 1000
    assert 1 < target.state.max_in_flight <= 32
    m = llm.get_metrics()
    assert m.requests == 1000 and m.successes == 1000
    await check_clean(llm, retries=0, successes=1000)


async def test_batch_generate_with_faults(target: Target) -> None:
    """Faults sprinkled through a fan-out: retried per request, order kept."""
    target.state.reply = None
    target.fault("status", status=503, times=3)
    target.fault("reset_before_headers", times=2)
    llm = target.make(max_concurrency=8, max_retries=5)
    prompts = [f"p{i}" for i in range(40)]
    results = await llm.batch_generate(prompts)
    assert results == [f"Echo: {p}" for p in prompts]
    assert target.state.total_requests == 45
    # a reset on a pooled connection the server had closed may count as a resend, not a retry
    await check_clean(llm, retries=range(4, 6), successes=40)


async def test_model_loading_waits_estimated_time(target: Target) -> None:
    """A 503 "model is loading" body with ``estimated_time``: retried after that wait."""
    target.fault("loading", estimated_time=0.4)
    llm = target.make()
    started = time.perf_counter()
    assert await generate(llm) == REPLY
    assert 0.38 <= time.perf_counter() - started < 2.0
    assert target.chat_requests == 2
    await check_clean(llm, retries=1, successes=1)
