"""``FallbackLLM`` (``provider="fallback"``): a chain of providers tried in order.

A call goes to the first member. When that member fails, after its own retries, with a
:class:`RateLimitError`, :class:`LLMConnectionError`, :class:`LLMTimeoutError` or
:class:`ServerError`, the call moves on to the next member; any other error is raised at
once. A stream moves on only before its first chunk: after that, the member's error is the
stream's. When every member fails, the last member's error is raised, with every failure
(in order) in its ``attempts`` list.

Closing the fallback ends its calls and streams in flight at once, whoever owns the member
they run on (a call: ``ConfigError("instance is closed")``, a stream: :class:`StreamError`),
and no call moves on to a next member once the fallback is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from llmkit.base import BaseLLM
from llmkit.calls.metrics import Metrics
from llmkit.core.config import LLMConfig
from llmkit.core.errors import (
    ConfigError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
    instance_closed,
)
from llmkit.core.types import ChatResponse, MessagesInput, ModelInfo, StreamChunk, Usage
from llmkit.http.inflight import InFlight

__all__ = ["FALLBACK_ERRORS", "FallbackLLM"]

FALLBACK_ERRORS: tuple[type[LLMError], ...] = (
    RateLimitError,
    LLMConnectionError,
    LLMTimeoutError,
    ServerError,
)


def _moves_on(error: LLMError) -> bool:
    return isinstance(error, FALLBACK_ERRORS)


class FallbackLLM(BaseLLM):
    """Members come from ``chain``: configs (``LLMConfig`` or dicts) or provider instances
    (``config.extra["chain"]`` when built by :func:`llmkit.create_llm`). Instances the
    chain builds are closed with the fallback; instances passed in are the caller's."""

    provider_name: ClassVar[str] = "fallback"

    def __init__(
        self,
        config: LLMConfig | dict[str, Any] | str | None = None,
        *,
        chain: Sequence[LLMConfig | Mapping[str, Any] | BaseLLM] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(config, dict) and "chain" in config:
            config = dict(config)
            chain = config.pop("chain")
        super().__init__(config, **kwargs)
        items = chain if chain is not None else self.config.extra.get("chain")
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence) or not items:
            raise ConfigError("fallback needs a non-empty 'chain' list of provider configs")
        from llmkit.registry import create_llm

        self.members: list[BaseLLM] = []
        self._owned: list[BaseLLM] = []  # built here (nothing is opened before a call)
        self._inflight = InFlight()
        for i, item in enumerate(items):
            if isinstance(item, BaseLLM):
                self.members.append(item)
            elif isinstance(item, (LLMConfig, Mapping)):
                member = create_llm(item)
                self.members.append(member)
                self._owned.append(member)
            else:
                raise ConfigError(
                    f"fallback chain item {i} must be a config or a provider, not {type(item).__name__}"
                )

    def _reply_scope(self) -> list[BaseLLM]:
        """The members, for the reply cache's key (a reply comes from one of them)."""
        return list(self.members)

    @property
    def model(self) -> str:
        return self.config.model or self.members[0].model

    def __repr__(self) -> str:
        chain = ", ".join(f"{m.provider}:{m.model}" for m in self.members)
        return f"FallbackLLM(chain=[{chain}])"

    # ------------------------------------------------------------------ the rule

    def _call_closed(self) -> LLMError:
        return instance_closed(self.provider)

    def _stream_closed(self) -> LLMError:
        return instance_closed(self.provider, streaming=True)

    async def _first(self, call: Callable[[BaseLLM], Awaitable[Any]]) -> Any:
        failures: list[LLMError] = []
        for member in self.members:
            try:
                return await self._inflight.interruptible(call(member), self._call_closed)
            except LLMError as exc:
                failures.append(exc)
                if self._inflight.closed:  # closed under the call: no next member
                    raise self._call_closed() from None
                if not _moves_on(exc) or member is self.members[-1]:
                    exc.attempts = failures  # type: ignore[attr-defined]
                    raise
        raise AssertionError("unreachable: the last member's result or error is returned")

    async def _first_stream(
        self, open_stream: Callable[[BaseLLM], AsyncGenerator[Any, None]]
    ) -> AsyncGenerator[Any, None]:
        failures: list[LLMError] = []
        interruptible = self._inflight.interruptible
        for member in self.members:
            async with aclosing(open_stream(member)) as stream:
                try:
                    first = await interruptible(stream.__anext__(), self._stream_closed)
                except StopAsyncIteration:
                    return
                except LLMError as exc:
                    failures.append(exc)
                    if self._inflight.closed:
                        raise self._stream_closed() from None
                    if not _moves_on(exc) or member is self.members[-1]:
                        exc.attempts = failures  # type: ignore[attr-defined]
                        raise
                    continue
                yield first
                inflight = self._inflight  # the close interrupts a wait for the next item
                entry = inflight.wait_entry()
                while True:
                    inflight.waiting(entry)
                    try:
                        item = await stream.__anext__()
                    except StopAsyncIteration:
                        return
                    except asyncio.CancelledError:
                        if inflight.interrupted(entry):
                            raise self._stream_closed() from None
                        raise
                    finally:
                        inflight.done_waiting(entry)
                    yield item

    # ------------------------------------------------------------------ calls

    async def generate(self, messages: MessagesInput, **options: Any) -> str:
        return await self._first(lambda m: m.generate(messages, **options))  # type: ignore[no-any-return]

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        return await self._first(  # type: ignore[no-any-return]
            lambda m: m.chat(
                messages, tools=tools, tool_choice=tool_choice,
                response_format=response_format, **options,
            )
        )

    async def generate_stream(self, messages: MessagesInput, **options: Any) -> AsyncGenerator[str, None]:
        async with aclosing(self._first_stream(lambda m: m.generate_stream(messages, **options))) as s:
            async for delta in s:
                yield delta

    async def chat_stream(self, messages: MessagesInput, **options: Any) -> AsyncGenerator[StreamChunk, None]:
        async with aclosing(self._first_stream(lambda m: m.chat_stream(messages, **options))) as s:
            async for chunk in s:
                yield chunk

    async def embed(self, text: str) -> list[float]:
        return await self._first(lambda m: m.embed(text))  # type: ignore[no-any-return]

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._first(lambda m: m.embed_batch(texts))  # type: ignore[no-any-return]

    async def health_check(self) -> None:
        """Healthy when any member is; otherwise the last member's error (``attempts``)."""
        await self._first(lambda m: m.health_check())

    # ------------------------------------------------------------------ info, metrics

    def supports_batching(self) -> bool:
        return self.members[0].supports_batching()

    def get_model_info(self) -> ModelInfo:
        info = self.members[0].get_model_info()
        return info.model_copy(
            update={
                "provider": self.provider,
                "details": {**info.details, "chain": [f"{m.provider}:{m.model}" for m in self.members]},
            }
        )

    def get_token_usage(self) -> Usage:
        """The members' usage, summed."""
        return sum((m.get_token_usage() for m in self.members), Usage())

    def get_metrics(self) -> Metrics:
        """Calls as the caller saw them (requests, successes, failures by type, latency,
        in flight, cache hits), with the members' retries and tokens summed; see
        :meth:`member_metrics` for each member's own."""
        own = self.call_state.metrics.snapshot()
        members = self.member_metrics()
        own.retries = sum(m.retries for m in members)
        own.prompt_tokens = sum(m.prompt_tokens for m in members)
        own.completion_tokens = sum(m.completion_tokens for m in members)
        own.total_tokens = own.prompt_tokens + own.completion_tokens
        return own

    def member_metrics(self) -> list[Metrics]:
        """Each member's metrics, in chain order."""
        return [m.get_metrics() for m in self.members]

    async def aclose(self) -> None:
        self._inflight.close()  # calls and streams in flight end now, on members of any owner
        for member in self._owned:
            await member.aclose()
        await super().aclose()
