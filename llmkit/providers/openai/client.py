"""OpenAI and OpenAI-compatible servers (``provider="openai"``)."""

from __future__ import annotations

import array
import base64
import functools
import os
import sys
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from llmkit.base import parse_structured
from llmkit.core.config import LLMConfig
from llmkit.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    LLMError,
    StreamError,
    register_secret,
)
from llmkit.core.options import ClientOptions, Unpack, resolve_options
from llmkit.core.types import (
    Capabilities,
    ChatResponse,
    MessagesInput,
    ModelInfo,
    StreamChunk,
    Usage,
)
from llmkit.http.transport import HTTPTransport
from llmkit.providers.http_provider import HTTPProvider
from llmkit.providers.openai.chat import (
    OPENAI_PROVIDER_OPTIONS,
    OpenAIOptions,
    ToolCallAssembler,
    chat_body,
    context_from_models,
    context_from_props,
    decode_event,
    is_done,
    is_openai_host,
    known_context_length,
    max_tokens_field,
    parse_chat_response,
    parse_stream_event,
    parse_stream_text,
    parse_usage,
    refused_options,
)
from llmkit.providers.openai.chat.models import looks_like_llama_cpp
from llmkit.providers.openai.chat.options import REMOVED_OPTIONS
from llmkit.providers.openai.responses import ResponsesAPI, responses_api

__all__ = ["OpenAILLM"]

_HEALTH_TIMEOUT = 10.0


