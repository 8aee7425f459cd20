"""Per-request costs that grow with the input: embedding batches are sized by bytes and
sent as base64, and tool / response_format schemas are built once per class or function."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from llmkit import OpenAILLM
from llmkit.base import response_format_payload
from llmkit.core.tools import to_openai_tool, to_openai_tools
from tests.servers import ServerHandle, embed_text


def embedder(srv: ServerHandle, **extra: Any) -> OpenAILLM:
    return OpenAILLM(
        model="gpt-4o-mini",
        base_url=srv.url,
        api_key="sk-hot-0123456789abcdef",
        timeout=60.0,
        extra={"embedding_model": "text-embedding-3-large", **extra},
    )


async def test_default_embedding_batches_fit_the_reply_cap(openai_server: ServerHandle) -> None:
    """2048 inputs of 3072 floats: as JSON floats ~84 MiB, over the 64 MiB cap."""
    openai_server.state.embedding_dim = 3072
    texts = [f"t{i}" for i in range(2048)]
    async with embedder(openai_server) as llm:
        vectors = await llm.embed_batch(texts)
    assert len(vectors) == 2048
    for i in (0, 1000, 2047):
        assert vectors[i] == embed_text(texts[i], 3072)
    requests = openai_server.state.requests_to("/v1/embeddings")
    assert {r.json["encoding_format"] for r in requests} == {"base64"}
    assert sum(len(r.json["input"]) for r in requests) == 2048
    # base64 float32: 4/3 of 4 bytes per float, so each reply is within half the cap
    assert all(len(r.json["input"]) * 3072 * 16 / 3 < 32 * 2**20 for r in requests)


async def test_embedding_batches_sized_by_reply_bytes(openai_server: ServerHandle) -> None:
    openai_server.state.embedding_dim = 3072
    texts = [f"t{i}" for i in range(600)]  # ~9.8 MB of base64 vectors in all
    async with embedder(openai_server, max_response_bytes=4_000_000) as llm:
        vectors = await llm.embed_batch(texts)
    assert [v == embed_text(t, 3072) for v, t in zip(vectors, texts, strict=True)] == [True] * 600
    sizes = [len(r.json["input"]) for r in openai_server.state.requests_to("/v1/embeddings")]
    assert len(sizes) >= 5 and max(sizes) * 3072 * 16 / 3 < 2_000_000


async def test_embedding_batches_sized_by_input_chars(openai_server: ServerHandle) -> None:
    texts = ["word " * 2000] * 12  # 10 000 characters each
    async with embedder(openai_server, embedding_batch_chars=25_000) as llm:
        vectors = await llm.embed_batch(texts)
    assert len(vectors) == 12
    sizes = [len(r.json["input"]) for r in openai_server.state.requests_to("/v1/embeddings")]
    assert sizes == [2, 2, 2, 2, 2, 2]


class Weather(BaseModel):
    """Weather for a city."""

    city: str
    unit: str = "C"


def lookup(city: str, days: int = 1) -> str:
    """Look a city up."""
    return city


def test_tool_and_response_format_schemas_built_once() -> None:
    assert to_openai_tool(Weather)["function"] is to_openai_tool(Weather)["function"]
    assert to_openai_tool(lookup)["function"] is to_openai_tool(lookup)["function"]
    first, model_cls = response_format_payload(Weather)
    again, _ = response_format_payload(Weather)
    assert model_cls is Weather and first is not None and again is not None
    assert first["json_schema"]["schema"] is again["json_schema"]["schema"]
    assert to_openai_tool(Weather)["function"]["parameters"]["required"] == ["city"]


def test_ten_tools_per_request_cost_microseconds() -> None:
    models = [type(f"Tool{i}", (Weather,), {"__doc__": f"Tool {i}."}) for i in range(10)]
    to_openai_tools(models)  # built here, once
    started = time.perf_counter()
    for _ in range(500):
        tools = to_openai_tools(models)
    per_request = (time.perf_counter() - started) / 500
    assert tools is not None and [t["function"]["name"] for t in tools][-1] == "Tool9"
    assert per_request < 0.001, f"{per_request * 1e3:.2f} ms per request for 10 tools"


async def test_tools_sent_unchanged_across_requests(openai_server: ServerHandle) -> None:
    async with embedder(openai_server) as llm:
        for _ in range(2):
            await llm.chat("weather?", tools=[Weather, lookup])
        for _ in range(2):
            await llm.chat("weather?", response_format=Weather)
    first, second, third, fourth = openai_server.state.requests_to("/v1/chat/completions")
    assert first.json["tools"] == second.json["tools"]
    assert [t["function"]["name"] for t in first.json["tools"]] == ["Weather", "lookup"]
    assert third.json["response_format"] == fourth.json["response_format"]
    # the strict form (every property required, as openai-python sends it), sent the same
    # way each time from the schema built once
    sent = third.json["response_format"]["json_schema"]
    assert sent["strict"] is True and sent["schema"]["required"] == ["city", "unit"]


async def test_malformed_base64_embedding_is_a_typed_error() -> None:
    from aiohttp import web

    from llmkit import StreamError
    from tests.servers import run_server

    async def embeddings(request: web.Request) -> web.Response:
        item = {"object": "embedding", "index": 0, "embedding": "AAA="}  # 3 bytes: no float32
        return web.json_response({"object": "list", "data": [item], "model": "m",
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    app = web.Application()
    app.add_routes([web.post("/v1/embeddings", embeddings)])
    async with run_server(app) as url:
        async with OpenAILLM(model="m", base_url=url + "/v1", api_key="sk-x-0123456789") as llm:
            try:
                await llm.embed("x")
            except StreamError as exc:
                assert "malformed base64 embedding" in str(exc)
            else:  # pragma: no cover
                raise AssertionError("no error")
