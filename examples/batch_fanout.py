"""Fan many prompts out over one client: bounded concurrency, order kept, per-item errors.

Run:  python examples/batch_fanout.py [--n 200] [--concurrency 32]

Provider choice as in ``streaming.py``: ``OPENAI_BASE_URL`` -> openai, ``OLLAMA_HOST`` ->
ollama, otherwise the built-in ``mock`` provider (with a little simulated latency and an
injected failure, so you can see the per-item error handling).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from llmkit import LLMConfig, RateLimitError, create_llm


def pick_config(args: argparse.Namespace) -> LLMConfig:
    if args.base_url or os.environ.get("OPENAI_BASE_URL"):
        return LLMConfig.from_env(
            "openai", model=args.model or "gpt-4o-mini", base_url=args.base_url, max_tokens=50
        )
    if os.environ.get("OLLAMA_HOST") or os.environ.get("OLLAMA_BASE_URL"):
        return LLMConfig.from_env("ollama", model=args.model, max_tokens=50)
    return LLMConfig(provider="mock", model="mock", extra={"latency": 0.01})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    args = parser.parse_args()

    config = pick_config(args)
    prompts = [f"Give me a fun fact about the number {i}." for i in range(args.n)]
    async with create_llm(config) as llm:
        if config.provider == "mock":
            llm.inject_failure(RateLimitError("simulated rate limit", status=429))  # type: ignore[attr-defined]

        # 1. a list back, in input order; failures in place instead of raising
        started = time.perf_counter()
        replies = await llm.batch_generate(
            prompts, concurrency=args.concurrency, return_exceptions=True, progress=True
        )
        elapsed = time.perf_counter() - started
        failed = [i for i, r in enumerate(replies) if isinstance(r, Exception)]
        print(f"{config.provider}: {len(replies)} prompts in {elapsed:.2f}s, {len(failed)} failed")
        for i in failed:
            print(f"  prompt {i}: {type(replies[i]).__name__}: {replies[i]}")
        print(f"  first reply: {replies[next(i for i, r in enumerate(replies) if i not in failed)]!r}")

        # 2. as they complete, from a generator (never more than `concurrency` in flight)
        lazy = (f"short prompt {i}" for i in range(50))
        seen = 0
        async for index, reply in llm.batch_generate_iter(lazy, concurrency=8):
            seen += 1
            if seen == 1:
                print(f"first to complete: #{index}: {reply!r}")
        print(f"streamed {seen} results")

        m = llm.get_metrics()
        print(f"metrics: requests={m.requests} failures={m.failures} p50={1000 * m.latency_p50:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
