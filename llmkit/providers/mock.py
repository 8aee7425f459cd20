"""A deterministic provider with no network, for users' own tests."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import struct
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, ClassVar

from llmkit.base import BaseLLM, parse_structured
from llmkit.config import LLMConfig
from llmkit.errors import LLMError
from llmkit.types import (
    ChatResponse,
    MessagesInput,
    StreamChunk,
    Usage,
    normalize_messages,
)

__all__ = ["MockLLM"]

Reply = str | Callable[[list[Any]], str]


class MockLLM(BaseLLM):
    """Replies come from ``responses`` (cycled), a function of the messages, or echo.

    Options (keyword arguments or ``config.extra``): ``responses``, ``chunk_size`` (characters
    per streamed delta), ``latency`` (seconds per call), ``failures`` (a list of exceptions
    raised by the next calls, in order; ``None`` entries succeed), ``embedding_dim``.
    """

    provider_name: ClassVar[str] = "mock"

    def __init__(
        self,
        config: LLMConfig | dict[str, Any] | str | None = None,
        *,
        responses: Iterable[Reply] | Reply | None = None,
        chunk_size: int | None = None,
        latency: float | None = None,
        failures: Iterable[BaseException | None] | None = None,
        embedding_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        extra = self.config.extra
        responses = responses if responses is not None else extra.get("responses")
        if responses is None:
            self._replies: Iterable[Reply] | None = None
        elif isinstance(responses, str) or callable(responses):
            self._replies = itertools.repeat(responses)
        else:
            self._replies = itertools.cycle(list(responses))
        self.chunk_size = int(chunk_size or extra.get("chunk_size", 4))
        self.latency = float(latency if latency is not None else extra.get("latency", 0.0))
        self._failures = list(failures if failures is not None else extra.get("failures", []))
        self.embedding_dim = int(embedding_dim or extra.get("embedding_dim", 16))
        self.calls: list[list[Any]] = []

    def inject_failure(self, error: BaseException) -> None:
        """Make the next call raise ``error``."""
        self._failures.append(error)

    async def _step(self) -> None:
        self._metrics.start()
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._failures:
            failure = self._failures.pop(0)
            if failure is not None:
                kind = failure.type if isinstance(failure, LLMError) else "internal"
                self._metrics.finish(self.latency, kind)
                raise failure

    def _reply(self, messages: list[Any]) -> str:
        if self._replies is None:
            last = next((m for m in reversed(messages) if m.role == "user"), messages[-1])
            return f"mock response to: {last.text()}"
        reply = next(iter(self._replies))
        return reply(messages) if callable(reply) else reply

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        msgs = normalize_messages(messages)
        opts, _ = self._options(options)
        await self._step()
        self.calls.append(msgs)
        text = self._reply(msgs)
        words = text.split()
        limit = opts.get("max_tokens")
        if limit is not None and len(words) > limit:
            text = " ".join(words[:limit])
            finish = "length"
        else:
            finish = "stop"
        usage = Usage.of(sum(len(m.text().split()) for m in msgs), len(text.split()))
        self._record_usage(usage)
        self._metrics.finish(self.latency)
        response = ChatResponse(
            content=text, finish_reason=finish, usage=usage, model=self.model, raw={}
        )
        if response_format is not None:
            response.parsed = parse_structured(text, response_format, self.provider)
        return response

    async def chat_stream(self, messages: MessagesInput, **options: Any) -> AsyncGenerator[StreamChunk, None]:
        response = await self.chat(messages, **options)
        text = response.content
        for i in range(0, len(text), self.chunk_size):
            await asyncio.sleep(0)
            yield StreamChunk(delta=text[i : i + self.chunk_size])
        yield StreamChunk(finish_reason=response.finish_reason, usage=response.usage)

    async def embed(self, text: str) -> list[float]:
        await self._step()
        self._metrics.finish(self.latency)
        return _hash_vector(text, self.embedding_dim)

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        from llmkit.base import _check_texts

        items = _check_texts(texts)
        await self._step()
        self._metrics.finish(self.latency)
        return [_hash_vector(t, self.embedding_dim) for t in items]

    async def health_check(self) -> None:
        if self._failures and self._failures[0] is not None:
            raise self._failures.pop(0)


def _hash_vector(text: str, dim: int) -> list[float]:
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(v / 2**31 for v in struct.unpack("<8i", digest))
        counter += 1
    vec = out[:dim]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]
