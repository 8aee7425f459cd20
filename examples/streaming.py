"""Stream a reply token by token.

Run:  python examples/streaming.py ["your prompt"]

The provider is picked from the environment, so the example runs anywhere:

* ``OPENAI_BASE_URL`` set (any OpenAI-compatible server; ``OPENAI_API_KEY`` if it needs
  one) -> ``openai`` with ``--model`` (default ``gpt-4o-mini``);
* else ``OLLAMA_HOST`` set -> ``ollama`` (default model ``llama3.2``);
* else the built-in ``mock`` provider (no key, no network).

``--provider`` / ``--base-url`` / ``--model`` override the choice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from llmkit import LLMConfig, LLMError, create_llm


def pick_config(args: argparse.Namespace) -> LLMConfig:
    provider = args.provider
    if provider is None:
        if args.base_url or os.environ.get("OPENAI_BASE_URL"):
            provider = "openai"
        elif os.environ.get("OLLAMA_HOST") or os.environ.get("OLLAMA_BASE_URL"):
            provider = "ollama"
        else:
            provider = "mock"
    model = args.model or {"openai": "gpt-4o-mini"}.get(provider)
    return LLMConfig.from_env(provider, model=model, base_url=args.base_url, max_tokens=200)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="Write one sentence about rivers.")
    parser.add_argument("--provider")
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    args = parser.parse_args()

    config = pick_config(args)
    print(f"provider={config.provider} model={config.model}")
    async with create_llm(config) as llm:
        started = time.perf_counter()
        first: float | None = None
        pieces = 0
        try:
            async for delta in llm.generate_stream(args.prompt):
                if first is None:
                    first = time.perf_counter() - started
                pieces += 1
                print(delta, end="", flush=True)
        except LLMError as exc:
            print(f"\nerror: {exc.type}: {exc.message}")
            return 1
        print()
        usage = llm.get_token_usage()
        print(
            f"{pieces} chunks, first after {1000 * (first or 0):.1f} ms, "
            f"tokens: prompt={usage.prompt_tokens} completion={usage.completion_tokens}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
