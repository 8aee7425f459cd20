"""OllamaLLM on the wire: exactly the options the user set, thinking, keep_alive,
logprobs, timings and normalised finish reasons, against the Ollama test server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from llmkit import (
    ContextLengthError,
    InvalidRequestError,
    LLMConfig,
    Message,
    ReplyValidationError,
)
from llmkit.providers.ollama.client import OllamaChatResponse, OllamaLLM, OllamaTimings
from tests.servers import ServerHandle

THOUGHT = "Thinking about the request."


@pytest.fixture
async def llm(ollama_server: ServerHandle) -> AsyncIterator[OllamaLLM]:
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, max_retries=0) as client:
        yield client


class City(BaseModel):
    name: str
    population: int


def last_body(server: ServerHandle, path: str = "/api/chat") -> dict[str, Any]:
    body = server.state.requests_to(path)[-1].json
    assert isinstance(body, dict)
    return body


def bodies(server: ServerHandle, path: str = "/api/chat") -> list[dict[str, Any]]:
    return [r.json for r in server.state.requests_to(path)]


# --------------------------------------------------------------------------- only what is set


async def test_nothing_unset_is_sent(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat("hi")
    await llm.completion("hi")
    [chat] = bodies(ollama_server)
    [generate] = bodies(ollama_server, "/api/generate")
    assert chat == {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert generate == {"model": "llama3.2", "prompt": "hi", "stream": False}


async def test_portable_options_translated(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat(
        "hi", max_tokens=5, temperature=0.3, top_p=0.9, top_k=20, seed=1, stop="END",
        presence_penalty=0.5, frequency_penalty=0.25, num_ctx=4096, min_p=0.05,
        keep_alive="10m", timeout=30, extra_headers={"X-Trace": "t1"},
        extra_body={"format": "json"},
    )
    [body] = bodies(ollama_server)
    assert body["options"] == {
        "num_predict": 5, "temperature": 0.3, "top_p": 0.9, "top_k": 20, "seed": 1,
        "stop": ["END"], "presence_penalty": 0.5, "frequency_penalty": 0.25,
        "num_ctx": 4096, "min_p": 0.05,
    }
    assert body["keep_alive"] == "10m"
    assert body["format"] == "json"  # extra_body merged as given
    assert "timeout" not in body and "extra_headers" not in body
    assert ollama_server.state.requests_to("/api/chat")[0].headers["X-Trace"] == "t1"


async def test_bad_options_fail_before_sending(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    with pytest.raises(InvalidRequestError, match="n"):
        await llm.chat("hi", n=2)
    with pytest.raises(InvalidRequestError, match="temperature"):
        await llm.chat("hi", temperature="hot")
    with pytest.raises(InvalidRequestError, match="num_ctx"):
        await llm.chat("hi", num_ctxx=10)
    with pytest.raises(InvalidRequestError, match="think"):
        await llm.chat("hi", think="extreme")
    with pytest.raises(InvalidRequestError, match="generate"):
        await llm.chat("hi", suffix="tail")  # an /api/generate field
    assert ollama_server.state.requests_to("/api/chat") == []


async def test_config_sampling_fields_default_to_unset(ollama_server: ServerHandle) -> None:
    config = LLMConfig(provider="ollama", model="llama3.2", base_url=ollama_server.url)
    assert (config.max_tokens, config.temperature, config.top_p) == (None, None, None)
    async with OllamaLLM(config) as llm:
        async for _ in llm.generate_stream("hi"):
            pass
    [body] = bodies(ollama_server)
    assert "options" not in body  # the Modelfile's PARAMETERs apply


# --------------------------------------------------------------------------- thinking


async def test_think_chat_and_levels(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    response = await llm.chat("why", think=True)
    assert response.reasoning == THOUGHT
    assert response.content == "Echo: why"
    await llm.chat("why", think="high")
    await llm.chat("why", reasoning_effort="low")
    await llm.chat("why", think=False)
    thinks = [b.get("think") for b in bodies(ollama_server)]
    assert thinks == [True, "high", "low", False]
    plain = await llm.chat("why")
    assert plain.reasoning is None


async def test_think_streamed(llm: OllamaLLM) -> None:
    chunks = [c async for c in llm.chat_stream("tell me", think="medium")]
    reasoning = "".join(c.reasoning for c in chunks)
    assert reasoning == THOUGHT
    assert "".join(c.delta for c in chunks) == "Echo: tell me"
    first_text = next(i for i, c in enumerate(chunks) if c.delta)
    assert all(not c.reasoning for c in chunks[first_text:])  # thinking comes first


async def test_think_on_generate_endpoint(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    response = await llm.completion("sky colour", think=True, system="be terse", raw=False)
    assert response.reasoning == THOUGHT
    assert response.content == "Echo: sky colour"
    chunks = [c async for c in llm.completion_stream("sky colour", think=True)]
    assert "".join(c.reasoning for c in chunks) == THOUGHT
    assert "".join(c.delta for c in chunks) == "Echo: sky colour"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert await llm.generate_completion("sky colour") == "Echo: sky colour"
    first = bodies(ollama_server, "/api/generate")[0]
    assert first["think"] is True and first["system"] == "be terse" and first["raw"] is False


async def test_think_from_config_extra(ollama_server: ServerHandle) -> None:
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, extra={"think": "low"}) as llm:
        assert (await llm.chat("a")).reasoning == THOUGHT
        await llm.chat("b", think=False)
    assert [b["think"] for b in bodies(ollama_server)] == ["low", False]


# --------------------------------------------------------------------------- keep_alive, logprobs, timings


async def test_keep_alive_unloads(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat("hi", keep_alive="5m")
    assert [m["name"] for m in await llm.list_running()] == ["llama3.2:latest"]
    await llm.chat("hi", keep_alive=0)
    assert await llm.list_running() == []
    assert [b["keep_alive"] for b in bodies(ollama_server)] == ["5m", 0]


async def test_logprobs(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    response = await llm.chat("one two", logprobs=True, top_logprobs=2)
    [body] = bodies(ollama_server)
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and "options" not in body
    assert response.logprobs is not None
    assert "".join(e["token"] for e in response.logprobs) == "Echo: one two"
    assert all(len(e["top_logprobs"]) == 2 for e in response.logprobs)
    chunks = [c async for c in llm.chat_stream("one two", logprobs=True)]
    streamed = [e["token"] for c in chunks for e in (c.logprobs or [])]
    assert "".join(streamed) == "Echo: one two"  # carried by the final line
    assert chunks[-1].logprobs is not None and chunks[-1].finish_reason == "stop"
    assert (await llm.chat("one two")).logprobs is None


async def test_timings(llm: OllamaLLM) -> None:
    response = await llm.chat("time this")
    assert isinstance(response, OllamaChatResponse)
    assert isinstance(response.timings, OllamaTimings)
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert getattr(response.timings, name) == response.raw[name] > 0
    completion = await llm.completion("time this")
    assert completion.timings is not None
    assert completion.timings.eval_duration == completion.raw["eval_duration"]
    chunks = [c async for c in llm.chat_stream("time this")]
    assert chunks[-1].raw is not None and chunks[-1].raw["total_duration"] > 0


# --------------------------------------------------------------------------- finish reasons, errors


async def test_finish_reasons_normalised(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.reply = "a b c d e f"
    cut = await llm.chat("x", max_tokens=2)
    assert (cut.finish_reason, cut.raw["done_reason"]) == ("length", "length")

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    called = await llm.chat("find Oslo", tools=[lookup])
    assert called.tool_calls and called.finish_reason == "tool_calls"
    assert called.raw["done_reason"] == "stop"
    loaded = await llm.completion("", keep_alive="1m")  # an empty prompt loads the model
    assert (loaded.finish_reason, loaded.raw["done_reason"]) == ("stop", "load")


async def test_embed_context_overflow(ollama_server: ServerHandle) -> None:
    ollama_server.state.context_length = 8
    async with OllamaLLM(
        model="nomic-embed-text", base_url=ollama_server.url, extra={"truncate": False}
    ) as llm:
        with pytest.raises(ContextLengthError, match="context length"):
            await llm.embed("one two three four five six seven eight nine ten")


# --------------------------------------------------------------------------- structured output, images


async def test_structured_output_pydantic(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    response = await llm.chat("describe a city", response_format=City)
    assert isinstance(response.parsed, City)
    assert isinstance(response.parsed.population, int)
    fmt = last_body(ollama_server)["format"]
    assert fmt["properties"]["name"]["type"] == "string"
    assert fmt["required"] == ["name", "population"]


async def test_structured_output_json_and_schema(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    response = await llm.chat("json please", response_format="json")
    assert response.parsed == {"result": "text"}
    assert last_body(ollama_server)["format"] == "json"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    response = await llm.chat("schema please", response_format=schema)
    assert isinstance(response.parsed, dict) and isinstance(response.parsed["ok"], bool)
    assert last_body(ollama_server)["format"] == schema


async def test_structured_output_mismatch_raises(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    # format= overrides the wire format; the reply ({"result": "text"}) is still checked
    with pytest.raises(ReplyValidationError, match="City") as info:
        await llm.chat("x", format="json", response_format=City)
    assert last_body(ollama_server)["format"] == "json"
    # the request was fine: the whole reply comes with the error, its usage counted
    assert info.value.response.content == '{"result": "text"}'
    assert llm.get_token_usage().completion_tokens == info.value.response.usage.completion_tokens > 0


async def test_images_passthrough(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    await llm.chat([Message("user", "what is this?", images=["aGVsbG8="])])
    assert last_body(ollama_server)["messages"][0] == {
        "role": "user", "content": "what is this?", "images": ["aGVsbG8="]
    }
    await llm.chat(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,d29ybGQ="}},
                ],
            }
        ]
    )
    assert last_body(ollama_server)["messages"][0] == {
        "role": "user", "content": "and this?", "images": ["d29ybGQ="]
    }


# --------------------------------------------------------------------------- /api/generate


async def test_generate_completion(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    text = await llm.generate_completion(
        "complete me", system="sys", raw=True, suffix="END", images=["aW1n"], max_tokens=10,
        top_k=5, keep_alive="2m",
    )
    assert text == "Echo: complete me"
    body = last_body(ollama_server, "/api/generate")
    assert body["prompt"] == "complete me"
    assert body["stream"] is False
    assert (body["system"], body["raw"], body["suffix"], body["images"]) == ("sys", True, "END", ["aW1n"])
    assert body["keep_alive"] == "2m"
    assert body["options"]["num_predict"] == 10 and body["options"]["top_k"] == 5
    assert "system" not in body["options"]
    assert llm.get_token_usage().completion_tokens == 3


# --------------------------------------------------------------------------- embeddings


async def test_embed_and_batch_order_and_chunking(ollama_server: ServerHandle) -> None:
    async with OllamaLLM(
        model="nomic-embed-text", base_url=ollama_server.url, extra={"embedding_batch_size": 2}
    ) as llm:
        single = await llm.embed("alpha")
        assert len(single) == 8 and all(isinstance(x, float) for x in single)
        body = last_body(ollama_server, "/api/embed")
        assert body == {"model": "nomic-embed-text", "input": ["alpha"]}
        texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
        vectors = await llm.embed_batch(texts)
        assert len(vectors) == 5
        assert vectors[0] == single
        assert vectors[1] != vectors[2]
        reqs = ollama_server.state.requests_to("/api/embed")[1:]
        assert sorted(len(r.json["input"]) for r in reqs) == [1, 2, 2]
        assert sorted(t for r in reqs for t in r.json["input"]) == sorted(texts)
        # each vector belongs to its own input
        for text, vec in zip(texts, vectors, strict=True):
            assert vec == await llm.embed(text)
        assert await llm.embed_batch([]) == []
        with pytest.raises(InvalidRequestError):
            await llm.embed_batch("not a list")  # type: ignore[arg-type]


async def test_embedding_model_from_extra(ollama_server: ServerHandle) -> None:
    async with OllamaLLM(
        model="llama3.2", base_url=ollama_server.url,
        extra={"embedding_model": "nomic-embed-text", "keep_alive": "30s"},
    ) as llm:
        await llm.embed("x")
    body = last_body(ollama_server, "/api/embed")
    assert body["model"] == "nomic-embed-text"
    assert body["keep_alive"] == "30s"
