"""OpenAI and OpenAI-compatible servers (``provider="openai"``)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from llmkit.base import parse_structured
from llmkit.config import LLMConfig
from llmkit.errors import InvalidRequestError, StreamError
from llmkit.providers._http_base import HTTPProvider
from llmkit.providers._openai_wire import (
    OPENAI_PROVIDER_OPTIONS,
    ToolCallAssembler,
    chat_body,
    is_done,
    max_tokens_field,
    parse_chat_response,
    parse_stream_event,
    parse_stream_text,
)
from llmkit.streaming import SSEEvent
from llmkit.types import (
    Capabilities,
    ChatResponse,
    MessagesInput,
    ModelInfo,
    StreamChunk,
    Usage,
)

__all__ = ["OpenAILLM"]

# Known context windows (prefix match on the model id).
_CONTEXT = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo", 16_385),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gpt-5", 400_000),
    ("text-embedding-3", 8_191),
)


class OpenAICompatible(HTTPProvider):
    """Chat, streaming and embeddings over the OpenAI wire format. ``_chat_path`` and
    ``_embeddings_path`` are relative to the base URL."""

    _chat_path: ClassVar[str] = "chat/completions"
    _embeddings_path: ClassVar[str] = "embeddings"
    embedding_batch_size: ClassVar[int] = 2048
    provider_options: ClassVar[frozenset[str]] = OPENAI_PROVIDER_OPTIONS

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._max_tokens_field = max_tokens_field(self._http.base_url, self.config.extra)

    def _include_usage(self) -> bool:
        return bool(self.config.extra.get("stream_usage", True))

    def _chat_model(self) -> str:
        return self.model

    # ------------------------------------------------------------------ chat

    async def generate(self, messages: MessagesInput, **options: Any) -> str:
        return (await self.chat(messages, **options)).content

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        model = options.pop("model", None) or self._chat_model()
        opts, client = self._options(options)
        body, model_cls = chat_body(
            model,
            messages,
            opts,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            max_tokens_field=self._max_tokens_field,
            extra_body=client.extra_body,
        )
        data = await self._http.request(
            "POST", self._chat_path, json=body, model=model, client=client
        )
        response = parse_chat_response(data, model, self.provider)
        self._record_usage(response.usage)
        if response_format is not None:
            response.parsed = parse_structured(
                response.content, model_cls or response_format, self.provider
            )
        return response

    def _open_stream(
        self,
        messages: MessagesInput,
        options: dict[str, Any],
        parse: Callable[[SSEEvent, str], Any],
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
    ) -> AsyncGenerator[Any, None]:
        model = options.pop("model", None) or self._chat_model()
        opts, client = self._options(options)
        body, _ = chat_body(
            model,
            messages,
            opts,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            stream=True,
            include_usage=self._include_usage(),
            max_tokens_field=self._max_tokens_field,
            extra_body=client.extra_body,
        )
        provider = self.provider
        return self._http.stream(
            "POST", self._chat_path, json=body, kind="sse", is_last=is_done,
            model=model, end_marker="data: [DONE]",
            parse=lambda ev: parse(ev, provider), client=client,
        )

    async def chat_stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        events = self._open_stream(
            messages, options, parse_stream_event,
            tools=tools, tool_choice=tool_choice, response_format=response_format,
        )
        include_usage = self._include_usage()
        assembler = ToolCallAssembler()
        usage: Usage | None = None
        pending_finish: StreamChunk | None = None
        try:
            async with aclosing(events):
                async for chunk in events:
                    if chunk is None:
                        continue
                    if chunk.tool_calls:
                        assembler.add(chunk.tool_calls)
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.finish_reason and assembler:
                        chunk.completed_tool_calls = assembler.calls()
                    if chunk.finish_reason and include_usage:
                        # hold the finishing chunk back to merge the trailing usage chunk
                        pending_finish = chunk
                        continue
                    if pending_finish is not None and not chunk.delta and not chunk.tool_calls:
                        pending_finish.usage = chunk.usage
                        chunk, pending_finish = pending_finish, None
                    yield chunk
            if pending_finish is not None:
                yield pending_finish
        finally:
            self._record_usage(usage)

    async def generate_stream(
        self, messages: MessagesInput, **options: Any
    ) -> AsyncGenerator[str, None]:
        tools = options.pop("tools", None)
        tool_choice = options.pop("tool_choice", None)
        response_format = options.pop("response_format", None)
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
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
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


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):  # base64 little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(v) for v in value]


class OpenAILLM(OpenAICompatible):
    """OpenAI's API, or any server speaking its wire format (``base_url``)."""

    provider_name: ClassVar[str] = "openai"

    def _base_url(self) -> str:
        return (self.config.base_url or "https://api.openai.com/v1").rstrip("/")

    def _auth_headers(self, key: str | None) -> dict[str, str]:
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
        **options: Any,
    ) -> ChatResponse:
        """A chat turn that must call one of ``functions`` (dicts, pydantic classes or typed
        Python functions); the calls are in ``tool_calls``."""
        if not functions:
            raise InvalidRequestError("create_function_call needs at least one function")
        return await self.chat(messages, tools=functions, tool_choice=function_call, **options)

    async def create_chat_completion(self, request: dict[str, Any]) -> Any:
        """Send a raw chat-completions request. Returns the decoded response, or with
        ``"stream": True`` an async iterator of decoded chunks."""
        if not isinstance(request, dict):
            raise InvalidRequestError("request must be a dict")
        body = {"model": self.model, **request}
        if body.get("stream"):
            return self._raw_stream(body)
        return await self._http.request("POST", self._chat_path, json=body, model=body["model"])

    async def _raw_stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        provider = self.provider
        events = self._http.stream(
            "POST", self._chat_path, json=body, kind="sse", is_last=is_done,
            model=body["model"], end_marker="data: [DONE]",
            parse=lambda ev: parse_stream_event(ev, provider),  # raises on error events
        )
        async with aclosing(events):
            async for chunk in events:
                if chunk is not None and chunk.raw is not None:
                    yield chunk.raw

    async def health_check(self) -> None:
        await self._http.request("GET", "models", timeout=min(self.config.timeout, 10.0))

    def get_model_info(self) -> ModelInfo:
        context = next((n for p, n in _CONTEXT if self.model.startswith(p)), None)
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self._http.base_url,
            capabilities=Capabilities(
                streaming=True, embeddings=True, tools=True, batching=False, kv_cache=False
            ),
            context_length=context,
        )
