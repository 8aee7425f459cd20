"""HuggingFaceLLM in local mode, on a tiny random Llama built offline and MiniLM embeddings."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from llmkit.base import PromptCache
from llmkit.core.errors import (
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    NotSupportedError,
)
from llmkit.providers.huggingface.client import HuggingFaceLLM
from tests.local_models import build_tiny_llama, minilm_path

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parents[1]
GREEDY = {"temperature": 0.0, "max_tokens": 12}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
async def llm(tiny_model: str) -> AsyncIterator[HuggingFaceLLM]:
    instance = HuggingFaceLLM(
        model=tiny_model,
        base_url="local",
        extra={"device": "cpu", "embedding_model": minilm_path(), "max_batch_size": 3},
    )
    async with instance:
        yield instance


async def test_generate_and_usage(llm: HuggingFaceLLM) -> None:
    text = await llm.generate("Hello world", **GREEDY)
    again = await llm.generate([{"role": "user", "content": "Hello world"}], **GREEDY)
    response = await llm.chat("Hello world", **GREEDY)
    assert isinstance(text, str) and text
    assert text == again == response.content
    assert response.finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= 12
    assert response.usage.prompt_tokens > 0
    usage = llm.get_token_usage()
    assert usage.completion_tokens == 3 * response.usage.completion_tokens
    assert llm.get_metrics().requests == 3


async def test_stream_matches_generate(llm: HuggingFaceLLM) -> None:
    expected = await llm.generate("The quick brown fox", **GREEDY)
    before = llm.get_token_usage().completion_tokens
    deltas = [d async for d in llm.generate_stream("The quick brown fox", **GREEDY)]
    chunks = [c async for c in llm.chat_stream("The quick brown fox", **GREEDY)]
    assert "".join(deltas) == expected
    assert "".join(c.delta for c in chunks) == expected
    assert chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert llm.get_token_usage().completion_tokens == before + 2 * chunks[-1].usage.completion_tokens


async def test_stream_stopped_early(llm: HuggingFaceLLM) -> None:
    async with aclosing(
        llm.generate_stream("Streaming sends text", temperature=0.0, max_tokens=40)
    ) as stream:
        async for delta in stream:
            assert delta
            break
    assert await llm.generate("Streaming sends text", **GREEDY)


async def test_batch_generate_matches_one_by_one(llm: HuggingFaceLLM) -> None:
    prompts = [
        "Hello",
        "A journey of a thousand miles",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Numbers: 1 2"}],
        "Python, Rust, Go",
        "To be or not to be",
    ]
    assert llm.supports_batching() is True
    singles = [await llm.generate(p, **GREEDY) for p in prompts]
    batched = await llm.batch_generate(prompts, progress=False, **GREEDY)
    assert batched == singles


async def test_batch_generate_return_exceptions(llm: HuggingFaceLLM) -> None:
    out = await llm.batch_generate(["Hello", [], "world"], return_exceptions=True, **GREEDY)
    assert isinstance(out[1], InvalidRequestError)
    assert out[0] == await llm.generate("Hello", **GREEDY)
    assert out[2] == await llm.generate("world", **GREEDY)
    with pytest.raises(InvalidRequestError):
        await llm.batch_generate(["Hello", []], **GREEDY)


async def test_cache_matches_plain_generate(llm: HuggingFaceLLM) -> None:
    prefix = [{"role": "system", "content": "Caching the key and value tensors saves compute."}]
    cache = await llm.build_cache(prefix)
    assert isinstance(cache, PromptCache) and cache.provider == "huggingface"
    for question in ("Hello world", "The quick brown fox"):
        full = [*prefix, {"role": "user", "content": question}]
        assert await llm.generate_with_cache(full, cache, **GREEDY) == await llm.generate(
            full, **GREEDY
        )
    with pytest.raises(InvalidRequestError):
        await llm.generate_with_cache([{"role": "user", "content": "other"}], cache, **GREEDY)


async def test_embeddings(llm: HuggingFaceLLM) -> None:
    one = await llm.embed("hello world")
    many = await llm.embed_batch(["hello world", "the fox jumps", "hello world"])
    assert len(one) == 384
    assert [len(v) for v in many] == [384, 384, 384]
    assert many[0] == pytest.approx(many[2])
    assert many[0] == pytest.approx(one, abs=1e-5)
    assert many[0] != pytest.approx(many[1], abs=1e-3)


async def test_normalized_embeddings(tiny_model: str) -> None:
    extra = {"device": "cpu", "embedding_model": minilm_path(), "normalize_embeddings": True}
    async with HuggingFaceLLM(model=tiny_model, base_url="local", extra=extra) as llm:
        vec = await llm.embed("normalize me")
    assert math.isclose(math.sqrt(sum(v * v for v in vec)), 1.0, rel_tol=1e-4)


async def test_info_health_and_switching(tiny_model: str) -> None:
    llm = HuggingFaceLLM(model=tiny_model, extra={"device": "cpu", "api": "router"})
    async with llm:
        assert llm.supports_batching() is False
        with pytest.raises(NotSupportedError):
            await llm.build_cache("x")
        llm.set_use_local(True)
        await llm.health_check()
        info = llm.get_model_info()
        assert info.capabilities.kv_cache and info.capabilities.batching
        assert info.capabilities.embeddings and not info.capabilities.tools
        assert info.context_length == 2048
        assert info.details["loaded"] is True and info.details["device"] == "cpu"
        with pytest.raises(NotSupportedError):
            await llm.chat("hi", tools=[{"type": "function", "function": {"name": "f"}}])
        with pytest.raises(InvalidRequestError):
            await llm.generate("hi", top_p=0.0, temperature=0.5)


async def test_missing_local_model_is_a_fast_config_error(tmp_path: Path) -> None:
    async with HuggingFaceLLM(model=str(tmp_path / "nope"), base_url="local") as llm:
        for call in (llm.generate("hi", max_tokens=2), llm.embed("hi")):
            started = time.perf_counter()
            with pytest.raises(ConfigError) as info:
                await call
            assert time.perf_counter() - started < 1.0
            assert info.value.provider == "huggingface"
            assert str(tmp_path / "nope") in info.value.message


async def test_uncached_hub_id_fails_without_contacting_the_hub(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a try would hang or fail
    async with HuggingFaceLLM(model="llmkit-tests/no-such-model", base_url="local") as llm:
        started = time.perf_counter()
        with pytest.raises(ConfigError, match="never downloads"):
            await llm.generate("hi", max_tokens=2)
        assert time.perf_counter() - started < 1.0


def _minilm_without_weights(directory: Path) -> Path:
    """MiniLM's configuration and tokenizer files, next to unreadable weights."""
    directory.mkdir()
    for item in Path(minilm_path()).iterdir():
        if item.is_file() and item.suffix in (".json", ".txt"):
            (directory / item.name).write_bytes(item.read_bytes())
    (directory / "model.safetensors").write_bytes(b"not weights")
    return directory


