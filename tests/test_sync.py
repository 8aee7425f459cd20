"""``llmkit.sync``: blocking twins from plain code and from inside a running event loop,
against the OpenAI test server running in its own thread."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import llmkit
import llmkit.sync
from llmkit import ChatResponse, ConfigError, ServerError, StreamChunk
from llmkit.calls.hooks import HookEvent

ROOT = Path(__file__).resolve().parents[1]


def config(url: str) -> dict[str, object]:
    return {"provider": "openai", "model": "gpt-4o-mini", "base_url": url,
            "api_key": "sk-sync-abcdefghijkl", "max_retries": 0}


def test_blocking_calls_from_plain_code(openai_server_thread: str) -> None:
    with llmkit.sync.create_llm(config(openai_server_thread)) as llm:
        text = llm.generate("hello there")
        assert isinstance(text, str) and text
        response = llm.chat("hello there")
        assert isinstance(response, ChatResponse) and response.content == text
        deltas = llm.generate_stream("hello there")
        assert isinstance(deltas, types.GeneratorType)
        assert "".join(deltas) == text
        chunks = list(llm.chat_stream("hello there"))
        assert all(isinstance(c, StreamChunk) for c in chunks) and chunks[-1].finish_reason
        assert len(llm.embed("a")) > 0 and len(llm.embed_batch(["a", "b"])) == 2
        assert llm.batch_generate(["a", "b"]) == [llm.generate("a"), llm.generate("b")]
        models = llm.list_models()  # a provider extra, through the same wrapper
        assert isinstance(models, list) and models
        llm.health_check()
        assert llm.get_metrics().successes >= 8 and llm.get_token_usage().total_tokens > 0
    assert llm.closed


def test_leaving_a_stream_early_closes_it(openai_server_thread: str) -> None:
    with llmkit.sync.create_llm(config(openai_server_thread)) as llm:
        stream = llm.generate_stream("hello there")
        first = next(stream)
        assert first
        assert llm.get_metrics().in_flight == 1
        stream.close()
        assert llm.get_metrics().in_flight == 0
        for _ in llm.chat_stream("hello there"):
            break
        assert llm.get_metrics().in_flight == 0


async def test_blocking_calls_inside_a_running_loop(openai_server_thread: str) -> None:
    asyncio.get_running_loop()  # as in a notebook cell
    llm = llmkit.sync.create_llm(config(openai_server_thread))
    try:
        assert llm.generate("hello there")
        assert "".join(llm.generate_stream("hello there"))
    finally:
        llm.close()


def test_errors_and_hooks(openai_server_thread: str) -> None:
    llm = llmkit.sync.wrap(llmkit.OpenAILLM(config("http://127.0.0.1:9/v1")))
    seen: list[str] = []
    llm.on("error", lambda e: seen.append(e.event))
    with pytest.raises(llmkit.LLMConnectionError):
        llm.generate("hi")
    assert seen == ["error"]
    llm.close()

    inner = llmkit.sync.create_llm(config(openai_server_thread))

    def calls_back_in(event: HookEvent) -> None:
        inner.generate("from a hook")  # would wait for the loop it runs on

    failures: list[BaseException] = []
    outer = llmkit.sync.create_llm(config(openai_server_thread))
    outer.on("request", calls_back_in)
    import logging

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                failures.append(record.exc_info[1])

    handler = Catch()
    logging.getLogger("llmkit.calls.hooks").addHandler(handler)
    try:
        assert outer.generate("hi")  # the failing hook is logged, the call goes on
    finally:
        logging.getLogger("llmkit.calls.hooks").removeHandler(handler)
        outer.close()
        inner.close()
    assert len(failures) == 1 and isinstance(failures[0], ConfigError)
    assert not isinstance(failures[0], ServerError)


def test_instances_left_open_are_closed_at_exit(openai_server_thread: str) -> None:
    code = (
        "import llmkit.sync\n"
        f"llm = llmkit.sync.create_llm({config(openai_server_thread)!r})\n"
        "print(llm.generate('hi'))\n"
        "stream = llm.generate_stream('hi')\n"
        "print(next(stream))\n"  # a stream left open too
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error::ResourceWarning"}
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert out.stderr == "", out.stderr
