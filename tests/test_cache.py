"""The reply cache (``LLMConfig.cache``) against the local OpenAI server, within one
process and across processes."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, closing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmkit import ConfigError, InvalidRequestError, MockLLM, OpenAILLM, StreamChunk
from tests.servers import ServerHandle, ServerState, serve_openai

CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def server() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState(reply="a cached reply")) as handle:
        yield handle


def make(server: ServerHandle, cache: Path, **kw: Any) -> OpenAILLM:
    return OpenAILLM(
        {"model": "gpt-4o-mini", "base_url": server.url, "api_key": "sk-cache-abcdefghijkl",
         "max_retries": 0, "cache": str(cache), **kw}
    )


def sent(server: ServerHandle) -> int:
    return len(server.state.requests_to(CHAT))


async def test_identical_requests_are_served_from_the_cache(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "replies.sqlite"
    async with make(server, path) as llm:
        first = await llm.chat("hi", temperature=0.5)
        usage_after_first = llm.get_token_usage()
        again = await llm.chat([{"role": "user", "content": "hi"}], temperature=0.5, timeout=9)
        assert again.content == first.content == "a cached reply"
        assert again.usage == first.usage and again.finish_reason == first.finish_reason
        assert sent(server) == 1
        m = llm.get_metrics()
        assert (m.cache_hits, m.requests, m.successes) == (1, 1, 1)
        assert llm.get_token_usage() == usage_after_first  # a hit records no provider usage

        # what the key covers: messages, options, tools, model, operation
        await llm.chat("hi", temperature=0.6)
        await llm.chat("hello", temperature=0.5)
        await llm.chat("hi", temperature=0.5, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        await llm.chat("hi", temperature=0.5, model="gpt-4o")
        assert await llm.generate("hi", temperature=0.5) == "a cached reply"
        assert sent(server) == 6
        assert await llm.generate("hi", temperature=0.5) == "a cached reply"
        assert sent(server) == 6 and llm.get_metrics().cache_hits == 2
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM llmkit_replies").fetchone()[0] == 6


async def test_streams_are_stored_only_when_complete_and_replayed(server: ServerHandle, tmp_path: Path) -> None:
    server.state.reply = "one two three four"
    async with make(server, tmp_path / "c.sqlite") as llm:
        async with aclosing(llm.chat_stream("hi")) as stream:
            async for _ in stream:
                break  # stopped early: not a complete reply
        chunks = [c async for c in llm.chat_stream("hi")]
        assert sent(server) == 2
        replay = [c async for c in llm.chat_stream("hi")]
        assert sent(server) == 2
        assert all(isinstance(c, StreamChunk) for c in replay)
        assert [(c.delta, c.finish_reason, c.usage) for c in replay] == [
            (c.delta, c.finish_reason, c.usage) for c in chunks
        ]
        deltas = [d async for d in llm.generate_stream("hi")]
        assert [d async for d in llm.generate_stream("hi")] == deltas
        assert "".join(deltas) == "one two three four"
        assert sent(server) == 3 and llm.get_metrics().cache_hits == 2


async def test_errors_are_never_stored(server: ServerHandle, tmp_path: Path) -> None:
    server.state.add_fault("status", path=CHAT, status=400)
    server.state.add_fault("truncate_stream", path=CHAT, after=2)
    async with make(server, tmp_path / "c.sqlite") as llm:
        with pytest.raises(InvalidRequestError):
            await llm.generate("hi")
        assert await llm.generate("hi") == "a cached reply"
        with pytest.raises(Exception, match="truncated"):
            _ = [d async for d in llm.generate_stream("hi")]
        assert "".join([d async for d in llm.generate_stream("hi")]) == "a cached reply"
        assert sent(server) == 4 and llm.get_metrics().cache_hits == 0


class Answer(BaseModel):
    city: str


async def test_structured_replies_are_parsed_again_on_a_hit(server: ServerHandle, tmp_path: Path) -> None:
    async with make(server, tmp_path / "c.sqlite") as llm:
        first = await llm.chat("capital of France?", response_format=Answer)
        hit = await llm.chat("capital of France?", response_format=Answer)
    assert sent(server) == 1
    assert isinstance(hit.parsed, Answer) and hit.parsed == first.parsed
    assert hit.content == first.content


async def test_embeddings_are_cached(server: ServerHandle, tmp_path: Path) -> None:
    async with make(server, tmp_path / "c.sqlite") as llm:
        vectors = await llm.embed_batch(["a", "b"])
        assert await llm.embed_batch(["a", "b"]) == vectors
        assert await llm.embed("a") == vectors[0]
    assert len(server.state.requests_to("/v1/embeddings")) == 2


CHILD = """
import asyncio, json, sys
from llmkit import create_llm

async def main(url, path, prompts):
    async with create_llm({"provider": "openai", "model": "gpt-4o-mini", "base_url": url,
                           "api_key": "sk-child-abcdefghijkl", "cache": path}) as llm:
        replies = [await llm.generate(p) for p in prompts]
        m = llm.get_metrics()
    print(json.dumps({"replies": replies, "hits": m.cache_hits, "requests": m.requests}))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


async def run_child(url: str, path: Path, *prompts: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, str(path), *prompts,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


async def test_hits_across_processes(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    prompts = [f"prompt {i}" for i in range(10)]
    # two writers at once on one file (WAL, busy timeout), then a reader
    first, second = await asyncio.gather(
        run_child(server.url, path, *prompts[:5]), run_child(server.url, path, *prompts[5:])
    )
    assert first["hits"] == second["hits"] == 0
    assert sent(server) == 10
    third = await run_child(server.url, path, *prompts)
    assert third["hits"] == 10 and third["requests"] == 0
    assert third["replies"] == ["a cached reply"] * 10
    assert sent(server) == 10
    # and this process sees them too
    async with make(server, path) as llm:
        assert await llm.generate("prompt 3") == "a cached reply"
        assert llm.get_metrics().cache_hits == 1
    assert sent(server) == 10


async def test_unusable_cache_path_is_a_config_error(tmp_path: Path) -> None:
    llm = MockLLM({"cache": str(tmp_path / "missing-dir" / "c.sqlite")})
    with pytest.raises(ConfigError, match="reply cache"):
        await llm.generate("hi")
    with pytest.raises(ConfigError):
        MockLLM({"cache": " "})
