"""Local mode of :class:`~llmkit.providers.huggingface.client.HuggingFaceLLM` (``base_url="local"``
or ``set_use_local(True)``): the hand-off to :class:`llmkit.providers.huggingface.local.LocalBackend`
(transformers and sentence-transformers, imported only when local mode is first used),
prompt caches. Concurrent local calls are batched together by the backend (a batch of
prompts is the base fan-out of ``generate()`` calls); ``max_concurrency`` bounds them like
HTTP requests. Options from ``extra``: ``device``, ``dtype``, ``trust_remote_code``
(default False), ``embedding_model``, ``normalize_embeddings``, ``max_batch_size`` (rows
decoding together), ``embed_batch_size`` (texts per encoder mini-batch)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any

from llmkit.base import PromptCache, parse_structured
from llmkit.core.errors import (
    ConfigError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
    NotSupportedError,
)
from llmkit.core.types import ChatResponse, MessagesInput, StreamChunk, Usage, normalize_messages
from llmkit.providers.openai.client import OpenAICompatible

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from llmkit.providers.huggingface.local import LocalBackend

__all__ = ["HFLocalMode"]

_LOCAL_OPTIONS = ("device", "dtype", "trust_remote_code", "embedding_model",
                  "normalize_embeddings", "max_batch_size", "embed_batch_size")


class HFLocalMode(OpenAICompatible):
    """Local-mode methods; the subclass dispatches to them while ``_use_local`` is set."""

    _use_local: bool
    _local: LocalBackend | None

    # ------------------------------------------------------------------ local mode

    def _local_backend(self) -> LocalBackend:
        if self._local is None:
            try:
                from llmkit.providers.huggingface.local import LocalBackend
            except ImportError as exc:  # pragma: no cover - part of the package
                raise ConfigError(f"local mode is unavailable: {exc}", provider=self.provider) from None
            extra = self.config.extra
            kwargs: dict[str, Any] = {k: extra[k] for k in _LOCAL_OPTIONS if k in extra}
            kwargs.setdefault("trust_remote_code", False)
            try:
                self._local = LocalBackend(self.model, **kwargs)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid local option: {exc}", provider=self.provider) from None
        return self._local

    @contextmanager
    def _local_errors(self) -> Iterator[None]:
        """Local failures as typed errors (the call layer takes the slot and counts the call)."""
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
                f"cannot load local model {self.model!r}: {exc}", provider=self.provider
            ) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise LLMError(f"local generation failed: {exc!r}", provider=self.provider) from exc

    def _local_params(self, options: dict[str, Any]) -> dict[str, Any]:
        opts, _ = self._options(options)
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
    def _local_messages(messages: MessagesInput) -> list[dict[str, Any]]:
        return [{"role": str(m.role), "content": m.text()} for m in normalize_messages(messages)]

    def _no_local_tools(self, tools: Sequence[Any] | None) -> None:
        if tools:
            raise NotSupportedError("tools are not supported in local mode", provider=self.provider)

    async def _local_chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        response_format: Any,
        **options: Any,
    ) -> ChatResponse:
        self._no_local_tools(tools)
        msgs = self._local_messages(messages)
        params = self._local_params(options)
        with self._local_errors():
            result = await self._local_backend().generate(msgs, **params)
        return self._local_response(result, response_format)

    def _local_response(self, result: Any, response_format: Any = None) -> ChatResponse:
        usage = Usage.of(result.prompt_tokens, result.completion_tokens)
        self._record_usage(usage)
        response = ChatResponse(
            content=result.text, finish_reason=result.finish_reason, usage=usage, model=self.model
        )
        if response_format is not None:
            response.parsed = parse_structured(result.text, response_format, self.provider)
        return response

    async def _local_stream(
        self, messages: MessagesInput, *, tools: Sequence[Any] | None, **options: Any
    ) -> AsyncGenerator[StreamChunk, None]:
        self._no_local_tools(tools)
        msgs = self._local_messages(messages)
        params = self._local_params(options)
        usage_out: dict[str, Any] = {}
        with self._local_errors():
            backend = self._local_backend()
            stream: AsyncIterator[str] = backend.stream(msgs, usage_out=usage_out, **params)
            async with aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    yield StreamChunk(delta=delta)
        usage = Usage.of(usage_out.get("prompt_tokens"), usage_out.get("completion_tokens"))
        self._record_usage(usage)
        yield StreamChunk(finish_reason=usage_out.get("finish_reason") or "stop", usage=usage)

    # ------------------------------------------------------------------ batches

    def supports_batching(self) -> bool:
        return self._use_local

    # ------------------------------------------------------------------ caches

    async def build_cache(self, prefix_messages: MessagesInput) -> PromptCache:
        """Process a conversation prefix once (local mode) for :meth:`generate_with_cache`."""
        if not self._use_local:
            raise NotSupportedError(
                "prompt caches need local mode (base_url='local')", provider=self.provider
            )
        msgs = self._local_messages(prefix_messages)
        with self._local_errors():
            handle = await self._local_backend().build_cache(msgs)
        return PromptCache(self.provider, msgs, handle)

    async def generate_with_cache(
        self, messages: MessagesInput, cache: PromptCache, **options: Any
    ) -> str:
        """Generate for ``messages`` (the full conversation, starting with the cached
        prefix) reusing the prefix's KV cache. Local mode only."""
        if not self._use_local:
            raise NotSupportedError(
                "prompt caches need local mode (base_url='local')", provider=self.provider
            )
        if not isinstance(cache, PromptCache) or cache.provider != self.provider:
            raise InvalidRequestError(
                "cache must come from this provider's build_cache()", provider=self.provider
            )
        msgs = self._local_messages(messages)
        params = self._local_params(options)
        with self._local_errors():
            result = await self._local_backend().generate_with_cache(
                msgs, cache.handle, **params
            )
        return self._local_response(result).content

