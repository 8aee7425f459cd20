"""Plug your own backend in: a ``BaseLLM`` subclass that implements only ``generate``.

Run:  python examples/custom_provider.py

Everything else (chat, streaming, batches, metrics, ``async with``) falls back on that one
method; embeddings raise ``NotSupportedError``. Registering the class makes it available to
``create_llm`` (and to the ``llmkit`` command line in the same process) by name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmkit import (
    BaseLLM,
    LLMConfig,
    NotSupportedError,
    create_llm,
    list_providers,
    normalize_messages,
    register_provider,
)


class ReverseLLM(BaseLLM):
    """Replies with the last user message reversed; ``extra["shout"]`` upper-cases it."""

    provider_name = "reverse"

    async def generate(self, messages: Any, **options: Any) -> str:
        opts, _ = self._options(options)  # config values + per-call options, checked
        last = normalize_messages(messages)[-1].text()
        reply = last[::-1]
        if self.config.extra.get("shout"):
            reply = reply.upper()
        return " ".join(reply.split()[: opts.get("max_tokens")])  # "tokens" = words here


async def main() -> None:
    register_provider("reverse", ReverseLLM)
    print("providers:", ", ".join(list_providers()))

    llm = create_llm(LLMConfig(provider="reverse", model="rev-1", extra={"shout": True}))
    async with llm:
        print("generate:", await llm.generate("hello world"))
        print("chat:", (await llm.chat([{"role": "user", "content": "abc"}])).content)
        print("stream:", "".join([d async for d in llm.generate_stream("streaming works")]))
        print("batch:", await llm.batch_generate(["one", "two", "three"]))
        print("capabilities:", llm.get_model_info().capabilities)
        try:
            await llm.embed("no embeddings here")
        except NotSupportedError as exc:
            print("embed:", exc.type)
        print("max_tokens=2:", await llm.generate("keep only the last two", max_tokens=2))


if __name__ == "__main__":
    asyncio.run(main())