async def test_embedding_model_asked_to_generate(tmp_path: Path) -> None:
    # The weights cannot be read: the kind check has to come before any loading.
    fake = _minilm_without_weights(tmp_path / "minilm-no-weights")
    async with HuggingFaceLLM(model=str(fake), base_url="local") as llm:
        started = time.perf_counter()
        with pytest.raises(NotSupportedError, match="embedding model") as info:
            await llm.generate("hi", max_tokens=2)
        assert time.perf_counter() - started < 1.0
        assert str(fake) in info.value.message


async def test_causal_lm_asked_to_embed(tiny_model: str) -> None:
    async with HuggingFaceLLM(model=tiny_model, base_url="local", extra={"device": "cpu"}) as llm:
        with pytest.raises(NotSupportedError, match="not an embedding model"):
            await llm.embed("hi")


async def test_directory_that_is_no_model(tmp_path: Path) -> None:
    async with HuggingFaceLLM(model=str(tmp_path), base_url="local") as llm:
        with pytest.raises(ConfigError, match=r"no config\.json"):
            await llm.generate("hi", max_tokens=2)


async def test_prompt_longer_than_the_model_is_a_context_length_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    short = str(build_tiny_llama(tmp_path_factory.mktemp("short"), max_position_embeddings=32))
    async with HuggingFaceLLM(model=short, base_url="local", extra={"device": "cpu"}) as llm:
        assert await llm.generate("hi", max_tokens=2, temperature=0.0)
        # Generation stops at the last position the model has.
        replies = [
            await llm.chat(prompt, max_tokens=100, temperature=0.0)
            for prompt in ("the quick brown fox", "Hello world", "Numbers 1 2 3", "A journey")
        ]
        totals = [r.usage.prompt_tokens + r.usage.completion_tokens for r in replies]
        assert all(total <= 32 for total in totals)
        assert any(r.finish_reason == "length" and t == 32 for r, t in zip(replies, totals, strict=True))
        with pytest.raises(ContextLengthError, match="maximum is 32"):
            await llm.generate("the quick brown fox " * 20, max_tokens=2)
        deltas: list[str] = []
        with pytest.raises(ContextLengthError):
            async for delta in llm.generate_stream("the quick brown fox " * 20, max_tokens=2):
                deltas.append(delta)
        assert deltas == []


async def test_max_concurrency_bounds_local_calls(tiny_model: str) -> None:
    async with HuggingFaceLLM(
        model=tiny_model, base_url="local", max_concurrency=2, extra={"device": "cpu"}
    ) as llm:
        await llm.health_check()
        engine = llm._local_backend().engine
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, engine.active_rows)
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        try:
            replies = await asyncio.gather(
                *(llm.generate(f"Hello {i}", max_tokens=16, temperature=0.0) for i in range(8))
            )
        finally:
            watcher.cancel()
        assert len(replies) == 8
        assert 1 <= peak <= 2


def test_api_mode_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import llmkit
        from llmkit import HuggingFaceLLM
        llm = HuggingFaceLLM(model="meta-llama/Llama-3.1-8B-Instruct")
        info = llm.get_model_info()
        local = llmkit.create_llm({"provider": "huggingface", "model": "x", "base_url": "local"})
        heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
        print("HEAVY", heavy, type(llm).__name__, info.provider, local.use_local)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY [] HuggingFaceLLM huggingface True" in out.stdout