class OpenAICompatible(HTTPProvider):
    """Chat, streaming and embeddings over the OpenAI wire format. ``_chat_path`` and
    ``_embeddings_path`` are relative to the base URL.

    A request carries only the options that were set, in the config or per call:
    ``max_tokens`` goes out as ``max_completion_tokens`` on api.openai.com and as
    ``max_tokens`` elsewhere (``extra["max_tokens_field"]`` overrides).
    """

    _chat_path: ClassVar[str] = "chat/completions"
    _embeddings_path: ClassVar[str] = "embeddings"
    embedding_batch_size: ClassVar[int] = 2048
    provider_options: ClassVar[frozenset[str]] = OPENAI_PROVIDER_OPTIONS

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._max_tokens_field = max_tokens_field(self._http.base_url, self.config.extra)
        self._unsupported: Mapping[str, str] = {**REMOVED_OPTIONS, **self.unsupported_options}
        self._responses: ResponsesAPI | None = None  # extra={"api": "responses"}

    def _options(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], ClientOptions]:
        return resolve_options(
            self.config, options, provider=self.provider,
            provider_options=self.provider_options, unsupported=self._unsupported,
        )

    def _include_usage(self) -> bool:
        return bool(self.config.extra.get("stream_usage", True))

    def _chat_model(self) -> str:
        return self.model

    def _request(
        self,
        messages: MessagesInput,
        options: Mapping[str, Any],
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        stream: bool = False,
    ) -> tuple[dict[str, Any], Any, ClientOptions]:
        """(body, pydantic class of the reply or None, client options) of one call."""
        model = options.get("model") or self._chat_model()
        if "model" in options:
            options = {k: v for k, v in options.items() if k != "model"}
        opts, client = self._options(options)
        body, model_cls = chat_body(
            model, messages, opts,
            tools=tools, tool_choice=tool_choice, response_format=response_format,
            stream=stream, include_usage=self._include_usage(),
            max_tokens_field=self._max_tokens_field, extra_body=client.extra_body,
        )
        return body, model_cls, client

    # ------------------------------------------------------------------ chat

    async def generate(self, messages: MessagesInput, **options: Unpack[OpenAIOptions]) -> str:
        return (await self.chat(messages, **options)).content

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Unpack[OpenAIOptions],
    ) -> ChatResponse:
        if self._responses is not None:
            return await self._responses.chat(
                messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
                options=options,
            )
        body, model_cls, client = self._request(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format,
        )
        model = body["model"]
        data = await self._http.request(
            "POST", self._chat_path, json=body, model=model, client=client
        )
        response = parse_chat_response(data, model, self.provider)
        self._record_usage(response.usage)
        if response_format is not None and response.refusal is None:
            # a refusal has no JSON to validate: parsed stays None, refusal says why
            response.parsed = parse_structured(
                response.content, model_cls or response_format, self.provider, response
            )
        return response

    def _open_stream(
        self,
        messages: MessagesInput,
        options: Mapping[str, Any],
        parse: Callable[..., Any],  # (event, provider=...)
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
    ) -> AsyncGenerator[Any, None]:
        body, _, client = self._request(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=True,
        )
        provider = self.provider
        return self._http.stream(
            "POST", self._chat_path, json=body, kind="sse", is_last=is_done,
            model=body["model"], end_marker="data: [DONE]",
            parse=functools.partial(parse, provider=provider), client=client,
        )

    async def chat_stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Unpack[OpenAIOptions],
    ) -> AsyncGenerator[StreamChunk, None]:
        """Chunks in arrival order, each with the ``index`` of its choice. A choice's
        finishing chunk carries its assembled tool calls; the trailing usage is merged
        into the last finishing chunk."""
        if self._responses is not None:
            stream = self._responses.chat_stream(
                messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
                options=options,
            )
            async with aclosing(stream):
                async for chunk in stream:
                    yield chunk
            return
        events = self._open_stream(
            messages, options, parse_stream_event,
            tools=tools, tool_choice=tool_choice, response_format=response_format,
        )
        include_usage = self._include_usage()
        assembler = ToolCallAssembler()
        usage: Usage | None = None
        pending: StreamChunk | None = None  # a finishing chunk waiting for the usage
        try:
            async with aclosing(events):
                async for item in events:
                    if item is None:
                        continue
                    if type(item) is StreamChunk:
                        if item.usage is None and item.finish_reason is None and not item.tool_calls:
                            # the common case: a content, reasoning or refusal delta
                            if pending is not None:
                                yield pending
                                pending = None
                            yield item
                            continue
                        chunks: list[StreamChunk] = [item]
                    else:
                        chunks = item
                    for chunk in chunks:
                        if chunk.usage is not None:
                            usage = chunk.usage
                            if pending is not None and not (chunk.raw or {}).get("choices"):
                                pending.usage = usage  # the usage-only event
                                chunk, pending = pending, None
                                yield chunk
                                continue
                        if chunk.tool_calls:
                            assembler.add(chunk.tool_calls, chunk.index)
                        if chunk.finish_reason is not None:
                            if assembler:
                                chunk.completed_tool_calls = assembler.pop(chunk.index) or None
                            if include_usage and chunk.usage is None:
                                if pending is not None:
                                    yield pending
                                pending = chunk
                                continue
                        if pending is not None:
                            yield pending
                            pending = None
                        yield chunk
            if pending is not None:
                yield pending
        finally:
            self._record_usage(usage)

    async def generate_stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Unpack[OpenAIOptions],
    ) -> AsyncGenerator[str, None]:
        """Text deltas of choice 0 (the other choices of ``n > 1`` are not mixed in)."""
        if self._responses is not None:
            texts = self._responses.generate_stream(
                messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
                options=options,
            )
            async with aclosing(texts):
                async for text in texts:
                    yield text
            return
        events = self._open_stream(
            messages, options, parse_stream_text,
            tools=tools, tool_choice=tool_choice, response_format=response_format,
        )
        usage: Usage | None = None
        try:
            async with aclosing(events):
                async for item in events:
                    if item is None:
                        continue
                    text, chunk_usage = item
                    if chunk_usage is not None:
                        usage = chunk_usage
                    if text:
                        yield text
        finally:
            self._record_usage(usage)

    # ------------------------------------------------------------------ embeddings

    async def _embed_request(self, texts: list[str]) -> list[list[float]]:
        model = self._embedding_model()
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "base64"}
        dims = self.config.extra.get("dimensions")
        if dims:
            body["dimensions"] = dims
        data = await self._http.request("POST", self._embeddings_path, json=body, model=model)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            raise StreamError(
                f"embeddings response has {len(items) if isinstance(items, list) else 'no'} "
                f"vectors for {len(texts)} inputs",
                provider=self.provider,
            )
        items = sorted(items, key=lambda d: d.get("index", 0))
        self._record_usage(Usage.of((data.get("usage") or {}).get("prompt_tokens"), 0))
        return [_vector(d.get("embedding")) for d in items]

    def _embedding_reply_bytes(self) -> int:
        # base64 float32 (4/3 of 4 bytes a float) plus the JSON around each vector
        dims = self.config.extra.get("dimensions")
        if not dims:
            dims = 3072 if "large" in self._embedding_model() else 1536
        return int(dims) * 16 // 3 + 64


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):  # base64 little-endian float32, decoded in C
        try:
            vector = array.array("f", base64.b64decode(value, validate=True))
        except ValueError:  # bad base64, or not a whole number of float32s
            raise StreamError(f"malformed base64 embedding: {value[:40]!r}") from None
        if sys.byteorder != "little":
            vector.byteswap()
        return vector.tolist()
    return [float(v) for v in value]


