"""The reply cache under hostile use: instances sharing one file that differ only in what
goes on the wire, a file that cannot be written or read, and secrets kept out of it."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from llmkit import ConfigError, FallbackLLM, HuggingFaceLLM, OllamaLLM, OpenAILLM, create_llm
from tests.servers import ServerHandle, ServerState, serve_hf, serve_ollama, serve_openai

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
KEY = "sk-hostile-cache-0123456789abcdef"


@pytest.fixture
async def server() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState()) as handle:
        yield handle


def openai(server: ServerHandle, cache: Path, **kw: Any) -> OpenAILLM:
    config: dict[str, Any] = {
        "model": "gpt-4o-mini", "base_url": server.url, "api_key": KEY, "max_retries": 2,
        "cache": str(cache), **kw,
    }
    return OpenAILLM(config)


def count(server: ServerHandle, path: str) -> int:
    return len(server.state.requests_to(path))


def stored_bytes(path: Path) -> bytes:
    """Everything SQLite wrote for the cache: the file and its WAL."""
    data = b""
    for p in (path, Path(f"{path}-wal")):
        if p.exists():
            data += p.read_bytes()
    return data


# --------------------------------------------------------------------------- the key


async def test_instances_differing_only_in_dimensions_do_not_share_replies(
    server: ServerHandle, tmp_path: Path
) -> None:
    path = tmp_path / "shared.sqlite"
    async with openai(server, path, extra={"dimensions": 4}) as small, openai(
        server, path, extra={"dimensions": 16}
    ) as large:
        four = await small.embed("hello")
        sixteen = await large.embed("hello")
        assert (len(four), len(sixteen)) == (4, 16)
        assert count(server, EMBED) == 2
        # each is still served from the cache
        assert await small.embed("hello") == four
        assert await large.embed("hello") == sixteen
        assert count(server, EMBED) == 2
        assert (small.get_metrics().cache_hits, large.get_metrics().cache_hits) == (1, 1)
    sent = [r.json.get("dimensions") for r in server.state.requests_to(EMBED)]
    assert sent == [4, 16]


async def test_embedding_model_extra_is_part_of_the_key(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    async with openai(server, path, extra={"embedding_model": "text-embedding-3-small"}) as a, openai(
        server, path, extra={"embedding_model": "text-embedding-3-large"}
    ) as b:
        await a.embed_batch(["x", "y"])
        await b.embed_batch(["x", "y"])
    assert [r.json["model"] for r in server.state.requests_to(EMBED)] == [
        "text-embedding-3-small", "text-embedding-3-large",
    ]


async def test_wire_field_extras_are_part_of_the_key(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    async with openai(server, path, max_tokens=50) as plain, openai(
        server, path, max_tokens=50, extra={"max_tokens_field": "max_completion_tokens"}
    ) as renamed, openai(server, path, max_tokens=50, extra={"organization": "org-hostile"}) as org:
        for llm in (plain, renamed, org):
            await llm.generate("hi")
            await llm.generate("hi")
            assert llm.get_metrics().cache_hits == 1
    requests = server.state.requests_to(CHAT)
    assert len(requests) == 3
    assert ["max_tokens" in r.json for r in requests] == [True, False, True]
    assert ["max_completion_tokens" in r.json for r in requests] == [False, True, False]
    assert requests[2].headers.get("OpenAI-Organization") == "org-hostile"


async def test_base_url_is_part_of_the_key(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    async with serve_openai(ServerState(reply="from the other server")) as other:
        async with openai(server, path) as a, openai(other, path) as b:
            assert await a.generate("hi") == "Echo: hi"
            assert await b.generate("hi") == "from the other server"
    assert count(server, CHAT) == count(other, CHAT) == 1


async def test_ollama_options_and_think_extras_are_part_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    variants: list[dict[str, Any]] = [
        {},
        {"options": {"num_ctx": 2048}},
        {"options": {"num_ctx": 4096}},
        {"think": True},
        {"keep_alive": "1m"},
    ]
    async with serve_ollama(ServerState()) as ollama:
        for extra in variants:
            async with OllamaLLM(
                {"model": "llama3.2", "base_url": ollama.url, "cache": str(path), "extra": extra}
            ) as llm:
                await llm.generate("hi")
                await llm.generate("hi")  # the second one is a hit
                assert llm.get_metrics().cache_hits == 1
        bodies = [r.json for r in ollama.state.requests_to("/api/chat")]
    assert len(bodies) == len(variants)
    assert [b.get("options", {}).get("num_ctx") for b in bodies] == [None, 2048, 4096, None, None]
    assert [b.get("think") for b in bodies] == [None, None, None, True, None]


async def test_router_inference_provider_is_part_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    model = "meta-llama/Llama-3.1-8B-Instruct"
    async with serve_hf(ServerState()) as hf:
        for choice in ("together", "novita", None):
            extra: dict[str, Any] = {"api": "router", "hub_url": hf.url}
            if choice:
                extra["inference_provider"] = choice
            async with HuggingFaceLLM(
                {"model": model, "base_url": hf.url, "api_key": "hf_hostilecache0123",
                 "cache": str(path), "extra": extra}
            ) as llm:
                await llm.generate("hi")
        sent = [r.json["model"] for r in hf.state.requests_to(CHAT)]
    assert sent == [f"{model}:together", f"{model}:novita", model]


async def test_local_mode_switch_is_part_of_the_key(tmp_path: Path) -> None:
    """``set_use_local`` changes where a call runs without changing the config: a reply from
    the API must not answer a local call (nothing is loaded: the local call fails typed)."""
    path = tmp_path / "shared.sqlite"
    model = "meta-llama/Llama-3.1-8B-Instruct"
    async with serve_hf(ServerState()) as hf:
        async with HuggingFaceLLM(
            {"model": model, "base_url": hf.url, "api_key": "hf_hostilecache0123",
             "cache": str(path), "extra": {"api": "router", "hub_url": hf.url}}
        ) as llm:
            assert await llm.generate("hi") == "Echo: hi"
            llm.set_use_local(True)
            with pytest.raises(ConfigError):  # the hub id is not a local model
                await llm.generate("hi")
            assert llm.get_metrics().cache_hits == 0
            llm.set_use_local(False)
            assert await llm.generate("hi") == "Echo: hi"
            assert llm.get_metrics().cache_hits == 1
        assert len(hf.state.requests_to(CHAT)) == 1


async def test_headers_extra_is_part_of_the_key_but_secrets_are_never_stored(
    server: ServerHandle, tmp_path: Path
) -> None:
    path = tmp_path / "shared.sqlite"
    other_key = "sk-hostile-other-key-9876543210zyx"
    bearer = "Bearer tok-hostile-header-secret-55555"
    async with openai(server, path, extra={"headers": {"X-Route": "a"}}) as a, openai(
        server, path, extra={"headers": {"X-Route": "b"}}
    ) as b, openai(server, path, api_key=other_key, extra={"headers": {"X-Route": "a"}}) as c:
        await a.generate("hi")
        await b.generate("hi")  # another route: sent
        # another key, same request: the key does not take part (a hit)
        await c.generate("hi")
        assert c.get_metrics().cache_hits == 1
        assert count(server, CHAT) == 2
        # per-call headers may change the answer too; a credential among them is left out
        await a.generate("hi", extra_headers={"Authorization": bearer, "X-Trace": "1"})
        await a.generate("hi", extra_headers={"Authorization": "Bearer another", "X-Trace": "1"})
        assert count(server, CHAT) == 3
    data = stored_bytes(path)
    for secret in (KEY, other_key, bearer, "tok-hostile-header-secret"):
        assert secret.encode() not in data


# --------------------------------------------------------------------------- unwritable


def _make_unwritable(path: Path) -> str:
    """Make ``path`` (an SQLite file) unwritable for this process, root included."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return "chmod"
    chattr = shutil.which("chattr")
    assert chattr is not None, "chattr is needed to make a file immutable for root"
    subprocess.run([chattr, "+i", str(path)], check=True)
    return "chattr"


