"""Transport edges against real local servers: the end marker ends a stream, the reply
size is bounded after decompression, Retry-After is honoured within reason, and a request
that a stale pooled connection never delivered is sent again."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from llmkit import LLMConnectionError, OllamaLLM, OpenAILLM, RateLimitError, ServerError
from tests.servers import (
    ServerHandle,
    ServerState,
    rate_limit_fault,
    run_server,
    serve_ollama,
    serve_openai,
    status_fault,
)

KEY = "sk-transport-0123456789abcdef"
SENT_ALL = web.AppKey("sent_all", asyncio.Event)
DROPPED = web.AppKey("dropped", asyncio.Event)
FAST_RETRY = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}


def openai(url: str, **kwargs: Any) -> OpenAILLM:
    kwargs.setdefault("extra", FAST_RETRY)
    return OpenAILLM(model="gpt-4o-mini", base_url=url, api_key=KEY, **kwargs)


@asynccontextmanager
async def serve(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(routes)
    async with run_server(app) as url:
        yield url


# --------------------------------------------------------------------------- end marker


def _chat_chunk(text: str) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _keep_open(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """After the end marker the server neither closes nor ends the body."""
    request.app[SENT_ALL].set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        request.app[DROPPED].set()  # the client closed the connection
        raise
    return resp


async def sse_then_hang(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for word in ("alpha ", "beta"):
        await resp.write(_chat_chunk(word))
    await resp.write(b"data: [DONE]\n\n")
    return await _keep_open(request, resp)


async def ndjson_then_hang(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    base = {"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z"}
    for word in ("alpha ", "beta"):
        msg = {**base, "message": {"role": "assistant", "content": word}, "done": False}
        await resp.write(orjson.dumps(msg) + b"\n")
    last = {**base, "message": {"role": "assistant", "content": ""}, "done": True,
            "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2}
    await resp.write(orjson.dumps(last) + b"\n")
    return await _keep_open(request, resp)


@pytest.mark.parametrize("provider", ["openai", "ollama"])
async def test_end_marker_ends_the_stream_and_frees_slot_and_connection(provider: str) -> None:
    handler, path = (
        (sse_then_hang, "/v1/chat/completions")
        if provider == "openai"
        else (ndjson_then_hang, "/api/chat")
    )
    app = web.Application()
    app[SENT_ALL], app[DROPPED] = asyncio.Event(), asyncio.Event()
    app.add_routes([web.post(path, handler)])
    async with run_server(app) as url:
        llm = (
            openai(url + "/v1", timeout=1.0, max_concurrency=1)
            if provider == "openai"
            else OllamaLLM(model="llama3.2", base_url=url, timeout=1.0, max_concurrency=1)
        )
        started = time.perf_counter()
        text = "".join([d async for d in llm.generate_stream("hi")])
        elapsed = time.perf_counter() - started
        assert text == "alpha beta"
        assert elapsed < 0.9  # no wait for the 1 s read timeout
        assert llm.call_state.limiter.in_use() == 0
        conn = llm._http.sessions.connector()
        assert conn is not None and len(conn._acquired) == 0
        await asyncio.wait_for(app[DROPPED].wait(), 2.0)  # the connection was let go
        assert llm.get_metrics().failures == 0
        await llm.aclose()


# --------------------------------------------------------------------------- decompressed size


async def test_gzip_bomb_is_bounded_by_decompressed_size() -> None:
    inflated = b'{"choices": [{"message": {"content": "' + b"0" * (40 << 20) + b'"}}]}'
    bomb = gzip.compress(inflated, 9)
    assert len(bomb) < 100_000

    async def chat(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async with serve([web.post("/v1/chat/completions", chat)]) as url:
        llm = openai(url + "/v1", extra={**FAST_RETRY, "max_response_bytes": 1 << 20})
        with pytest.raises(ServerError, match="decompressed response exceeds max_response_bytes"):
            await llm.generate("hi")
        conn = llm._http.sessions.connector()
        assert conn is not None and len(conn._acquired) == 0
        await llm.aclose()


async def test_gzip_reply_within_limit_is_read(openai_server: ServerHandle) -> None:
    reply = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "zipped"},
                          "finish_reason": "stop"}]}

    async def chat(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(orjson.dumps(reply)),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    async with serve([web.post("/v1/chat/completions", chat)]) as url:
        async with openai(url + "/v1", extra={"max_response_bytes": 4096}) as llm:
            assert await llm.generate("hi") == "zipped"


# --------------------------------------------------------------------------- Retry-After


async def test_retry_after_beyond_the_cap_raises_at_once(openai_server: ServerHandle) -> None:
    openai_server.state.faults.append(rate_limit_fault(3600))
    async with openai(openai_server.url, max_retries=3) as llm:
        started = time.perf_counter()
        with pytest.raises(RateLimitError) as info:
            await llm.generate("hi")
        assert time.perf_counter() - started < 2.0
    assert info.value.retry_after == 3600
    assert openai_server.state.request_count == 1


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
async def test_unusable_retry_after_is_ignored(openai_server: ServerHandle, value: str) -> None:
    openai_server.state.faults.append(status_fault(429, headers={"Retry-After": value}, times=2))
    async with openai(openai_server.url, max_retries=1) as llm:
        with pytest.raises(RateLimitError) as info:
            await llm.generate("hi")
        assert info.value.retry_after is None
        assert llm.get_metrics().retries == 1  # retried after the normal backoff
        assert await llm.generate("again")  # the third request gets through
    assert openai_server.state.request_count == 3


# --------------------------------------------------------------------------- stale connections

_REPLY = orjson.dumps(
    {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "fresh"},
                  "finish_reason": "stop"}]}
)


class StaleKeepAliveServer:
    """HTTP/1.1 over a plain socket: each connection answers its first request with
    keep-alive, then drops the connection as soon as a second request arrives, without
    reading it (a server's idle close racing the client's reuse of the connection)."""

    def __init__(self) -> None:
        self.handled = 0
        self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            self.handled += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(_REPLY), _REPLY)
            )
            await writer.drain()
            if await reader.read(1):  # the next request on this connection: not read
                self.dropped += 1
        finally:
            writer.transport.abort()


async def test_request_on_a_stale_pooled_connection_is_resent_even_without_retries() -> None:
    server = StaleKeepAliveServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with openai(f"http://127.0.0.1:{port}/v1", max_retries=0) as llm:
            for _ in range(3):
                assert await llm.generate("hi") == "fresh"
            assert llm.get_metrics().retries == 0
    finally:
        listener.close()
        await listener.wait_closed()
    assert server.handled == 3
    assert server.dropped >= 1  # the pooled connection was tried, and resent on a new one


async def test_request_the_server_read_and_dropped_is_not_resent(
    openai_server: ServerHandle,
) -> None:
    """A fresh connection reset before the headers: the server may have acted on it."""
    openai_server.state.add_fault("reset_before_headers")
    async with openai(openai_server.url, max_retries=0) as llm:
        with pytest.raises(LLMConnectionError):
            await llm.generate("hi")
    assert openai_server.state.total_requests == 1


@pytest.mark.parametrize("provider", ["openai", "ollama"])
async def test_a_complete_stream_returns_its_connection_to_the_pool(provider: str) -> None:
    serve_app = serve_openai if provider == "openai" else serve_ollama
    async with serve_app(ServerState()) as srv:
        llm = (
            openai(srv.url)
            if provider == "openai"
            else OllamaLLM(model="llama3.2", base_url=srv.url)
        )
        async with llm:
            for i in range(3):
                text = "".join([d async for d in llm.generate_stream(f"s{i}")])
                assert text == f"Echo: s{i}"
                conn = llm._http.sessions.connector()
                assert conn is not None and len(conn._acquired) == 0
                assert sum(len(v) for v in conn._conns.values()) == 1  # kept alive, reused
