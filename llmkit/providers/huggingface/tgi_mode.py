"""TGI's own ``/generate`` API as a mode of
:class:`~llmkit.providers.huggingface.client.HuggingFaceLLM` (TGI before 1.4, or
``extra["api"] = "tgi"``): messages rendered to one prompt, TGI's limits checked before
sending, ``response_format`` as TGI's grammar. The wire format is
:mod:`llmkit.providers.huggingface.tgi`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from llmkit.core.errors import InvalidRequestError, NotSupportedError
from llmkit.core.options import ClientOptions
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, MessagesInput, StreamChunk, normalize_messages
from llmkit.providers.huggingface import tgi as hf_tgi
from llmkit.providers.huggingface.detect import ServerDetection
from llmkit.providers.openai.client import OpenAICompatible

__all__ = ["TGIGenerateMode"]


class TGIGenerateMode:
    """Chat and streams through ``POST /generate`` and ``/generate_stream``."""

    def __init__(self, owner: OpenAICompatible, detection: ServerDetection) -> None:
        self.owner = owner
        self.detection = detection

    def _send(
        self, options: Mapping[str, Any], tools: Sequence[Any] | None
    ) -> tuple[dict[str, Any], ClientOptions]:
        owner = self.owner
        if tools:
            raise NotSupportedError(
                "tools need TGI's messages API (extra['api']='tgi-chat')", provider=owner.provider
            )
        send, client = owner._options({k: v for k, v in options.items() if k != "model"})
        for name in send.keys() & hf_tgi.GENERATE_UNSUPPORTED.keys():
            raise InvalidRequestError(
                f"option {name!r}: {hf_tgi.GENERATE_UNSUPPORTED[name]}", provider=owner.provider
            )
        self.detection.limits.check(send, owner.provider)
        return send, client

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
        send, client = self._send(options, tools)
        body, stops, model_cls = hf_tgi.generate_body(
            normalize_messages(messages), send, response_format, stream=False
        )
        if client.extra_body:
            body.update(client.extra_body)
        data = await owner._http.request(
            "POST", "generate", json=body, model=owner.model, client=client
        )
        response = hf_tgi.generate_response(
            data, stops, owner.model, owner.provider, None, None, bool(send.get("logprobs"))
        )
        owner._record_usage(response.usage)  # counted also when the reply does not validate
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
        owner = self.owner
        send, client = self._send(options, tools)
        body, stops, _ = hf_tgi.generate_body(
            normalize_messages(messages), send, response_format, stream=True
        )
        if client.extra_body:
            body.update(client.extra_body)
        provider = owner.provider
        events = owner._http.stream(
            "POST", "generate_stream", json=body, kind="sse", is_last=hf_tgi.stream_last,
            model=owner.model, end_marker="the final event (generated_text)",
            parse=lambda ev: hf_tgi.stream_event(ev, provider), client=client,
        )
        usage = None
        try:
            async with aclosing(events), aclosing(hf_tgi.generate_stream_chunks(events, stops)) as chunks:
                async for chunk in chunks:
                    usage = chunk.usage or usage
                    yield chunk
        finally:
            owner._record_usage(usage)

    async def text_stream(
        self, messages: MessagesInput, options: Mapping[str, Any]
    ) -> AsyncGenerator[str, None]:
        stream = self.stream(
            messages, tools=None, tool_choice=None, response_format=None, options=options
        )
        async with aclosing(stream):
            async for chunk in stream:
                if chunk.delta:
                    yield chunk.delta

    async def health(self, timeout: float) -> None:
        await self.owner._http.request("GET", "health", timeout=timeout, parse="bytes", retry=False)