def _make_writable(path: Path, how: str) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o644)


@pytest.fixture
def immutable_cache(tmp_path: Path) -> Iterator[Path]:
    """A valid cache file (one reply stored for "stored"), then made unwritable."""
    path = tmp_path / "ro.sqlite"
    with closing(sqlite3.connect(path)) as conn:  # the schema; the test stores one reply
        conn.execute("PRAGMA journal_mode=DELETE")
    yield path
    for p in (path,):
        try:
            _make_writable(p, "chattr" if os.geteuid() == 0 else "chmod")
        except (subprocess.CalledProcessError, OSError):
            pass


async def test_unwritable_cache_returns_the_reply_with_one_warning(
    server: ServerHandle, immutable_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = immutable_cache
    async with openai(server, path) as llm:  # store one reply while writable
        await llm.generate("stored")
    # back to a rollback journal so that a reader needs no WAL file next to it
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert not leftover.exists()
    how = _make_unwritable(path)
    with pytest.raises(sqlite3.OperationalError):  # it really is unwritable for us
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE probe (x)")
    server.state.requests.clear()
    caplog.set_level(logging.WARNING, logger="llmkit")
    try:
        async with openai(server, path) as llm:
            assert await llm.generate("stored") == "Echo: stored"  # still read
            assert await llm.generate("new") == "Echo: new"
            assert await llm.generate("new") == "Echo: new"  # not cached: sent again
            chunks = [c async for c in llm.chat_stream("streamed")]
            assert "".join(c.delta for c in chunks) == "Echo: streamed"
            m = llm.get_metrics()
        assert count(server, CHAT) == 3  # each miss sent once, never retried or paid twice
        assert (m.cache_hits, m.retries, m.failures_by_type) == (1, 0, {})
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "cache" in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        assert str(path) in warned[0].getMessage()
        assert KEY not in caplog.text
    finally:
        _make_writable(path, how)


async def test_unreadable_cache_is_refused_before_sending(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"this is not an SQLite database, just some text " * 200)
    async with openai(server, path) as llm:
        with pytest.raises(ConfigError, match="reply cache"):
            await llm.generate("hi")
        with pytest.raises(ConfigError, match="reply cache"):
            async for _ in llm.generate_stream("hi"):
                pass
        with pytest.raises(ConfigError, match="reply cache"):
            await llm.embed("hi")
    assert server.state.total_requests == 0


async def test_fallback_chains_are_part_of_the_key(server: ServerHandle, tmp_path: Path) -> None:
    """Two fallback chains whose only member differs in its server do not share replies."""
    path = tmp_path / "shared.sqlite"
    async with serve_openai(ServerState(reply="from the other server")) as other:
        configs = [
            {"provider": "fallback", "cache": str(path), "chain": [
                {"provider": "openai", "model": "gpt-4o-mini", "base_url": s.url, "api_key": KEY},
            ]}
            for s in (server, other)
        ]
        async with create_llm(configs[0]) as a, create_llm(configs[1]) as b:
            assert await a.generate("hi") == "Echo: hi"
            assert await b.generate("hi") == "from the other server"
            assert await b.generate("hi") == "from the other server"
            assert b.get_metrics().cache_hits == 1
        # chains of provider instances (not configs)
        members = [openai(s, tmp_path / "members-own.sqlite") for s in (server, other)]
        for member in members:
            member.config.cache = None
        try:
            async with FallbackLLM(chain=[members[0]], cache=str(tmp_path / "f.sqlite")) as c, FallbackLLM(
                chain=[members[1]], cache=str(tmp_path / "f.sqlite")
            ) as d:
                assert await c.generate("hello") == "Echo: hello"
                assert await d.generate("hello") == "from the other server"
        finally:
            for member in members:
                await member.aclose()
    assert count(server, CHAT) == count(other, CHAT) == 2
    assert KEY.encode() not in stored_bytes(path)


@pytest.mark.parametrize(
    "damage",
    [b"{not json", b'{"content": 5, "usage": "lots"}', b'{"a": 1}', b"[1, 2"],
)
async def test_a_damaged_row_is_a_miss_and_is_replaced(
    server: ServerHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: bytes
) -> None:
    """A row another program (or a torn write) left damaged is not an error that fails the
    call before sending: it is a miss, the reply is fetched, and the row is replaced."""
    path = tmp_path / "damaged.sqlite"
    async with openai(server, path) as llm:
        reply = await llm.chat("row")
        text = await llm.generate("text row")
        vector = await llm.embed("vector row")
        chunks = [c async for c in llm.generate_stream("stream row")]
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE llmkit_replies SET value = ?", (damage,))
        conn.commit()
    server.state.requests.clear()
    caplog.set_level(logging.WARNING, logger="llmkit")
    async with openai(server, path) as llm:
        assert (await llm.chat("row")).content == reply.content
        assert await llm.generate("text row") == text
        assert await llm.embed("vector row") == vector
        assert [c async for c in llm.generate_stream("stream row")] == chunks
        assert llm.get_metrics().cache_hits == 0
        assert len(server.state.requests) == 4  # each damaged row a miss, sent once
        warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
        assert len(warned) == 4, warned
        # the replies replaced the damaged rows: served from the cache now
        assert (await llm.chat("row")).content == reply.content
        assert await llm.generate("text row") == text
        assert await llm.embed("vector row") == vector
        assert [c async for c in llm.generate_stream("stream row")] == chunks
        assert llm.get_metrics().cache_hits == 4
    assert len(server.state.requests) == 4


async def test_a_reply_that_echoes_the_key_is_stored_without_it(tmp_path: Path) -> None:
    """A server that echoes the caller's key in its reply (content and the raw body): the
    stored row holds ``***`` in its place, in a chat, a stream and a plain generate."""
    path = tmp_path / "echo.sqlite"
    async with serve_openai(ServerState(reply=f"your key is {KEY}, keep it safe")) as server:
        async with openai(server, path) as llm:
            live = await llm.chat("echo")
            assert KEY in live.content  # what the server sent reaches the caller as sent
            assert KEY in "".join([c.delta async for c in llm.chat_stream("echo")])
            await llm.generate("echo once more")
        assert KEY.encode() not in stored_bytes(path)
        async with openai(server, path) as llm:
            stored = await llm.chat("echo")
            assert stored.content == "your key is ***, keep it safe"
            assert KEY not in repr(stored.raw)
            assert llm.get_metrics().cache_hits == 1
