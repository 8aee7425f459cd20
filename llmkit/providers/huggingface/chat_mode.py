"""The OpenAI-compatible chat wire as a mode of
:class:`~llmkit.providers.huggingface.client.HuggingFaceLLM`: the Inference Providers router,
a plain OpenAI-compatible server, and TGI's messages API (``/v1/chat/completions``, TGI >=
1.4), for which TGI's limits are checked and ``response_format`` goes out in TGI's shape
(the OpenAI shape is rejected by TGI). The requests themselves are the chat-completions wire
of the OpenAI client the instance is built on (:mod:`llmkit.providers.openai.chat`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, MessagesInput, StreamChunk
from llmkit.providers.huggingface import tgi as hf_tgi
from llmkit.providers.huggingface.detect import ServerDetection
from llmkit.providers.openai.compatible import OpenAICompatible

__all__ = ["ChatWireMode"]


class ChatWireMode:
    """Chat, streams and text streams through ``/v1/chat/completions``."""

    def __init__(self, owner: OpenAICompatible, detection: ServerDetection) -> None:
        self.owner = owner
        self.detection = detection

    @property
    def _tgi(self) -> bool:
        return self.detection.api == "tgi-chat"

    def _tgi_options(
        self, options: Mapping[str, Any], response_format: Any
    ) -> tuple[dict[str, Any], Any]:
        """Options for TGI's messages API: limits checked, ``response_format`` in TGI's
        shape through ``extra_body``; also the model class to validate the reply into."""
        owner = self.owner
        send, _ = owner._options({k: v for k, v in options.items() if k != "model"})
        self.detection.limits.check(send, owner.provider)
        fmt, model_cls = hf_tgi.grammar(response_format)
        out = dict(options)
        if fmt is not None:
            out["extra_body"] = {"response_format": fmt, **(options.get("extra_body") or {})}
        return out, model_cls

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        options: Mapping[str, Any],
    ) -> ChatResponse:
        owner = self.owner
        if not self._tgi:
            return await OpenAICompatible.chat(
                owner, messages, tools=tools, tool_choice=tool_choice,
                response_format=response_format, **options,
            )
        sent, model_cls = self._tgi_options(options, response_format)
        response = await OpenAICompatible.chat(
            owner, messages, tools=tools, tool_choice=tool_choice, **sent
        )
        if response_format is not None:
            response.parsed = parse_structured(
                response.content, model_cls or response_format, owner.provider, response
            )
        return response

    async def stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        options: Mapping[str, Any],
    ) -> AsyncGenerator[StreamChunk, None]:
        sent = dict(options)
        if self._tgi:
            sent, _ = self._tgi_options(options, response_format)
            response_format = None
        stream = OpenAICompatible.chat_stream(
            self.owner, messages, tools=tools, tool_choice=tool_choice,
            response_format=response_format, **sent,
        )
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def text_stream(
        self, messages: MessagesInput, options: Mapping[str, Any]
    ) -> AsyncGenerator[str, None]:
        if self._tgi:
            chunks = self.stream(
                messages, tools=None, tool_choice=None, response_format=None, options=options
            )
            async with aclosing(chunks):
                async for chunk in chunks:
                    if chunk.delta:
                        yield chunk.delta
            return
        texts = OpenAICompatible.generate_stream(self.owner, messages, **options)
        async with aclosing(texts):
            async for text in texts:
                yield text

    async def health(self, timeout: float) -> None:
        http = self.owner._http
        if self._tgi:
            await http.request("GET", "health", timeout=timeout, parse="bytes", retry=False)
        else:
            await http.request("GET", "v1/models", timeout=timeout, retry=False)
