"""A real llama-server killed or frozen under OpenAILLM. Each test has its own server
(``own_llama_chat``): SIGKILL mid-stream, SIGSTOP before and during a stream."""

from __future__ import annotations

import signal
import time
from contextlib import aclosing

import pytest

from llmkit import LLMError, LLMTimeoutError, StreamError
from tests.conformance.llama_server import LlamaServer
from tests.conformance.test_llama_openai import llm_for

TIMEOUT = 1.5
SLACK = 1.5  # a loaded 2-core box
LONG = {"temperature": 0.0, "max_tokens": 1800}  # ~1 s of streaming: far longer than a kill


async def test_killed_mid_stream_raises_stream_error_at_once(own_llama_chat: LlamaServer) -> None:
    async with llm_for(own_llama_chat, timeout=10.0) as llm:
        received: list[str] = []
        killed_at = 0.0
        with pytest.raises(StreamError) as info:
            async with aclosing(llm.generate_stream("Go on and on.", **LONG)) as stream:
                async for delta in stream:
                    received.append(delta)
                    if len(received) == 1:
                        own_llama_chat.signal(signal.SIGKILL)
                        killed_at = time.monotonic()
        elapsed = time.monotonic() - killed_at
    assert received  # partial output reached the caller before the error
    assert not isinstance(info.value, LLMTimeoutError)  # a cut connection, not a timeout
    assert elapsed < SLACK, f"StreamError came {elapsed:.2f} s after the kill"


async def test_frozen_before_stream_times_out(own_llama_chat: LlamaServer) -> None:
    own_llama_chat.signal(signal.SIGSTOP)
    async with llm_for(own_llama_chat, timeout=TIMEOUT) as llm:
        started = time.monotonic()
        with pytest.raises(LLMTimeoutError):
            async with aclosing(llm.generate_stream("Hello?", **LONG)) as stream:
                async for _ in stream:
                    pass
        elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK, elapsed


async def _freeze_mid_stream(server: LlamaServer) -> tuple[BaseException, list[str], float]:
    """(error, deltas received, seconds from the freeze to the error)."""
    async with llm_for(server, timeout=TIMEOUT) as llm:
        received: list[str] = []
        frozen_at = 0.0
        with pytest.raises(LLMError) as info:
            async with aclosing(llm.generate_stream("Go on and on.", **LONG)) as stream:
                async for delta in stream:
                    received.append(delta)
                    if len(received) == 1:
                        server.signal(signal.SIGSTOP)
                        frozen_at = time.monotonic()
        return info.value, received, time.monotonic() - frozen_at


async def test_frozen_during_stream_fails_within_the_timeout(own_llama_chat: LlamaServer) -> None:
    error, received, elapsed = await _freeze_mid_stream(own_llama_chat)
    assert received
    assert isinstance(error, StreamError | LLMTimeoutError), repr(error)
    assert elapsed < TIMEOUT + SLACK, f"error came {elapsed:.2f} s after the freeze"


async def test_frozen_during_stream_error_is_a_timeout(own_llama_chat: LlamaServer) -> None:
    error, _, _ = await _freeze_mid_stream(own_llama_chat)
    assert isinstance(error, StreamError)
    assert isinstance(error, LLMTimeoutError)


async def test_health_check_frozen_answers_within_one_timeout(own_llama_chat: LlamaServer) -> None:
    own_llama_chat.signal(signal.SIGSTOP)
    async with llm_for(own_llama_chat, timeout=TIMEOUT, max_retries=2) as llm:
        started = time.monotonic()
        with pytest.raises(LLMTimeoutError):
            await llm.health_check()
        elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK, f"health_check took {elapsed:.2f} s"
