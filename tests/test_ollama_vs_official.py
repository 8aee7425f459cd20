"""Side by side with the official ``ollama`` AsyncClient on the same test server: each
pair of calls below must put the same JSON body on the wire.

ollama-python fills two fields with their default value where llmkit leaves them out
(``"tools": []`` on chat, ``"insecure": false`` on pull / push); the server reads a missing
field as that default, so :func:`same` drops exactly those before comparing."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import ollama
import pytest

from llmkit.providers.ollama.client import OllamaLLM
from tests.servers import ServerHandle, ServerState, serve_ollama

DEFAULTS_FILLED_BY_OLLAMA_PYTHON = {"tools": [], "insecure": False}


def same(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if DEFAULTS_FILLED_BY_OLLAMA_PYTHON.get(k, ...) != v}


async def run(result: Any) -> None:
    """Await a call and drain the stream it returns (or is)."""
    if inspect.isawaitable(result):
        result = await result
    if hasattr(result, "__aiter__"):
        async for _ in result:
            pass


Call = Callable[[Any], Any]

CASES: list[tuple[str, str, Call, Call]] = [
    (
        "chat",
        "/api/chat",
        lambda c: c.chat(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}],
            options={"temperature": 0.2, "num_predict": 5, "top_k": 4}, think=True,
            keep_alive="5m",
        ),
        lambda m: m.chat("hi", temperature=0.2, max_tokens=5, top_k=4, think=True, keep_alive="5m"),
    ),
    (
        "chat, streamed, logprobs",
        "/api/chat",
        lambda c: c.chat(
            model="llama3.2", messages=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "hi"}],
            stream=True, logprobs=True, top_logprobs=2, format="json",
        ),
        lambda m: m.chat_stream(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            logprobs=True, top_logprobs=2, response_format="json",
        ),
    ),
    (
        "generate",
        "/api/generate",
        lambda c: c.generate(
            model="llama3.2", prompt="hi", system="s", options={"seed": 7, "stop": ["\n"]},
            think="high",
        ),
        lambda m: m.completion("hi", system="s", seed=7, stop="\n", think="high"),
    ),
    (
        "embed",
        "/api/embed",
        lambda c: c.embed(model="nomic-embed-text", input=["a", "b"]),
        lambda m: m.embed_batch(["a", "b"]),
    ),
    (
        "create",
        "/api/create",
        lambda c: c.create(
            model="mario", from_="llama3.2", system="be mario",
            parameters={"temperature": 0.5, "stop": ["<|end|>"]}, stream=True,
        ),
        lambda m: m.create_model(
            "mario", 'FROM llama3.2\nSYSTEM be mario\nPARAMETER temperature 0.5\n'
            'PARAMETER stop "<|end|>"'
        ),
    ),
    (
        "pull",
        "/api/pull",
        lambda c: c.pull(model="llama3.2", stream=True),
        lambda m: m.pull_model("llama3.2"),
    ),
    (
        "push",
        "/api/push",
        lambda c: c.push(model="llama3.2", stream=True),
        lambda m: m.push_model("llama3.2"),
    ),
]


@pytest.fixture
async def server() -> AsyncIterator[ServerHandle]:
    async with serve_ollama(ServerState()) as handle:
        yield handle


@pytest.mark.parametrize(("name", "path", "official", "ours"), CASES, ids=[c[0] for c in CASES])
async def test_same_request_body(
    server: ServerHandle, name: str, path: str, official: Call, ours: Call
) -> None:
    client = ollama.AsyncClient(host=server.url)
    try:
        await run(official(client))
    finally:
        await client.close()
    async with OllamaLLM(
        model="llama3.2", base_url=server.url, extra={"embedding_model": "nomic-embed-text"}
    ) as llm:
        await run(ours(llm))
    theirs_body, ours_body = (r.json for r in server.state.requests_to(path))
    assert same(ours_body) == same(theirs_body)


async def test_same_blob_upload(server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(range(200)))
    client = ollama.AsyncClient(host=server.url)
    try:
        theirs = await client.create_blob(path)
    finally:
        await client.close()
    server.state.requests.clear()
    async with OllamaLLM(model="llama3.2", base_url=server.url) as llm:
        ours = await llm.create_blob(path)
    assert ours == theirs
    # the blob is already there: llmkit asks (HEAD) and uploads nothing
    assert [(r.method, r.path) for r in server.state.requests] == [("HEAD", f"/api/blobs/{ours}")]
