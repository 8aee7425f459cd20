"""Local mode of :class:`~llmkit.providers.huggingface.client.HuggingFaceLLM`
(``base_url="local"`` or ``set_use_local(True)``) as an object of its own,
:class:`LocalMode`: the hand-off to :class:`llmkit.providers.huggingface.local.LocalBackend`
(transformers and sentence-transformers, imported only when local mode is first used), and
prompt caches. Concurrent local calls are batched together by the backend (a batch of
prompts is the base fan-out of ``generate()`` calls); ``max_concurrency`` bounds them like
HTTP requests (the call layer takes the slot per call). Options from ``extra``: ``device``,
``dtype``, ``trust_remote_code`` (default False), ``embedding_model``,
``normalize_embeddings``, ``max_batch_size`` (rows decoding together), ``embed_batch_size``
(texts per encoder mini-batch).

Per-call options: every portable option is honoured or refused before anything runs
(nothing is accepted and dropped). Honoured: ``max_tokens``, ``temperature``, ``top_p``,
``stop``, ``seed``, ``top_k``, ``presence_penalty``, ``frequency_penalty`` (OpenAI's
definitions), ``logprobs`` / ``top_logprobs`` (at most 20), ``n`` (chat: ``n`` rows in the
shared batch, choice ``i`` seeded with ``seed + i``), and the client option ``timeout`` (a
limit on this call's generation; ``max_retries`` has nothing to retry). Refused with
:class:`InvalidRequestError`: ``reasoning_effort`` and ``think``, ``n > 1`` for streams,
``top_logprobs`` without ``logprobs``, ``extra_headers`` / ``extra_query`` / ``extra_body``
(no HTTP request is made) and the API modes' own options (``repetition_penalty``,
``logit_bias``, ``user``, ...)."""

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
    LLMTimeoutError,
    ModelNotFoundError,
    NotSupportedError,
    instance_closed,
)
from llmkit.core.options import ClientOptions
from llmkit.core.structured import parse_structured
from llmkit.core.types import (
    ChatResponse,
    Choice,
    MessagesInput,
    StreamChunk,
    Usage,
    normalize_messages,
)

if TYPE_CHECKING:
    from llmkit.providers.huggingface.local import LocalBackend

__all__ = ["LocalMode"]

_LOCAL_OPTIONS = ("device", "dtype", "trust_remote_code", "embedding_model",
                  "normalize_embeddings", "max_batch_size", "embed_batch_size")
HONOURED_OPTIONS = frozenset({
    "max_tokens", "temperature", "top_p", "stop", "seed", "top_k", "presence_penalty",
    "frequency_penalty", "logprobs", "top_logprobs", "n",
})
"""The portable options local mode applies; every other option is refused."""
REFUSED_OPTIONS = {
    "reasoning_effort": "a local transformers model has no reasoning control",
    "think": "a local transformers model has no reasoning control",
}
MAX_TOP_LOGPROBS = 20


