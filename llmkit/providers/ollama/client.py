"""Ollama's native API (``provider="ollama"``): ``/api/chat``, ``/api/generate``,
``/api/embed``; model management is in :mod:`llmkit.providers.ollama.models`, the wire
mapping in :mod:`llmkit.providers.ollama.wire`."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from llmkit.base import parse_structured
from llmkit.core.config import normalize_ollama_host
from llmkit.core.errors import InvalidRequestError, StreamError
from llmkit.core.options import CallOptions, ClientOptions, Unpack
from llmkit.core.tools import to_openai_tools
from llmkit.core.types import (
    Capabilities,
    MessagesInput,
    ModelInfo,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    normalize_messages,
)
from llmkit.providers.ollama.modelfile import parse_modelfile
from llmkit.providers.ollama.models import OllamaModelAPI, full_name
from llmkit.providers.ollama.wire import (
    CHAT_FIELDS,
    GENERATE_FIELDS,
    OLLAMA_RUNTIME_OPTIONS,
    OllamaChatResponse,
    OllamaTimings,
    chat_response,
    checked_line,
    finish_reason,
    format_payload,
    request_fields,
    select_tools,
    stream_chunk,
    tool_calls,
    usage,
    wire_messages,
)

__all__ = ["OllamaChatResponse", "OllamaLLM", "OllamaTimings", "parse_modelfile"]

_checked = checked_line  # the name the security tests use

DEFAULT_BASE_URL = "http://localhost:11434"


class OllamaLLM(OllamaModelAPI):
    """A local or remote Ollama server.

    A request carries only the options the caller set (config or call): ``max_tokens`` is
    ``options.num_predict``, the other sampling options go into ``options`` under Ollama's
    names; ``think`` (True/False or ``"low"``/``"medium"``/``"high"``), ``keep_alive``,
    ``format``, ``logprobs`` and ``top_logprobs`` are top-level fields; Ollama's runtime
    options (``num_ctx``, ``min_p``, ...) may be given by name or in ``options={...}``.
    ``config.extra`` understands ``options`` (sent with every request), ``keep_alive``,
    ``think``, ``embedding_model`` and ``embedding_batch_size`` (default 256).
    """

    provider_name: ClassVar[str] = "ollama"
    provider_options: ClassVar[frozenset[str]] = (
        GENERATE_FIELDS | OLLAMA_RUNTIME_OPTIONS | {"options", "model"}
    ) - {"logprobs", "top_logprobs", "think"}
    unsupported_options: ClassVar[dict[str, str]] = {"n": "Ollama returns one reply per request"}
    embedding_batch_size: ClassVar[int] = 256

    def _base_url(self) -> str:
        raw = self.config.base_url
        if not raw:
            env = os.environ.get("OLLAMA_BASE_URL") or os.environ.get("OLLAMA_HOST")
            raw = normalize_ollama_host(env) if env else DEFAULT_BASE_URL
        elif "://" not in raw:
            raw = normalize_ollama_host(raw)
        return raw.rstrip("/")

    # ------------------------------------------------------------------ request bodies

    def _fields(
        self, options: dict[str, Any], top_level: frozenset[str]
    ) -> tuple[str, dict[str, Any], ClientOptions]:
        model = options.pop("model", None) or self.model
        per_call = {k for k, v in options.items() if v is not None}
        send, client = self._options(options)
        fields = request_fields(send, self.config.extra, top_level, per_call)
        return str(model), fields, client

    def _chat_body(
        self,
        messages: MessagesInput,
        options: dict[str, Any],
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        stream: bool,
    ) -> tuple[dict[str, Any], str, Any, bool, ClientOptions]:
        msgs = normalize_messages(messages)
        model, fields, client = self._fields(options, CHAT_FIELDS)
        fmt, model_cls = format_payload(response_format)
        if fmt is not None:
            fields.setdefault("format", fmt)  # an explicit format= wins on the wire
        structured = "format" in fields
        body: dict[str, Any] = {"model": model, "messages": wire_messages(msgs), "stream": stream}
        wire_tools = select_tools(to_openai_tools(tools), tool_choice)
        if wire_tools:
            body["tools"] = wire_tools
        body.update(fields)
        if client.extra_body:
            body.update(client.extra_body)
        return body, model, model_cls or response_format, structured, client

    def _generate_body(
        self, prompt: str, options: dict[str, Any], stream: bool
    ) -> tuple[dict[str, Any], str, ClientOptions]:
        if not isinstance(prompt, str):
            raise InvalidRequestError("prompt must be a string", provider=self.provider)
        model, fields, client = self._fields(options, GENERATE_FIELDS)
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream, **fields}
        if client.extra_body:
            body.update(client.extra_body)
        return body, model, client

    # ------------------------------------------------------------------ chat

    async def generate(self, messages: MessagesInput, **options: Unpack[CallOptions]) -> str:
        return (await self.chat(messages, **options)).content

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> OllamaChatResponse:
        """One chat turn (``POST /api/chat``, not streamed). ``response_format`` (a pydantic
        class, a JSON schema dict or ``"json"``) becomes Ollama's ``format`` and the reply
        is validated into ``parsed``; ``thinking`` text is ``reasoning``, the durations
        are ``timings``."""
        body, model, model_cls, structured, client = self._chat_body(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=False,
        )
        data = await self._http.request("POST", "api/chat", json=body, model=model, client=client)
        response = chat_response(data, model, self.provider)
        self._record_usage(response.usage)
        if structured and not response.tool_calls:
            response.parsed = parse_structured(
                response.content, model_cls, self.provider, response
            )
        return response

    async def chat_stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream a chat turn: text and ``reasoning`` (thinking) deltas, tool calls
        (``tool_calls`` deltas as they come, all of them in ``completed_tool_calls`` on the
        last chunk), then the chunk with ``finish_reason`` and ``usage``."""
        body, model, _, _, client = self._chat_body(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=True,
        )
        lines = self._ndjson("api/chat", body, model, client=client)
        async with aclosing(_chunks(lines, self)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def generate_stream(
        self, messages: MessagesInput, **options: Any
    ) -> AsyncGenerator[str, None]:
        tools = options.pop("tools", None)
        response_format = options.pop("response_format", None)
        body, model, _, _, client = self._chat_body(
            messages, options, tools=tools, tool_choice=options.pop("tool_choice", None),
            response_format=response_format, stream=True,
        )
        done: Usage | None = None
        try:
            async with aclosing(self._ndjson("api/chat", body, model, client=client)) as lines:
                async for obj in lines:
                    message = obj.get("message")
                    if message:
                        delta = message.get("content")
                        if delta:
                            yield delta
                    if obj.get("done") is True:
                        done = usage(obj)
        finally:
            self._record_usage(done)

    # ------------------------------------------------------------------ /api/generate

    async def completion(self, prompt: str, **options: Any) -> OllamaChatResponse:
        """Raw completion (``POST /api/generate``, not streamed) as a full response:
        ``content``, ``reasoning`` (with ``think``), ``logprobs``, ``timings``, ``usage``.
        Besides the generation options it takes ``system``, ``raw``, ``suffix``,
        ``images``, ``template``, ``context``, ``format``, ``keep_alive``, ``think`` and
        ``model``."""
        body, model, client = self._generate_body(prompt, options, stream=False)
        data = await self._http.request("POST", "api/generate", json=body, model=model, client=client)
        response = chat_response(data, model, self.provider)
        self._record_usage(response.usage)
        return response

    async def completion_stream(self, prompt: str, **options: Any) -> AsyncGenerator[StreamChunk, None]:
        """:meth:`completion`, streamed: text and ``reasoning`` deltas, then the chunk with
        ``finish_reason`` and ``usage`` (its ``raw`` holds the durations and ``context``)."""
        body, model, client = self._generate_body(prompt, options, stream=True)
        lines = self._ndjson("api/generate", body, model, client=client)
        async with aclosing(_chunks(lines, self)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def generate_completion(self, prompt: str, **options: Any) -> str:
        """The text of :meth:`completion`."""
        return (await self.completion(prompt, **options)).content

    # ------------------------------------------------------------------ embeddings

    async def _embed_request(self, texts: list[str]) -> list[list[float]]:
        model = self._embedding_model()
        body: dict[str, Any] = {"model": model, "input": texts}
        extra = self.config.extra
        for key in ("truncate", "dimensions", "keep_alive"):
            if extra.get(key) is not None:
                body[key] = extra[key]
        if extra.get("options"):
            body["options"] = dict(extra["options"])
        data = await self._http.request("POST", "api/embed", json=body, model=model)
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            got = len(vectors) if isinstance(vectors, list) else "no"
            raise StreamError(
                f"/api/embed returned {got} vectors for {len(texts)} inputs", provider=self.provider
            )
        self._record_usage(Usage.of(data.get("prompt_eval_count"), 0))
        return [[float(x) for x in v] for v in vectors]

    # ------------------------------------------------------------------ health, info

    async def health_check(self) -> None:
        await self._http.request(
            "GET", "api/version", timeout=min(self.config.timeout, 10.0), retry=False
        )

    def get_model_info(self) -> ModelInfo:
        """Capabilities, and the context length once :meth:`show_model` has fetched it."""
        shown = self._shown.get(full_name(self.model)) or {}
        context: int | None = None
        info = shown.get("model_info")
        if isinstance(info, dict):
            for key, value in info.items():
                if key.endswith(".context_length") and isinstance(value, int):
                    context = value
                    break
        details = shown.get("details")
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self._http.base_url,
            capabilities=Capabilities(
                streaming=True, embeddings=True, tools=True, batching=False, kv_cache=False
            ),
            context_length=context,
            details=dict(details) if isinstance(details, dict) else {},
        )


async def _chunks(
    lines: AsyncGenerator[dict[str, Any], None], llm: OllamaLLM
) -> AsyncGenerator[StreamChunk, None]:
    """Stream chunks of ``/api/chat`` or ``/api/generate`` lines, built without validation.
    Usage is recorded on ``llm`` however the stream ends."""
    calls: list[ToolCall] = []
    construct = stream_chunk
    done: Usage | None = None
    try:
        async with aclosing(lines):
            async for obj in lines:
                message = obj.get("message")
                if message is not None:
                    delta = message.get("content") or ""
                    thinking = message.get("thinking") or ""
                else:
                    delta = obj.get("response") or ""
                    thinking = obj.get("thinking") or ""
                deltas: list[ToolCallDelta] = []
                if message is not None and message.get("tool_calls"):
                    new = tool_calls(message, len(calls))
                    for i, call in enumerate(new, len(calls)):
                        deltas.append(
                            ToolCallDelta.model_construct(
                                index=i, id=call.id, name=call.name,
                                arguments=call.raw_arguments,
                            )
                        )
                    calls.extend(new)
                logprobs = obj.get("logprobs")
                if obj.get("done") is True:
                    done = usage(obj)
                    yield construct(
                        delta=delta, reasoning=thinking, tool_calls=deltas,
                        finish_reason=finish_reason(obj, bool(calls)), usage=done,
                        completed_tool_calls=list(calls) if calls else None,
                        logprobs=logprobs, raw=obj,
                    )
                elif delta or thinking or deltas or logprobs:
                    yield construct(
                        delta=delta, reasoning=thinking, tool_calls=deltas, logprobs=logprobs,
                        raw=obj,
                    )
    finally:
        llm._record_usage(done)
