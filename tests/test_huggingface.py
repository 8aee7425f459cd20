"""HuggingFaceLLM in API mode against the local Hugging Face test server (router, TGI, Hub)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llmkit import LLMConfig
from llmkit.core.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ModelNotFoundError,
    NotSupportedError,
    ServerError,
    StreamError,
)
from llmkit.core.types import Message
from llmkit.providers.huggingface.client import HuggingFaceLLM, extract_code, render_prompt
from tests.servers import ServerHandle, embed_text

CHAT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOKEN = "hf_TestTokenAbcdef123456"
FE_PATH = f"/hf-inference/models/{EMBED_MODEL}/pipeline/feature-extraction"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "HUGGINGFACE_API_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def make(server: ServerHandle, *, api: str | None = "router", **kwargs: Any) -> HuggingFaceLLM:
    extra = dict(kwargs.pop("extra", {}))
    if api is not None:
        extra.setdefault("api", api)
    extra.setdefault("hub_url", server.url)
    extra.setdefault("retry_initial_delay", 0.01)
    kwargs.setdefault("api_key", TOKEN)
    kwargs.setdefault("model", CHAT_MODEL)
    return HuggingFaceLLM(base_url=server.url, extra=extra, **kwargs)


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


# --------------------------------------------------------------------------- router


async def test_router_chat_passes_provider_suffix_and_token(hf_server: ServerHandle) -> None:
    async with make(hf_server, model=f"{CHAT_MODEL}:novita") as llm:
        response = await llm.chat("Hello there", temperature=0.2, max_tokens=50)
    assert response.content == "Echo: Hello there"
    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens > 0
    req = hf_server.state.requests_to("/v1/chat/completions")[0]
    assert req.json["model"] == f"{CHAT_MODEL}:novita"
    assert req.json["messages"] == [{"role": "user", "content": "Hello there"}]
    assert req.json["temperature"] == 0.2
    assert req.json["max_tokens"] == 50
    assert req.authorization == f"Bearer {TOKEN}"
    assert hf_server.state.requests_to("/info") == []  # api="router": no probe
    assert llm.get_token_usage().total_tokens == response.usage.total_tokens


async def test_router_generate_stream_and_usage(hf_server: ServerHandle) -> None:
    hf_server.state.reply = "one two three four five"
    async with make(hf_server) as llm:
        deltas = [d async for d in llm.generate_stream("count")]
        chunks = [c async for c in llm.chat_stream("count")]
        usage = llm.get_token_usage()
    assert len(deltas) > 1
    assert "".join(deltas) == "one two three four five"
    assert "".join(c.delta for c in chunks) == "one two three four five"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert usage.completion_tokens == 10
    assert all(r.json["stream"] is True for r in hf_server.state.requests_to("/v1/chat/completions"))


async def test_router_tools(hf_server: ServerHandle) -> None:
    hf_server.state.tool_arguments = {"city": "Paris"}
    async with make(hf_server) as llm:
        response = await llm.chat("weather in Paris?", tools=[get_weather], tool_choice="required")
        chunks = [
            c async for c in llm.chat_stream("weather?", tools=[get_weather], tool_choice="required")
        ]
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert response.finish_reason == "tool_calls"
    sent = hf_server.state.requests_to("/v1/chat/completions")[0].json
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "required"
    final = [c for c in chunks if c.completed_tool_calls]
    assert final and final[-1].completed_tool_calls is not None
    assert final[-1].completed_tool_calls[0].arguments == {"city": "Paris"}


async def test_router_missing_model(hf_server: ServerHandle) -> None:
    async with make(hf_server, model="missing-model") as llm:
        with pytest.raises(ModelNotFoundError, match="missing-model"):
            await llm.generate("hi")


# --------------------------------------------------------------------------- embeddings


async def test_feature_extraction_embeddings_batched_in_order(hf_server: ServerHandle) -> None:
    texts = [f"sentence number {i}" for i in range(5)]
    extra = {"embedding_model": EMBED_MODEL, "embedding_batch_size": 2, "normalize": True}
    async with make(hf_server, extra=extra) as llm:
        vectors = await llm.embed_batch(texts)
        one = await llm.embed("solo")
    dim = hf_server.state.embedding_dim
    assert vectors == [embed_text(t, dim) for t in texts]
    assert one == embed_text("solo", dim)
    reqs = hf_server.state.requests_to(FE_PATH, "POST")
    assert len(reqs) == 4
    assert sorted(len(r.json["inputs"]) for r in reqs) == [1, 1, 2, 2]
    assert all(r.json["normalize"] is True for r in reqs)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in reqs)


async def test_feature_extraction_token_level_and_flat_responses(hf_server: ServerHandle) -> None:
    state = hf_server.state
    # token-level output ([texts, tokens, dim]) is mean-pooled
    state.add_fault("status", path=FE_PATH, status=200, body=[[[1.0, 2.0], [3.0, 6.0]], [[0.0, 1.0]]])
    # one flat vector for a single input
    state.add_fault("status", path=FE_PATH, status=200, body=[0.5, -0.5, 0.25])
    # one text's token vectors ([tokens, dim])
    state.add_fault("status", path=FE_PATH, status=200, body=[[1.0, 0.0], [3.0, 2.0]])
    async with make(hf_server, extra={"embedding_model": EMBED_MODEL}) as llm:
        pooled = await llm.embed_batch(["a b", "c"])
        flat = await llm.embed("x")
        tokens = await llm.embed("y z")
        state.add_fault("status", path=FE_PATH, status=200, body=[[0.1, 0.2]])
        with pytest.raises(StreamError, match="1 embeddings for 2 inputs"):
            await llm.embed_batch(["a", "b"])
    assert pooled == [[2.0, 4.0], [0.0, 1.0]]
    assert flat == [0.5, -0.5, 0.25]
    assert tokens == [2.0, 1.0]


# --------------------------------------------------------------------------- model loading


async def test_model_loading_503_retried_after_estimated_time(hf_server: ServerHandle) -> None:
    hf_server.state.add_fault("loading", path="/v1/chat/completions", estimated_time=0.6)
    async with make(hf_server, max_retries=2) as llm:
        started = time.perf_counter()
        text = await llm.generate("wake up")
        elapsed = time.perf_counter() - started
        metrics = llm.get_metrics()
    assert text == "Echo: wake up"
    assert elapsed >= 0.6
    assert len(hf_server.state.requests_to("/v1/chat/completions")) == 2
    assert metrics.retries == 1


async def test_model_loading_wait_is_capped(hf_server: ServerHandle) -> None:
    hf_server.state.add_fault("loading", path=FE_PATH, estimated_time=120)
    extra = {"embedding_model": EMBED_MODEL, "retry_max_after": 0.3}
    async with make(hf_server, max_retries=1, extra=extra) as llm:
        started = time.perf_counter()
        vector = await llm.embed("hello")
        elapsed = time.perf_counter() - started
    assert vector == embed_text("hello", hf_server.state.embedding_dim)
    assert 0.3 <= elapsed < 5
    assert len(hf_server.state.requests_to(FE_PATH)) == 2


async def test_model_loading_gives_up_after_max_retries(hf_server: ServerHandle) -> None:
    hf_server.state.add_fault("loading", path="/v1/chat/completions", estimated_time=0.05, times=5)
    async with make(hf_server, max_retries=1) as llm:
        with pytest.raises(ServerError, match="currently loading") as info:
            await llm.generate("hi")
    assert info.value.status == 503
    assert info.value.retry_after == 0.05
    assert len(hf_server.state.requests_to("/v1/chat/completions")) == 2


# --------------------------------------------------------------------------- Hub


async def test_hub_search_query_parameters(hf_server: ServerHandle) -> None:
    async with make(hf_server) as llm:
        models = await llm.search_models(
            "llama",
            limit=5,
            author="meta-llama",
            filter="conversational",
            sort="downloads",
            direction=-1,
            pipeline_tag="text-generation",
            full=True,
        )
    assert [m["id"] for m in models] == [CHAT_MODEL]
    assert models[0]["siblings"]  # full=true returns the file list
    req = hf_server.state.requests_to("/api/models", "GET")[0]
    assert req.query == {
        "search": "llama",
        "limit": "5",
        "author": "meta-llama",
        "filter": "conversational",
        "sort": "downloads",
        "direction": "-1",
        "pipeline_tag": "text-generation",
        "full": "true",
    }
    assert req.authorization == f"Bearer {TOKEN}"


async def test_hub_search_sort_limit_and_tag_list(hf_server: ServerHandle) -> None:
    async with make(hf_server) as llm:
        top = await llm.search_models(None, limit=2, sort="downloads", direction=-1)
        tagged = await llm.search_models("", filter=["text-generation", "transformers"])
    assert [m["id"] for m in top] == [EMBED_MODEL, "openai-community/gpt2"]
    assert {m["id"] for m in tagged} == {
        CHAT_MODEL,
        "Qwen/Qwen2.5-0.5B-Instruct",
        "openai-community/gpt2",
    }
    first = hf_server.state.requests_to("/api/models")[0]
    assert "search" not in first.query


async def test_hub_url_from_hf_endpoint(hf_server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hf_server.url + "/")
    llm = HuggingFaceLLM(model=CHAT_MODEL, api_key=TOKEN)  # router base, hub from env
    async with llm:
        details = await llm.get_model_details("BAAI/bge-small-en-v1.5")
    assert details["id"] == "BAAI/bge-small-en-v1.5"
    assert details["pipeline_tag"] == "feature-extraction"
    assert hf_server.state.last_request.path == "/api/models/BAAI/bge-small-en-v1.5"


async def test_hub_details_not_found(hf_server: ServerHandle) -> None:
    async with make(hf_server) as llm:
        with pytest.raises(ModelNotFoundError, match="nobody/nothing"):
            await llm.get_model_details("nobody/nothing")
        details = await llm.get_model_details(CHAT_MODEL)
    assert details["gated"] == "manual"
    assert len(hf_server.state.requests_to("/api/models/nobody/nothing")) == 1  # not retried


# --------------------------------------------------------------------------- generate_code

CODE_REPLIES = [
    ("```python\nprint('hi')\n```", "print('hi')"),
    ("Here you go:\n\n```py\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
    ("```bash\npip install x\n```\n```python\nimport x\n```", "import x"),
    ("```\nx = 1\n```", "x = 1"),
    ("```js\nconsole.log(1)\n```\n```ruby\nputs 1\n```", "console.log(1)"),
    ("  x = 41 + 1  \n", "x = 41 + 1"),
    ("```python\nunterminated = True\n", "unterminated = True"),
]


@pytest.mark.parametrize(("reply", "expected"), CODE_REPLIES)
async def test_generate_code_extraction(hf_server: ServerHandle, reply: str, expected: str) -> None:
    hf_server.state.reply = reply
    async with make(hf_server) as llm:
        code = await llm.generate_code("write it", "python")
    assert code == expected
    messages = hf_server.state.last_request.json["messages"]
    assert messages[0]["role"] == "system" and "python" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "write it"}


def test_extract_code_language_aliases() -> None:
    text = "```python\na\n```\n```ts\nlet b = 1\n```"
    assert extract_code(text, "typescript") == "let b = 1"
    assert extract_code(text, "Python") == "a"
    assert extract_code(text, "go") == "a"


def test_render_prompt_template() -> None:
    msgs = [Message("system", "S"), Message("user", "U"), Message("assistant", "A"), Message("user", "V")]
    assert render_prompt(msgs) == "System: S\n\nUser: U\n\nAssistant: A\n\nUser: V\n\nAssistant:"


# --------------------------------------------------------------------------- tokens


async def test_token_env_precedence(hf_server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_FromHfToken0001")
    monkeypatch.setenv("HUGGINGFACE_API_TOKEN", "hf_FromHuggingFace01")
    async with make(hf_server, api_key=None) as llm:
        await llm.generate("a")
    assert hf_server.state.last_request.authorization == "Bearer hf_FromHuggingFace01"

    monkeypatch.delenv("HUGGINGFACE_API_TOKEN")
    async with make(hf_server, api_key=None) as llm:
        await llm.generate("b")
        await llm.search_models("gpt2")
    assert [r.authorization for r in hf_server.state.requests[-2:]] == ["Bearer hf_FromHfToken0001"] * 2

    config = LLMConfig(provider="huggingface", model=CHAT_MODEL, base_url=hf_server.url,
                       extra={"api": "router"})
    async with HuggingFaceLLM(config) as llm:  # a bare LLMConfig: the env is read at connect
        await llm.generate("c")
    assert hf_server.state.last_request.authorization == "Bearer hf_FromHfToken0001"

    async with make(hf_server, api_key="hf_ExplicitKey000001") as llm:
        await llm.generate("d")
    assert hf_server.state.last_request.authorization == "Bearer hf_ExplicitKey000001"


async def test_no_token_sends_no_authorization(hf_server: ServerHandle) -> None:
    async with make(hf_server, api_key=None) as llm:
        await llm.generate("a")
    assert hf_server.state.last_request.authorization is None


async def test_token_never_in_errors(hf_server: ServerHandle) -> None:
    secret = "hf_SuperSecretValue9876543"
    hf_server.state.api_key = "hf_TheRightOne12345"
    async with make(hf_server, api_key=secret, max_retries=0) as llm:
        with pytest.raises(AuthenticationError) as auth:
            await llm.generate("hi")
        hf_server.state.api_key = None
        hf_server.state.add_fault(
            "status", status=400, body={"error": f"token {secret} is malformed", "error_type": "validation"}
        )
        with pytest.raises(InvalidRequestError) as echoed:
            await llm.generate("hi")
        hf_server.state.add_fault("status", status=500, body=f"upstream said Bearer {secret}")
        with pytest.raises(ServerError) as plain:
            await llm.embed("hi")
        text = " ".join(
            [str(e.value) + repr(e.value) + e.value.message for e in (auth, echoed, plain)]
            + [repr(llm), str(llm.config), repr(llm.config), str(llm.config.model_dump())]
        )
    assert auth.value.status == 401
    assert "malformed" in echoed.value.message
    assert secret not in text


# --------------------------------------------------------------------------- misc


async def test_health_checks(hf_server: ServerHandle, tgi_server: ServerHandle) -> None:
    async with make(hf_server) as llm:
        await llm.health_check()
    assert hf_server.state.last_request.path == "/v1/models"
    tgi_server.state.healthy = False
    async with make(tgi_server, api="tgi", max_retries=0) as llm:
        with pytest.raises(ServerError, match="unhealthy"):
            await llm.health_check()
        tgi_server.state.healthy = True
        await llm.health_check()
    # /info once (the server's limits), then one /health per check
    assert [r.path for r in tgi_server.state.requests] == ["/info", "/health", "/health"]


async def test_api_mode_capabilities(hf_server: ServerHandle) -> None:
    hf_server.state.reply = None
    async with make(hf_server) as llm:
        assert llm.supports_batching() is False
        with pytest.raises(NotSupportedError):
            await llm.build_cache("prefix")
        with pytest.raises(NotSupportedError):
            await llm.generate_with_cache("x", object())  # type: ignore[arg-type]
        replies = await llm.batch_generate([f"p{i}" for i in range(6)], concurrency=3)
        info = llm.get_model_info()
    assert replies == [f"Echo: p{i}" for i in range(6)]
    assert info.capabilities.tools and info.capabilities.embeddings
    assert not info.capabilities.batching and not info.capabilities.kv_cache
    assert llm.closed


def test_invalid_api_option() -> None:
    with pytest.raises(ConfigError, match="extra\\['api'\\]"):
        HuggingFaceLLM(model=CHAT_MODEL, extra={"api": "bogus"})


def test_router_base_is_default() -> None:
    llm = HuggingFaceLLM(model=CHAT_MODEL)
    info = llm.get_model_info()
    assert info.base_url == "https://router.huggingface.co"
    assert info.details["api"] == "router"
    assert info.details["hub_url"] == "https://huggingface.co"
    asyncio.run(llm.aclose())


async def test_auto_probe_failure_is_not_cached(tgi_server: ServerHandle) -> None:
    tgi_server.state.api_key = "hf_SomeOtherToken999"
    async with make(tgi_server, api=None, max_retries=0) as llm:
        with pytest.raises(AuthenticationError):
            await llm.generate("x")
        tgi_server.state.api_key = None
        assert await llm.generate("y") == "Echo: y"
        assert llm.get_model_info().details["api"] == "tgi-chat"
    assert len(tgi_server.state.requests_to("/info")) == 2
