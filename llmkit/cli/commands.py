"""The single-request commands: providers, health, models, generate, stream, embed, pull."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from llmkit.cli._common import EXIT_OK, MOCK_PROVIDER, messages, progress_bar, read_prompt, write

if TYPE_CHECKING:
    from llmkit.base import BaseLLM


def _model_id(item: Any) -> str:
    if isinstance(item, dict):
        for key in ("id", "name", "model", "modelId"):
            if item.get(key):
                return str(item[key])
        return json.dumps(item, default=str)
    return str(item)


async def cmd_providers(args: argparse.Namespace) -> int:
    from llmkit.registry import list_providers

    default = (os.environ.get("LLMKIT_PROVIDER") or MOCK_PROVIDER).lower()
    for name in list_providers():
        write(sys.stdout, f"{name}{'  (default)' if name == default else ''}\n")
    return EXIT_OK


async def cmd_health(args: argparse.Namespace, llm: BaseLLM) -> int:
    await llm.health_check()
    target = llm.config.base_url or "built-in"
    write(sys.stdout, f"ok: {llm.provider} model={llm.model} ({target})\n")
    return EXIT_OK


async def cmd_models(args: argparse.Namespace, llm: BaseLLM) -> int:
    from llmkit.core.errors import NotSupportedError

    list_models = getattr(llm, "list_models", None)
    search_models = getattr(llm, "search_models", None)
    if callable(search_models):
        items = await search_models(args.query, limit=args.limit)
    elif callable(list_models):
        items = await list_models()
    else:
        raise NotSupportedError(
            f"provider {llm.provider!r} cannot list models", provider=llm.provider
        )
    for item in items:
        line = json.dumps(item, default=str) if args.json else _model_id(item)
        write(sys.stdout, line + "\n")
    return EXIT_OK


async def cmd_generate(args: argparse.Namespace, llm: BaseLLM) -> int:
    prompt = read_prompt(args.prompt)
    text = await llm.generate(messages(prompt, args.system))
    write(sys.stdout, text + "\n")
    return EXIT_OK


async def cmd_stream(args: argparse.Namespace, llm: BaseLLM) -> int:
    prompt = read_prompt(args.prompt)
    stream = llm.generate_stream(messages(prompt, args.system))
    try:
        async for delta in stream:
            write(sys.stdout, delta)
    finally:
        await stream.aclose()
        write(sys.stdout, "\n")
    return EXIT_OK


async def cmd_embed(args: argparse.Namespace, llm: BaseLLM) -> int:
    texts: list[str] = list(args.texts)
    if not texts:
        texts = [read_prompt("-")]
    if len(texts) == 1:
        out: Any = await llm.embed(texts[0])
    else:
        out = await llm.embed_batch(texts)
    write(sys.stdout, json.dumps(out) + "\n")
    return EXIT_OK


async def cmd_pull(args: argparse.Namespace, llm: BaseLLM) -> int:
    from llmkit.core.errors import NotSupportedError

    pull = getattr(llm, "pull_model", None)
    if not callable(pull):
        raise NotSupportedError(
            f"provider {llm.provider!r} cannot pull models (use --provider ollama)",
            provider=llm.provider,
        )
    bar: Any = None
    bar_key: Any = None
    last_status = ""
    progress: AsyncIterator[dict[str, Any]] = pull(args.name)
    show_bars = not args.no_progress and sys.stderr.isatty()
    try:
        async for event in progress:
            status = str(event.get("status", ""))
            total, completed = event.get("total"), event.get("completed")
            if show_bars and isinstance(total, int) and total > 0:
                key = event.get("digest") or status
                if bar is None or key != bar_key:
                    if bar is not None:
                        bar.close()
                    bar = progress_bar(total=total, desc=status[:40], unit="B", unit_scale=True)
                    bar_key = key
                if bar is not None and isinstance(completed, int):
                    bar.update(max(0, completed - bar.n))
            elif status != last_status:
                if bar is not None:
                    bar.close()
                    bar = None
                write(sys.stderr, status + "\n")
            last_status = status
    finally:
        if bar is not None:
            bar.close()
        aclose = getattr(progress, "aclose", None)
        if aclose is not None:
            await aclose()
    write(sys.stdout, f"pulled {args.name}\n")
    return EXIT_OK
