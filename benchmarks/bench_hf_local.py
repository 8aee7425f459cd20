"""Benchmark the local Hugging Face backend (llmkit.providers.hf_local).

(a) Embedding throughput: ``LocalBackend.embed`` vs raw ``SentenceTransformer.encode``
    on the same sentences with the same batch size (best of N). Goal: >= 0.95x.
(b) Time to first token with a cached ~1k-token prefix vs without, on a small
    random-weight Llama built locally (no hub access). TTFT is measured as the
    latency of a ``max_new_tokens=1`` greedy generation (prefill + one token),
    and also as the time to the first streamed delta. Goal: cached <= 0.3x.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_hf_local.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmkit.providers.hf_local import LocalBackend  # noqa: E402
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


async def bench_embed(n: int, batch_size: int, repeats: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    sentences = make_sentences(n)
    path = minilm_path()
    backend = LocalBackend(path, device="cpu")
    raw = await asyncio.to_thread(SentenceTransformer, path, device="cpu")
    try:
        await backend.embed(sentences[:batch_size], batch_size=batch_size)  # load + warm up
        raw.encode(sentences[:batch_size], batch_size=batch_size)
        llmkit_times: list[float] = []
        raw_times: list[float] = []
        for _ in range(repeats):  # interleaved, so drift affects both alike
            t0 = time.perf_counter()
            await backend.embed(sentences, batch_size=batch_size)
            llmkit_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            raw.encode(sentences, batch_size=batch_size, convert_to_numpy=True)
            raw_times.append(time.perf_counter() - t0)
    finally:
        await backend.aclose()
    best_llmkit, best_raw = min(llmkit_times), min(raw_times)
    return {
        "sentences": n,
        "batch_size": batch_size,
        "repeats": repeats,
        "llmkit_best_s": best_llmkit,
        "raw_best_s": best_raw,
        "llmkit_per_s": n / best_llmkit,
        "raw_per_s": n / best_raw,
        "ratio": best_raw / best_llmkit,
    }


def _prefix(target_tokens: int) -> list[dict[str, str]]:
    words = " ".join(make_sentences(400))
    # Roughly 2 characters per token with the tiny BPE tokenizer.
    content = words[: target_tokens * 2]
    return [
        {"role": "system", "content": content},
        {"role": "user", "content": "Summarise the text."},
        {"role": "assistant", "content": "It is about foxes and caches."},
    ]


async def bench_ttft(repeats: int, prefix_tokens: int, hidden: int, layers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llmkit-bench-") as tmp:
        path = build_tiny_llama(
            Path(tmp) / "model", hidden_size=hidden, num_layers=layers, num_heads=8
        )
        backend = LocalBackend(str(path), device="cpu")
        try:
            prefix = _prefix(prefix_tokens)
            full = [*prefix, {"role": "user", "content": "And what about the dog?"}]
            cache = await backend.build_cache(prefix)
            kw: dict[str, Any] = {"max_new_tokens": 1, "temperature": 0}
            # Warm-up both paths.
            plain_r = await backend.generate(full, **kw)
            cached_r = await backend.generate_with_cache(full, cache, **kw)
            assert plain_r == cached_r, (plain_r, cached_r)

            async def first_delta(use_cache: bool) -> float:
                t0 = time.perf_counter()
                agen = backend.stream(
                    full, max_new_tokens=64, temperature=0, cache=cache if use_cache else None
                )
                try:
                    async for _ in agen:
                        break
                finally:
                    await agen.aclose()
                return time.perf_counter() - t0

            plain: list[float] = []
            cached: list[float] = []
            plain_stream: list[float] = []
            cached_stream: list[float] = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                await backend.generate(full, **kw)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await backend.generate_with_cache(full, cache, **kw)
                cached.append(time.perf_counter() - t0)
                plain_stream.append(await first_delta(False))
                cached_stream.append(await first_delta(True))
        finally:
            await backend.aclose()
    p, c = statistics.median(plain), statistics.median(cached)
    ps, cs = statistics.median(plain_stream), statistics.median(cached_stream)
    return {
        "model": f"llama hidden={hidden} layers={layers} (random weights)",
        "prompt_tokens": plain_r.prompt_tokens,
        "prefix_tokens": cache.prefix_tokens,
        "repeats": repeats,
        "uncached_ttft_s": p,
        "cached_ttft_s": c,
        "ratio": c / p,
        "uncached_stream_first_delta_s": ps,
        "cached_stream_first_delta_s": cs,
        "stream_ratio": cs / ps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write results as JSON here (a bare file name goes to benchmarks/results/)",
    )
    args = parser.parse_args()

    import torch

    started = time.perf_counter()
    embed = asyncio.run(bench_embed(args.sentences, args.batch_size, args.repeats))
    ttft = asyncio.run(bench_ttft(args.repeats, args.prefix_tokens, args.hidden, args.layers))
    elapsed = time.perf_counter() - started

    print("## llmkit local HF backend\n")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, total {elapsed:.1f}s\n"
    )
    print("| benchmark | llmkit | baseline | ratio | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| embed {embed['sentences']} sentences (MiniLM, bs={embed['batch_size']}, best of "
        f"{embed['repeats']}) | {embed['llmkit_per_s']:.1f} sent/s | "
        f"{embed['raw_per_s']:.1f} sent/s (raw encode) | {embed['ratio']:.3f}x throughput | >= 0.95x |"
    )
    print(
        f"| TTFT, {ttft['prompt_tokens']}-token prompt, {ttft['prefix_tokens']}-token cached prefix "
        f"(median of {ttft['repeats']}) | {ttft['cached_ttft_s'] * 1000:.1f} ms cached | "
        f"{ttft['uncached_ttft_s'] * 1000:.1f} ms uncached | {ttft['ratio']:.3f}x | <= 0.3x |"
    )
    print(
        f"| first streamed delta, same prompt | {ttft['cached_stream_first_delta_s'] * 1000:.1f} ms "
        f"cached | {ttft['uncached_stream_first_delta_s'] * 1000:.1f} ms uncached | "
        f"{ttft['stream_ratio']:.3f}x | <= 0.3x |"
    )

    if args.json is not None:
        if args.json.parent == Path():
            args.json = ROOT / "benchmarks" / "results" / args.json
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "elapsed_s": elapsed,
            "embed": embed,
            "ttft": ttft,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
