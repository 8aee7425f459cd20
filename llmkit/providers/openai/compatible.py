"""What every OpenAI-compatible server gets (:class:`OpenAICompatible`): chat completions
and their streams, embeddings, the Responses API when chosen; the OpenAI-specific parts
(keys, organization, raw endpoints, model info) are :mod:`llmkit.providers.openai.client`."""

from __future__ import annotations

import array
import base64
import functools
import sys
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from llmkit.base import parse_structured
from llmkit.core.config import LLMConfig
from llmkit.core.errors import (
    StreamError,
)
from llmkit.core.options import ClientOptions, Unpack, resolve_options
from llmkit.core.types import (
    ChatResponse,
    MessagesInput,
    StreamChunk,
    Usage,
)
from llmkit.providers.http_provider import HTTPProvider
from llmkit.providers.openai.chat import (
    OPENAI_PROVIDER_OPTIONS,
    OpenAIOptions,
    ToolCallAssembler,
    chat_body,
    is_done,
    max_tokens_field,
    parse_chat_response,
    parse_stream_event,
    parse_stream_text,
)
from llmkit.providers.openai.chat.options import REMOVED_OPTIONS
from llmkit.providers.openai.responses import ResponsesAPI

__all__ = ["OpenAICompatible"]


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