class OpenAILLM(OpenAICompatible):
    """OpenAI's API, or any server speaking its wire format (``base_url``).

    ``get_model_info().context_length`` is the server's own figure once known (vLLM's
    ``max_model_len``, llama.cpp's context from ``/v1/models`` or ``/props``): after
    ``await fetch_model_info()`` or a successful ``health_check()``; before that, and for
    servers that do not say, the known window of OpenAI's model (or None).
    """

    provider_name: ClassVar[str] = "openai"

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._unsupported = refused_options(self._http.base_url)
        self._responses = responses_api(self, is_openai_host(self._http.base_url))
        self._server_context: int | None = None

    def _base_url(self) -> str:
        # A config built directly (not from_env) still gets OPENAI_BASE_URL / OPENAI_API_KEY.
        base = self.config.base_url or os.environ.get("OPENAI_BASE_URL")
        return (base or "https://api.openai.com/v1").rstrip("/")

    def _make_transport(self, base_url: str, headers: dict[str, str]) -> HTTPTransport:
        transport = super()._make_transport(base_url, headers)
        if "Authorization" not in headers and is_openai_host(transport.base_url):
            transport.__class__ = _KeylessTransport  # api.openai.com without a key
        return transport

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        key = key or os.environ.get("OPENAI_API_KEY") or None
        register_secret(key)
        headers = super()._auth_headers(key)
        extra = self.config.extra
        if extra.get("organization"):
            headers["OpenAI-Organization"] = str(extra["organization"])
        if extra.get("project"):
            headers["OpenAI-Project"] = str(extra["project"])
        return headers

    # ------------------------------------------------------------------ extras

    async def list_models(self) -> list[dict[str, Any]]:
        """The server's models (``GET /models``), as returned."""
        data = await self._http.request("GET", "models")
        items = data.get("data") if isinstance(data, dict) else data
        return list(items or [])

    async def create_function_call(
        self,
        messages: MessagesInput,
        functions: Sequence[Any],
        *,
        function_call: Any = "required",
        **options: Unpack[OpenAIOptions],
    ) -> ChatResponse:
        """A chat turn that must call one of ``functions`` (dicts, pydantic classes or typed
        Python functions); the calls are in ``tool_calls``."""
        if not functions:
            raise InvalidRequestError("create_function_call needs at least one function")
        return await self.chat(messages, tools=functions, tool_choice=function_call, **options)

    async def create_chat_completion(self, request: dict[str, Any]) -> Any:
        """Send a raw chat-completions request, as given (``model`` defaults to the
        config's). Returns the decoded response, or with ``"stream": True`` an async
        iterator of decoded chunks. The usage the server reports counts in
        ``get_token_usage()`` (a stream reports it with
        ``"stream_options": {"include_usage": True}``)."""
        if not isinstance(request, dict):
            raise InvalidRequestError("request must be a dict")
        body = {"model": self.model, **request}
        if body.get("stream"):
            return self._raw_stream(body)
        data = await self._http.request("POST", self._chat_path, json=body, model=body["model"])
        if isinstance(data, dict):
            self._record_usage(_usage_or_none(data.get("usage")))
        return data

    async def create_response(self, request: dict[str, Any]) -> Any:
        """Send a raw Responses API request (``POST /responses``), as given (``model``
        defaults to the config's), whatever ``extra["api"]`` says. Returns the decoded
        response, or with ``"stream": True`` an async iterator of event dicts (an ``error``
        event raises its typed error). The usage counts in ``get_token_usage()``."""
        return await ResponsesAPI(self).create_response(request)

    async def _raw_stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        provider = self.provider
        events = self._http.stream(
            "POST", self._chat_path, json=body, kind="sse", is_last=is_done,
            model=body["model"], end_marker="data: [DONE]",
            parse=lambda ev: decode_event(ev, provider),  # raises on error events
        )
        usage: Usage | None = None
        try:
            async with aclosing(events):
                async for obj in events:
                    if obj is not None:
                        if obj.get("usage"):
                            usage = _usage_or_none(obj["usage"]) or usage
                        yield obj
        finally:
            self._record_usage(usage)

    # ------------------------------------------------------------------ health, info

    async def health_check(self) -> None:
        """One ``GET /models`` (no retries, a timeout of at most 10 s); what it says about
        the model's context length is kept for :meth:`get_model_info`."""
        timeout = min(self.config.timeout, _HEALTH_TIMEOUT)
        models = await self._http.request("GET", "models", timeout=timeout, retry=False)
        self._server_context = context_from_models(models, self.model) or self._server_context

    async def fetch_model_info(self) -> ModelInfo:
        """Ask the server about the model (``GET /models``; llama.cpp's ``/props`` too)
        and return :meth:`get_model_info` with the context length it states."""
        timeout = min(self.config.timeout, _HEALTH_TIMEOUT)
        models = await self._http.request("GET", "models", timeout=timeout, retry=False)
        context = context_from_models(models, self.model)
        if looks_like_llama_cpp(models, self.model):
            props_url = self._http.base_url.removesuffix("/v1") + "/props"
            try:
                props = await self._http.request("GET", props_url, timeout=timeout, retry=False)
            except LLMError:
                props = None  # /props may be disabled; /v1/models said enough
            context = context_from_props(props) or context
        self._server_context = context or self._server_context
        return self.get_model_info()

    def get_model_info(self) -> ModelInfo:
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self._http.base_url,
            capabilities=Capabilities(
                streaming=True, embeddings=True, tools=True, batching=False, kv_cache=False
            ),
            context_length=self._server_context or known_context_length(self.model),
        )


def _usage_or_none(raw: Any) -> Usage | None:
    try:
        return parse_usage(raw)
    except (TypeError, ValueError):
        return None  # a malformed usage object in a raw response is not counted


_NO_KEY = "no API key: set OPENAI_API_KEY or api_key"


class _KeylessTransport(HTTPTransport):
    """The transport of an instance for api.openai.com that has no key: every request
    raises :class:`AuthenticationError` before anything is sent (not a 401 after a round
    trip, nor a DNS error where there is no network)."""

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AuthenticationError(_NO_KEY, provider=self.provider)

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        raise AuthenticationError(_NO_KEY, provider=self.provider)
        yield  # an async generator, as the transport's stream is
