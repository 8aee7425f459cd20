"""The provider base class: option handling, fallbacks, metrics, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, ClassVar

from llmkit.calls.fanout import fan_out, fan_out_iter
from llmkit.calls.guard import guard_methods
from llmkit.calls.hooks import Callback
from llmkit.calls.metrics import Metrics
from llmkit.calls.protocol import current_call
from llmkit.calls.seam import install
from llmkit.calls.state import CallState
from llmkit.core.config import LLMConfig, provider_defaults
from llmkit.core.errors import InvalidRequestError, LLMTimeoutError, NotSupportedError, redact
from llmkit.core.options import CallOptions, ClientOptions, Unpack, resolve_options
from llmkit.core.structured import parse_structured, response_format_payload
from llmkit.core.types import (
    Capabilities,
    ChatResponse,
    MessagesInput,
    ModelInfo,
    StreamChunk,
    Usage,
)
from llmkit.http.ratelimit import RateLimiter, RateLimitState
from llmkit.http.retry import RetryPolicy

__all__ = ["BaseLLM", "PromptCache", "parse_structured", "response_format_payload"]


class PromptCache:
    """A provider-specific handle on a processed prompt prefix (see ``build_cache``)."""

    def __init__(self, provider: str, prefix: list[Any], handle: Any) -> None:
        self.provider = provider
        self.prefix = prefix
        self.handle = handle

    def __repr__(self) -> str:
        return f"PromptCache(provider={self.provider!r}, prefix_messages={len(self.prefix)})"


class BaseLLM:
    """Base of every provider. A subclass implementing only ``generate`` (or only ``chat``)
    works: the other methods fall back on it or raise :class:`NotSupportedError`.

    Every call method a subclass defines is guarded (:mod:`llmkit.calls.guard`): refused once the
    instance is closed, and held to ``max_concurrency`` across loops and threads."""

    provider_name: ClassVar[str] = "custom"
    provider_options: ClassVar[frozenset[str]] = frozenset()
    """Provider-specific option names passed through as given (see ``_options``)."""
    unsupported_options: ClassVar[Mapping[str, str]] = {}
    """Portable option names this provider cannot honour, and why."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.generate is BaseLLM.generate and cls.chat is BaseLLM.chat:
            # Abstract intermediate classes may define neither; instantiation checks again.
            cls._incomplete = True
        else:
            cls._incomplete = False
        guard_methods(cls)  # closed check, concurrency slot, metrics: inside the layers
        install(cls)

    _incomplete: ClassVar[bool] = True
    call_state: CallState
    """What the call layer keeps for this instance (:mod:`llmkit.calls.protocol`)."""

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        if type(self)._incomplete:
            raise TypeError(
                f"{type(self).__name__} must implement generate() or chat() to be a provider"
            )
        self.config = self._make_config(config, kwargs)
        self.call_state = CallState(self.config.max_concurrency)
        self._retry = RetryPolicy(
            max_retries=self.config.max_retries,
            initial_delay=float(self.config.extra.get("retry_initial_delay", 0.5)),
            max_delay=float(self.config.extra.get("retry_max_delay", 8.0)),
            max_retry_after=float(self.config.extra.get("retry_max_after", 60.0)),
        )
        self._rate_limiter = RateLimiter(
            self.config.requests_per_minute,
            self.config.tokens_per_minute,
            max_pause=self._retry.max_retry_after,
            provider=self.config.provider,
        )
        if self.config.cache:
            from llmkit.calls.reply_cache import ReplyCache  # sqlite3 only when a cache is set

            self.call_state.reply_cache = ReplyCache(self.config.cache)
            self.call_state.update_layers()

    @classmethod
    def _make_config(cls, config: Any, kwargs: dict[str, Any]) -> LLMConfig:
        if isinstance(config, LLMConfig):
            if kwargs:
                return config.model_copy(update=kwargs)
            return config
        if isinstance(config, dict):
            data = {**config, **kwargs}
        elif isinstance(config, str):
            data = {"model": config, **kwargs}
        elif config is None:
            data = dict(kwargs)
        else:
            raise TypeError(f"config must be an LLMConfig, dict or model name, not {config!r}")
        data.setdefault("provider", cls.provider_name)
        if data["provider"] in ("openai", "ollama", "huggingface", "mock"):
            return LLMConfig.for_provider(data)
        merged = {k: v for k, v in provider_defaults(data["provider"]).items()}
        merged.update(data)
        return LLMConfig(**merged)

    # ------------------------------------------------------------------ identity

    @property
    def provider(self) -> str:
        return self.config.provider

    @property
    def model(self) -> str:
        return self.config.model

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.config.provider!r}, "
            f"model={self.config.model!r}, base_url={redact(self.config.base_url or '') or None!r})"
        )

    # ------------------------------------------------------------------ options

    def _options(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], ClientOptions]:
        """The options to send (config sampling fields overlaid with the per-call ones,
        checked) and the client options of this call; see :func:`resolve_options`."""
        return resolve_options(
            self.config,
            options,
            provider=self.provider,
            provider_options=self.provider_options,
            unsupported=self.unsupported_options,
        )

    def _record_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.call_state.metrics.add_usage(
                usage.prompt_tokens, usage.completion_tokens,
                usage.cached_tokens, usage.reasoning_tokens,
            )
            call = current_call()
            if call is not None:
                call.add_usage(usage)

    # ------------------------------------------------------------------ hooks

    def on(self, event: str, callback: Callback) -> Callback:
        """Call ``callback(event)`` on ``request``, ``response``, ``retry`` or ``error``
        (see :mod:`llmkit.calls.hooks`); returns the callback, so it also works as a decorator."""
        self.call_state.hooks.on(event, callback)
        self.call_state.update_layers()
        return callback

    def off(self, event: str, callback: Callback) -> None:
        """Remove a callback registered with :meth:`on`."""
        self.call_state.hooks.off(event, callback)
        self.call_state.update_layers()

    @property
    def attempts_through_transport(self) -> bool:
        """True where each attempt goes through the HTTP transport, which takes a concurrency
        slot, counts the attempt in the metrics and reports it to the hooks itself (see
        :class:`~llmkit.calls.protocol.CallTarget`); False: the call layer does it per call."""
        return False

    # ------------------------------------------------------------------ generation

    async def generate(self, messages: MessagesInput, **options: Unpack[CallOptions]) -> str:
        """The reply text."""
        response = await self.chat(messages, **options)
        return response.content

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Unpack[CallOptions],
    ) -> ChatResponse:
        """The full reply. The base version wraps ``generate`` (no tools)."""
        if tools:
            raise NotSupportedError(
                f"{type(self).__name__} does not support tools", provider=self.provider
            )
        text = await self.generate(messages, **options)
        response = ChatResponse(content=text, finish_reason="stop", model=self.model)
        if response_format is not None:
            response.parsed = parse_structured(text, response_format, self.provider, response)
        return response

    async def generate_stream(
        self, messages: MessagesInput, **options: Unpack[CallOptions]
    ) -> AsyncGenerator[str, None]:
        """Reply text deltas as they arrive."""
        if type(self).chat_stream is not BaseLLM.chat_stream:
            # closed here when the consumer leaves, not later by the garbage collector
            async with aclosing(self.chat_stream(messages, **options)) as chunks:
                async for chunk in chunks:
                    if chunk.delta:
                        yield chunk.delta
            return
        text = await self.generate(messages, **options)
        if text:
            yield text

    async def chat_stream(
        self, messages: MessagesInput, **options: Unpack[CallOptions]
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream chunks: text deltas, tool-call deltas, finish reason and final usage."""
        async with aclosing(self.generate_stream(messages, **options)) as deltas:
            async for delta in deltas:
                yield StreamChunk(delta=delta)
        yield StreamChunk(finish_reason="stop")

    # ------------------------------------------------------------------ embeddings

    async def embed(self, text: str) -> list[float]:
        if type(self).embed_batch is not BaseLLM.embed_batch:
            vectors = await self.embed_batch([text])
            return vectors[0]
        raise NotSupportedError(
            f"{type(self).__name__} does not support embeddings", provider=self.provider
        )

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        if type(self).embed is BaseLLM.embed:
            raise NotSupportedError(
                f"{type(self).__name__} does not support embeddings", provider=self.provider
            )
        texts = _check_texts(texts)
        results = await fan_out(self.embed, texts, concurrency=self.config.max_concurrency)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ batches

    def supports_batching(self) -> bool:
        return False

    async def batch_generate(
        self,
        prompts: Iterable[MessagesInput],
        *,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: bool | Any = False,
        **options: Unpack[CallOptions],
    ) -> list[Any]:
        """One reply per prompt, in input order, at most ``concurrency`` at once."""
        _check_prompts(prompts)

        async def one(prompt: MessagesInput) -> str:
            return await self.generate(prompt, **options)

        return await fan_out(
            one,
            prompts,
            concurrency=concurrency or self.config.max_concurrency,
            return_exceptions=return_exceptions,
            progress=progress,
            desc=f"{self.provider} batch",
        )

    async def batch_generate_iter(
        self,
        prompts: Iterable[MessagesInput],
        *,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: bool | Any = False,
        **options: Unpack[CallOptions],
    ) -> AsyncGenerator[tuple[int, Any], None]:
        """``(index, reply)`` pairs as replies complete (see ``batch_generate``)."""
        _check_prompts(prompts)

        async def one(prompt: MessagesInput) -> str:
            return await self.generate(prompt, **options)

        pairs = fan_out_iter(
            one,
            prompts,
            concurrency=concurrency or self.config.max_concurrency,
            return_exceptions=return_exceptions,
            progress=progress,
            desc=f"{self.provider} batch",
        )
        async with aclosing(pairs):  # leaving early stops the workers at once
            async for pair in pairs:
                yield pair

    # ------------------------------------------------------------------ caches

    async def build_cache(self, prefix_messages: MessagesInput) -> PromptCache:
        raise NotSupportedError(
            f"{type(self).__name__} has no prompt cache", provider=self.provider
        )

    async def generate_with_cache(
        self, messages: MessagesInput, cache: PromptCache, **options: Unpack[CallOptions]
    ) -> str:
        raise NotSupportedError(
            f"{type(self).__name__} has no prompt cache", provider=self.provider
        )

    # ------------------------------------------------------------------ health, info

    async def health_check(self) -> None:
        """Raises an :class:`LLMError` when the provider is not usable: one short request
        (no retries, a timeout of at most 10 seconds)."""
        timeout = min(self.config.timeout, 10.0)
        try:
            await asyncio.wait_for(
                self.generate("ping", max_tokens=1, max_retries=0, timeout=timeout), timeout
            )
        except asyncio.TimeoutError:
            raise LLMTimeoutError(
                f"health check timed out after {timeout:g}s", provider=self.provider
            ) from None

    def get_model_info(self) -> ModelInfo:
        cls = type(self)
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self.config.base_url,
            capabilities=Capabilities(
                streaming=True,
                embeddings=cls.embed is not BaseLLM.embed
                or cls.embed_batch is not BaseLLM.embed_batch,
                tools=cls.chat is not BaseLLM.chat,
                batching=self.supports_batching(),
                kv_cache=cls.build_cache is not BaseLLM.build_cache,
            ),
        )

    def get_token_usage(self) -> Usage:
        return self.call_state.metrics.usage()

    def get_metrics(self) -> Metrics:
        return self.call_state.metrics.snapshot()

    def rate_limit_state(self) -> RateLimitState | None:
        """What the instance believes of its server's limits and why (rate, burst,
        in-flight window, pause, source); ``None`` where its limiter is elsewhere."""
        return self._rate_limiter.snapshot()

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self.call_state.closed

    async def aclose(self) -> None:
        """Release connections and workers. Safe to call more than once."""
        self.call_state.close()

    async def close(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> BaseLLM:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


install(BaseLLM)


def _check_prompts(prompts: Any) -> None:
    if isinstance(prompts, (str, bytes)):
        raise InvalidRequestError(
            "batch_generate takes a list of prompts; use generate() for one prompt"
        )


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidRequestError("embed_batch takes a list of strings; use embed() for one")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidRequestError(f"text {i} is {type(t).__name__}, not str")
    return out
