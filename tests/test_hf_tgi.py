"""HuggingFaceLLM against the TGI test server (and a Text Embeddings Inference server):
grammars in TGI's shape, prompt token counts, the server's limits checked before sending,
exactly the options the user set, embeddings through TEI, context-overflow errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from llmkit import (
    ContextLengthError,
    InvalidRequestError,
    NotSupportedError,
)
from llmkit.core.structured import strict_schema
from llmkit.providers.huggingface.client import HuggingFaceLLM
from tests.servers import ServerHandle, ServerState, serve
from tests.servers.tei_server import make_tei_app

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class City(BaseModel):
    name: str
    population: int


def make(server: ServerHandle, api: str, **extra: Any) -> HuggingFaceLLM:
    return HuggingFaceLLM(
        model=MODEL, base_url=server.url, api_key="hf_test", max_retries=0,
        extra={"api": api, "hub_url": server.url, **extra},
    )


def bodies(server: ServerHandle, path: str) -> list[dict[str, Any]]:
    return [r.json for r in server.state.requests_to(path)]


@pytest.fixture
async def tei_server() -> AsyncIterator[ServerHandle]:
    async with serve(make_tei_app, ServerState()) as handle:
        yield handle


# --------------------------------------------------------------------------- response_format


async def test_messages_api_response_format_in_tgi_shape(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi-chat") as llm:
        response = await llm.chat("a city", response_format=City)
        chunks = [c async for c in llm.chat_stream("a city", response_format={"type": "json_object"})]
    assert isinstance(response.parsed, City)
    schema_body, stream_body = bodies(tgi_server, "/v1/chat/completions")
    assert schema_body["response_format"] == {"type": "json", "value": strict_schema(City)[0]}
    assert stream_body["response_format"] == {"type": "json", "value": {"type": "object"}}
    assert "".join(c.delta for c in chunks).startswith("{")


async def test_generate_grammar(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi") as llm:
        response = await llm.chat("a city", response_format=City)
        chunks = [c async for c in llm.chat_stream("a city", response_format=City)]
    assert isinstance(response.parsed, City)
    for body in bodies(tgi_server, "/generate") + bodies(tgi_server, "/generate_stream"):
        assert body["parameters"]["grammar"] == {"type": "json", "value": strict_schema(City)[0]}
    assert City.model_validate_json("".join(c.delta for c in chunks))


# --------------------------------------------------------------------------- usage, options


async def test_prompt_tokens_reported(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi") as llm:
        generated = await llm.chat("one two three")
        streamed = [c async for c in llm.chat_stream("one two three")]
    async with make(tgi_server, "tgi-chat") as llm:
        messages_api = await llm.chat("one two three")
    prompt = "User: one two three\n\nAssistant:"
    assert generated.usage.prompt_tokens == len(prompt.split()) > 0
    assert bodies(tgi_server, "/generate")[0]["parameters"]["decoder_input_details"] is True
    assert streamed[-1].usage is not None and streamed[-1].usage.prompt_tokens > 0
    assert messages_api.usage.prompt_tokens == 3


async def test_only_set_options_sent(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi") as llm:
        await llm.generate("hi")
        await llm.generate("hi", top_k=5, repetition_penalty=1.1, logprobs=True, top_logprobs=2)
    async with make(tgi_server, "tgi-chat") as llm:
        await llm.generate("hi")
    plain, tuned = bodies(tgi_server, "/generate")
    assert plain["parameters"] == {"details": True, "decoder_input_details": True}
    assert tuned["parameters"]["top_k"] == 5 and tuned["parameters"]["repetition_penalty"] == 1.1
    assert tuned["parameters"]["top_n_tokens"] == 2
    [chat] = bodies(tgi_server, "/v1/chat/completions")
    assert set(chat) == {"model", "messages"}


async def test_generate_logprobs(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi") as llm:
        response = await llm.chat("hi there", logprobs=True)
        plain = await llm.chat("hi there")
    assert response.logprobs is not None
    assert "".join(t["token"] for t in response.logprobs) == response.content
    assert plain.logprobs is None


async def test_options_generate_cannot_honour(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi") as llm:
        with pytest.raises(InvalidRequestError, match="presence_penalty"):
            await llm.generate("hi", presence_penalty=0.5)
        with pytest.raises(InvalidRequestError, match="'n'"):
            await llm.generate("hi", n=2)
    assert bodies(tgi_server, "/generate") == []


# --------------------------------------------------------------------------- limits from /info


@pytest.mark.parametrize("api", ["tgi", "tgi-chat"])
async def test_limits_checked_before_sending(tgi_server: ServerHandle, api: str) -> None:
    total = tgi_server.state.context_length + 1024
    async with make(tgi_server, api) as llm:
        with pytest.raises(InvalidRequestError, match="at most 4"):
            await llm.generate("hi", stop=["a", "b", "c", "d", "e"])
        with pytest.raises(InvalidRequestError, match=f"max_total_tokens.*{total}"):
            await llm.generate("hi", max_tokens=total)
        with pytest.raises(InvalidRequestError, match="max_best_of=2"):
            await llm.generate("hi", best_of=3)
        with pytest.raises(InvalidRequestError, match="max_input_tokens"):
            await llm.generate("hi", truncate=tgi_server.state.context_length + 1)
        with pytest.raises(InvalidRequestError, match="at most 4"):
            async for _ in llm.chat_stream("hi", stop=["a", "b", "c", "d", "e"]):
                pass
        assert await llm.generate("hi", stop=["a", "b", "c", "d"], max_tokens=total - 10)
    sent = [r.path for r in tgi_server.state.requests]
    assert sent[0] == "/info" and len(sent) == 2  # /info, then only the valid request


async def test_context_overflow_and_invalid_max_new_tokens(tgi_server: ServerHandle) -> None:
    tgi_server.state.context_length = 5
    async with make(tgi_server, "tgi") as llm:
        with pytest.raises(ContextLengthError, match="must be <="):
            await llm.generate("one two three four five six seven")
        tgi_server.state.add_fault(
            "status", status=422, path="/generate",
            body={"error": "Input validation error: `inputs` must have less than 5 tokens. "
                           "Given: 9", "error_type": "validation"},
        )
        with pytest.raises(ContextLengthError):
            await llm.generate("hi")
        tgi_server.state.add_fault(
            "status", status=422, path="/generate",
            body={"error": "Input validation error: `max_new_tokens` must be <= 4. Given: 9",
                  "error_type": "validation"},
        )
        with pytest.raises(InvalidRequestError) as info:
            await llm.generate("hi")
    assert not isinstance(info.value, ContextLengthError)


# --------------------------------------------------------------------------- embeddings


async def test_tgi_has_no_embeddings_without_tei(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, "tgi-chat") as llm:
        with pytest.raises(NotSupportedError, match="embedding_base_url"):
            await llm.embed("hello")
        info = llm.get_model_info()
    assert info.capabilities.embeddings is False
    assert [r.path for r in tgi_server.state.requests] == ["/info"]


async def test_tgi_embeddings_through_tei(tgi_server: ServerHandle, tei_server: ServerHandle) -> None:
    texts = [f"text number {i}" for i in range(40)]
    async with make(tgi_server, "auto", embedding_base_url=tei_server.url, normalize=False) as llm:
        one = await llm.embed("hello")
        many = await llm.embed_batch(texts)
        info = llm.get_model_info()
    assert len(one) == tei_server.state.embedding_dim
    assert len(many) == 40
    assert many[3] == (await _tei_vector(tei_server, texts[3]))
    sent = bodies(tei_server, "/embed")
    assert sent[0] == {"inputs": ["hello"], "normalize": False}
    assert sorted(len(b["inputs"]) for b in sent[1:]) == [8, 32]  # TEI's client batch size
    assert info.capabilities.embeddings is True and info.details["api"] == "tgi-chat"
    assert tgi_server.state.requests_to("/embed") == []


async def _tei_vector(server: ServerHandle, text: str) -> list[float]:
    from tests.servers import embed_text

    return [float(x) for x in embed_text(text, server.state.embedding_dim)]


async def test_tei_context_overflow(tgi_server: ServerHandle, tei_server: ServerHandle) -> None:
    tei_server.state.context_length = 3
    async with make(tgi_server, "tgi", embedding_base_url=tei_server.url, truncate=False) as llm:
        with pytest.raises(ContextLengthError):
            await llm.embed("one two three four five")


@pytest.mark.spec_exempt("sends OpenAI's response_format shape on purpose: TGI's own 422")
async def test_tgi_server_rejects_openai_shape(tgi_server: ServerHandle) -> None:
    openai_shape = {"type": "json_schema", "json_schema": {"name": "c", "schema": {}}}
    async with make(tgi_server, "tgi-chat") as llm:
        with pytest.raises(InvalidRequestError, match="missing field `value`"):
            await llm.chat("x", extra_body={"response_format": openai_shape})
