"""HuggingFaceLLM against the router test server: choosing the inference provider
(``extra["inference_provider"]``, policies, the ``model:provider`` suffix) for chat and for
the feature-extraction routes each provider documents."""

from __future__ import annotations

from typing import Any

import pytest

from llmkit import ConfigError, ModelNotFoundError, NotSupportedError
from llmkit.providers.huggingface.client import HuggingFaceLLM
from tests.servers import ServerHandle, embed_text

CHAT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
BGE = "BAAI/bge-small-en-v1.5"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def make(server: ServerHandle, *, model: str = CHAT_MODEL, **extra: Any) -> HuggingFaceLLM:
    return HuggingFaceLLM(
        model=model, base_url=server.url, api_key="hf_test", max_retries=0,
        extra={"api": "router", "hub_url": server.url, **extra},
    )


def chat_models(server: ServerHandle) -> list[str]:
    return [r.json["model"] for r in server.state.requests_to("/v1/chat/completions")]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("together", f"{CHAT_MODEL}:together"),
        ("hf-inference", f"{CHAT_MODEL}:hf-inference"),
        ("auto", CHAT_MODEL),
        ("fastest", f"{CHAT_MODEL}:fastest"),
        ("cheapest", f"{CHAT_MODEL}:cheapest"),
        ("preferred", f"{CHAT_MODEL}:preferred"),
        (None, CHAT_MODEL),
    ],
)
async def test_chat_provider_choice(hf_server: ServerHandle, choice: str | None, sent: str) -> None:
    async with make(hf_server, inference_provider=choice) as llm:
        assert await llm.generate("hi") == "Echo: hi"
        async for _ in llm.generate_stream("hi"):
            pass
    assert chat_models(hf_server) == [sent, sent]


async def test_chat_suffix_and_option_must_agree(hf_server: ServerHandle) -> None:
    async with make(hf_server, model=f"{CHAT_MODEL}:novita", inference_provider="novita") as llm:
        await llm.generate("hi")
    async with make(hf_server, model=f"{CHAT_MODEL}:novita", inference_provider="groq") as llm:
        with pytest.raises(ConfigError, match="novita"):
            await llm.generate("hi")
    assert chat_models(hf_server) == [f"{CHAT_MODEL}:novita"]
    with pytest.raises(ConfigError, match="inference_provider"):
        make(hf_server, inference_provider="together:fast")


async def test_embeddings_default_hf_inference(hf_server: ServerHandle) -> None:
    async with make(hf_server, embedding_model=MINILM) as llm:
        vector = await llm.embed("hello")
    assert vector == pytest.approx(embed_text("hello", hf_server.state.embedding_dim))
    [req] = hf_server.state.requests
    assert req.path == f"/hf-inference/models/{MINILM}/pipeline/feature-extraction"
    assert req.json == {"inputs": ["hello"]}


async def test_embeddings_named_provider_uses_hub_mapping(hf_server: ServerHandle) -> None:
    async with make(hf_server, embedding_model=BGE, inference_provider="together") as llm:
        vectors = await llm.embed_batch(["a b", "c"])
        await llm.embed("again")
    assert vectors[1] == pytest.approx(embed_text("c", hf_server.state.embedding_dim))
    paths = [r.path for r in hf_server.state.requests]
    assert paths == [f"/api/models/{BGE}", "/together/v1/embeddings", "/together/v1/embeddings"]
    hub = hf_server.state.requests[0]
    assert hub.query == {"expand[]": "inferenceProviderMapping"}
    body = hf_server.state.requests_to("/together/v1/embeddings")[0].json
    assert body == {"input": ["a b", "c"], "model": "BAAI/bge-small-en-v1.5-together"}


@pytest.mark.parametrize("policy", ["auto", "fastest", "cheapest"])
async def test_embeddings_policy_picks_first_live_feature_extraction(
    hf_server: ServerHandle, policy: str
) -> None:
    # the mapping lists novita (conversational), scaleway (staging), then together
    async with make(hf_server, embedding_model=BGE, inference_provider=policy) as llm:
        await llm.embed("x")
    assert [r.path for r in hf_server.state.requests][1:] == ["/together/v1/embeddings"]


async def test_embeddings_suffix_and_other_routes(hf_server: ServerHandle) -> None:
    async with make(hf_server, embedding_model=f"{BGE}:hf-inference") as llm:
        await llm.embed("x")
    async with make(hf_server, embedding_model=f"{BGE}:scaleway") as llm:
        await llm.embed("x")
    async with make(hf_server, embedding_model=MINILM, inference_provider="deepinfra") as llm:
        await llm.embed("x")
    paths = [r.path for r in hf_server.state.requests]
    assert paths == [
        f"/hf-inference/models/{BGE}/pipeline/feature-extraction",  # no Hub lookup needed
        f"/api/models/{BGE}",
        "/scaleway/v1/embeddings",
        f"/api/models/{MINILM}",
        "/deepinfra/v1/openai/embeddings",
    ]
    assert hf_server.state.requests[2].json["model"] == "bge-small-staging"
    assert hf_server.state.requests[4].json["model"] == MINILM  # no mapping entry: the Hub id


async def test_embeddings_unavailable(hf_server: ServerHandle) -> None:
    async with make(hf_server, embedding_model=BGE, inference_provider="groq") as llm:
        with pytest.raises(NotSupportedError, match="groq"):
            await llm.embed("x")
    async with make(hf_server, embedding_model="openai-community/gpt2", inference_provider="auto") as llm:
        with pytest.raises(ModelNotFoundError, match="feature-extraction"):
            await llm.embed("x")
    assert all(r.path.startswith("/api/models/") for r in hf_server.state.requests)