class LocalCall:
    """One local call's options, checked: the backend's parameters, ``n``, the timeout."""

    __slots__ = ("n", "params", "timeout")

    def __init__(self, params: dict[str, Any], n: int, timeout: float | None) -> None:
        self.params = params
        self.n = n
        self.timeout = timeout


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
        self._closed = False

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
    def errors(self, *, stream: bool = False) -> Iterator[None]:
        """Local failures as typed errors; what the close of the instance ended says so,
        as over HTTP (a stream: :class:`StreamError`, a call: "instance is closed")."""
        try:
            yield
        except ConfigError:
            if not self._closed:
                raise
            raise instance_closed(self.provider, streaming=stream) from None
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

    def _refuse(self, name: str, reason: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"option {name!r} is not supported in local mode: {reason}", provider=self.provider
        )

    def call(self, options: Mapping[str, Any], *, one_choice: str | None = None) -> LocalCall:
        """The checked options of one call; an option local mode cannot honour raises
        :class:`InvalidRequestError` here, before anything runs."""
        opts, client = self.owner._options(options)
        for name in opts:
            if name not in HONOURED_OPTIONS:
                raise self._refuse(name, REFUSED_OPTIONS.get(
                    name, "an option of the API modes (router, TGI); local mode does not send it"
                ))
        for name in ("extra_headers", "extra_query", "extra_body"):
            if getattr(client, name):
                raise self._refuse(name, "local mode makes no HTTP request")
        n = int(opts.get("n", 1))
        if n > 1 and one_choice is not None:
            raise self._refuse("n", f"{one_choice} gives one choice (use chat() for n > 1)")
        top_logprobs = int(opts.get("top_logprobs") or 0)
        if top_logprobs and not opts.get("logprobs"):
            raise self._refuse("top_logprobs", "it needs logprobs=True")
        if top_logprobs > MAX_TOP_LOGPROBS:
            raise self._refuse("top_logprobs", f"at most {MAX_TOP_LOGPROBS}")
        top_p = opts.get("top_p")
        params: dict[str, Any] = {
            "temperature": float(opts.get("temperature") or 0.0),
            "top_p": float(top_p) if top_p is not None else 1.0,
            "stop": list(opts.get("stop") or []) or None,
            "seed": opts.get("seed"),
            "top_k": int(opts.get("top_k") or 0),
            "presence_penalty": float(opts.get("presence_penalty") or 0.0),
            "frequency_penalty": float(opts.get("frequency_penalty") or 0.0),
            "logprobs": bool(opts.get("logprobs")),
            "top_logprobs": top_logprobs,
        }
        if opts.get("max_tokens") is not None:  # else the backend's default
            params["max_new_tokens"] = opts["max_tokens"]
        return LocalCall(params, n, client.timeout)

    def params(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The backend's parameters of one call (see :meth:`call`)."""
        return self.call(options).params

    async def _limited(self, awaitable: Any, timeout: float | None) -> Any:
        if timeout is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:
            raise LLMTimeoutError(
                f"local generation timed out after {timeout:g}s", provider=self.provider
            ) from None

    @staticmethod
    def messages(messages: MessagesInput) -> list[dict[str, Any]]:
        return [{"role": str(m.role), "content": m.text()} for m in normalize_messages(messages)]

    def _no_tools(self, tools: Sequence[Any] | None) -> None:
        if tools:
            raise NotSupportedError("tools are not supported in local mode", provider=self.provider)

    def _response(self, results: Sequence[Any], response_format: Any = None) -> ChatResponse:
        """One reply of ``results`` (one a choice; the prompt counted once)."""
        first = results[0]
        usage = Usage.of(first.prompt_tokens, sum(r.completion_tokens for r in results))
        self.owner._record_usage(usage)
        choices = [
            Choice(index=i, content=r.text, finish_reason=r.finish_reason, logprobs=r.logprobs)
            for i, r in enumerate(results)
        ]
        response = ChatResponse(
            content=first.text, finish_reason=first.finish_reason, usage=usage,
            model=self.owner.model, logprobs=first.logprobs, choices=choices,
        )
        if response_format is not None:
            response.parsed = parse_structured(
                first.text, response_format, self.provider, response
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
        call = self.call(options)
        params = call.params
        with self.errors():
            backend = self.backend()
            if call.n == 1:
                work: Any = backend.generate(msgs, **params)
            else:  # n rows of the shared batch, each sampling on its own
                work = backend.generate_choices(msgs, call.n, **params)
            outcome = await self._limited(work, call.timeout)
        return self._response(outcome if call.n > 1 else [outcome], response_format)

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
        call = self.call(options, one_choice="a local stream")
        usage_out: dict[str, Any] = {}
        with self.errors(stream=True):
            stream: AsyncIterator[str] = self.backend().stream(
                msgs, usage_out=usage_out, **call.params
            )
            async with aclosing(stream):  # type: ignore[type-var]
                while True:  # the timeout, when set, bounds each wait for the next text
                    try:
                        delta = await self._limited(stream.__anext__(), call.timeout)
                    except StopAsyncIteration:
                        break
                    yield StreamChunk(delta=delta)
        usage = Usage.of(usage_out.get("prompt_tokens"), usage_out.get("completion_tokens"))
        self.owner._record_usage(usage)
        yield StreamChunk(
            finish_reason=usage_out.get("finish_reason") or "stop", usage=usage,
            logprobs=usage_out.get("logprobs"),
        )

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
        call = self.call(options, one_choice="generate_with_cache")
        with self.errors():
            result = await self._limited(
                self.backend().generate_with_cache(msgs, cache.handle, **call.params), call.timeout
            )
        return self._response([result]).content

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
        """The instance is closing: what runs now ends with "the instance was closed"."""
        self._closed = True
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await backend.aclose()
