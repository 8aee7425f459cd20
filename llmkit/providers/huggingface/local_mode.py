"""Local mode of :class:`~llmkit.providers.huggingface.client.HuggingFaceLLM`
(``base_url="local"`` or ``set_use_local(True)``) as an object of its own,
:class:`LocalMode`: the hand-off to :class:`llmkit.providers.huggingface.local.LocalBackend`
(transformers and sentence-transformers, imported only when local mode is first used), and
prompt caches. Concurrent local calls are batched together by the backend (a batch of
prompts is the base fan-out of ``generate()`` calls); ``max_concurrency`` bounds them like
HTTP requests (the call layer takes the slot per call). Options from ``extra``: ``device``,
``dtype``, ``trust_remote_code`` (default False), ``embedding_model``,
``normalize_embeddings``, ``max_batch_size`` (rows decoding together), ``embed_batch_size``
(texts per encoder mini-batch)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.base import PromptCache
from llmkit.core.config import LLMConfig
from llmkit.core.errors import (
    ConfigError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
    NotSupportedError,
)
from llmkit.core.options import ClientOptions
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, MessagesInput, StreamChunk, Usage, normalize_messages

if TYPE_CHECKING:
    from llmkit.providers.huggingface.local import LocalBackend

__all__ = ["LocalMode"]

_LOCAL_OPTIONS = ("device", "dtype", "trust_remote_code", "embedding_model",
                  "normalize_embeddings", "max_batch_size", "embed_batch_size")


class LocalOwner(Protocol):
    """What local mode needs of the instance it serves."""

    @property
    def config(self) -> LLMConfig: ...

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    def _options(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], ClientOptions]: ...

    def _record_usage(self, usage: Usage | None) -> None: ...


class LocalMode:
    """Local inference for one instance: chat, streams, embeddings and prompt caches."""

    def __init__(self, owner: LocalOwner) -> None:
        self.owner = owner
        self._backend: LocalBackend | None = None

    @property
    def provider(self) -> str:
        return self.owner.provider

    def backend(self) -> LocalBackend:
        """The backend, built (not loaded) on first use."""
        if self._backend is None:
            try:
                from llmkit.providers.huggingface.local import LocalBackend
            except ImportError as exc:  # pragma: no cover - part of the package
                raise ConfigError(f"local mode is unavailable: {exc}", provider=self.provider) from None
            extra = self.owner.config.extra
            kwargs: dict[str, Any] = {k: extra[k] for k in _LOCAL_OPTIONS if k in extra}
            kwargs.setdefault("trust_remote_code", False)
            try:
                self._backend = LocalBackend(self.owner.model, **kwargs)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid local option: {exc}", provider=self.provider) from None
        return self._backend

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Local failures as typed errors."""
        try:
            yield
        except LLMError:
            raise
        except ImportError as exc:
            raise ConfigError(
                f"local mode needs the [local] extra (torch, transformers, "
                f"sentence-transformers): {exc}",
                provider=self.provider,
            ) from None
        except ValueError as exc:
            raise InvalidRequestError(str(exc), provider=self.provider) from None
        except OSError as exc:
            raise ModelNotFoundError(
                f"cannot load local model {self.owner.model!r}: {exc}", provider=self.provider
            ) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise LLMError(f"local generation failed: {exc!r}", provider=self.provider) from exc

    # ------------------------------------------------------------------ requests

    def params(self, options: Mapping[str, Any]) -> dict[str, Any]:
        opts, _ = self.owner._options(options)
        top_p = opts.get("top_p")
        params: dict[str, Any] = {
            "temperature": float(opts.get("temperature") or 0.0),
            "top_p": float(top_p) if top_p is not None else 1.0,
            "stop": list(opts.get("stop") or []) or None,
            "seed": opts.get("seed"),
        }
        if opts.get("max_tokens") is not None:  # else the backend's default
            params["max_new_tokens"] = opts["max_tokens"]
        return params

    @staticmethod
    def messages(messages: MessagesInput) -> list[dict[str, Any]]:
        return [{"role": str(m.role), "content": m.text()} for m in normalize_messages(messages)]

    def _no_tools(self, tools: Sequence[Any] | None) -> None:
        if tools:
            raise NotSupportedError("tools are not supported in local mode", provider=self.provider)

    def _response(self, result: Any, response_format: Any = None) -> ChatResponse:
        usage = Usage.of(result.prompt_tokens, result.completion_tokens)
        self.owner._record_usage(usage)
        response = ChatResponse(
            content=result.text, finish_reason=result.finish_reason, usage=usage,
            model=self.owner.model,
        )
        if response_format is not None:
            response.parsed = parse_structured(
                result.text, response_format, self.provider, response
            )
        return response

    # ------------------------------------------------------------------ calls

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any = None,
        response_format: Any,
        options: Mapping[str, Any],
    ) -> ChatResponse:
        self._no_tools(tools)
        msgs = self.messages(messages)
        params = self.params(options)
        with self.errors():
            result = await self.backend().generate(msgs, **params)
        return self._response(result, response_format)

    async def stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any = None,
        response_format: Any = None,
        options: Mapping[str, Any],
    ) -> AsyncGenerator[StreamChunk, None]:
        self._no_tools(tools)
        msgs = self.messages(messages)
        params = self.params(options)
        usage_out: dict[str, Any] = {}
        with self.errors():
            stream: AsyncIterator[str] = self.backend().stream(msgs, usage_out=usage_out, **params)
            async with aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    yield StreamChunk(delta=delta)
        usage = Usage.of(usage_out.get("prompt_tokens"), usage_out.get("completion_tokens"))
        self.owner._record_usage(usage)
        yield StreamChunk(finish_reason=usage_out.get("finish_reason") or "stop", usage=usage)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        with self.errors():
            return await self.backend().embed(texts)

    async def build_cache(self, prefix_messages: MessagesInput) -> PromptCache:
        msgs = self.messages(prefix_messages)
        with self.errors():
            handle = await self.backend().build_cache(msgs)
        return PromptCache(self.provider, msgs, handle)

    async def generate_with_cache(
        self, messages: MessagesInput, cache: PromptCache, options: Mapping[str, Any]
    ) -> str:
        if not isinstance(cache, PromptCache) or cache.provider != self.provider:
            raise InvalidRequestError(
                "cache must come from this provider's build_cache()", provider=self.provider
            )
        msgs = self.messages(messages)
        params = self.params(options)
        with self.errors():
            result = await self.backend().generate_with_cache(msgs, cache.handle, **params)
        return self._response(result).content

    async def text_stream(
        self, messages: MessagesInput, options: Mapping[str, Any]
    ) -> AsyncGenerator[str, None]:
        chunks = self.stream(messages, tools=None, options=options)
        async with aclosing(chunks):
            async for chunk in chunks:
                if chunk.delta:
                    yield chunk.delta

    async def load(self) -> None:
        with self.errors():
            await self.backend().load()

    async def health(self, timeout: float) -> None:
        await self.load()

    def info(self) -> dict[str, Any]:
        return self.backend().info()

    async def aclose(self) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await backend.aclose()
