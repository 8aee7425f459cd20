"""Which API a Hugging Face ``base_url`` speaks (``/info`` read once: TGI's messages API,
TGI's ``/generate``, or a plain OpenAI-compatible server), and the calls in TGI's own
``/generate`` wire format (see :mod:`llmkit.providers.huggingface.tgi`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from llmkit.core.errors import InvalidRequestError, LLMError, NotSupportedError
from llmkit.core.options import ClientOptions
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, MessagesInput, StreamChunk, normalize_messages
from llmkit.providers.huggingface import tgi as hf_tgi
from llmkit.providers.huggingface.tgi import TGILimits
from llmkit.providers.openai.client import OpenAICompatible

__all__ = ["HFServerAPI"]


class HFServerAPI(OpenAICompatible):
    """API detection and TGI calls; ``_api`` is set by the subclass when it is known from
    the configuration (the router), else resolved on first use."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._api: str | None = None  # resolved: "router", "openai", "tgi", "tgi-chat"
        self._tgi_info: dict[str, Any] | None = None
        self._limits = TGILimits()
        self._probe: tuple[asyncio.AbstractEventLoop, asyncio.Future[str]] | None = None

    async def _resolve_api(self) -> str:
        """The API to speak; in the TGI modes (and ``auto``) ``/info`` is read once first,
        by one shared task however many calls start at once."""
        if self._api is not None:
            return self._api
        loop = asyncio.get_running_loop()
        probe = self._probe
        if probe is None or probe[0] is not loop:
            task: asyncio.Future[str] = loop.create_task(self._detect())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._probe = probe = (loop, task)
        try:
            api = await asyncio.shield(probe[1])
        except BaseException:
            if self._probe is probe and probe[1].done():
                self._probe = None  # probe again next time
            raise
        self._api = api
        return api

    async def _detect(self) -> str:
        explicit = self.config.extra.get("api")
        try:
            info = await self._http.request(
                "GET", "info", retry=False, timeout=min(self.config.timeout, 10.0)
            )
        except LLMError as exc:
            if exc.status in (400, 404, 405, 422):  # no /info: limits unknown
                return str(explicit) if explicit in ("tgi", "tgi-chat") else "openai"
            raise
        is_tgi = isinstance(info, dict) and ("model_id" in info or "max_total_tokens" in info)
        if is_tgi:
            assert isinstance(info, dict)
            self._tgi_info = info
            self._limits = TGILimits.of(info)
        if explicit in ("tgi", "tgi-chat"):
            return str(explicit)
        if not is_tgi:
            return "openai"
        m = re.match(r"(\d+)\.(\d+)", str(info.get("version") or ""))
        if m and (int(m.group(1)), int(m.group(2))) < (1, 4):
            return "tgi"
        return "tgi-chat"

    # ------------------------------------------------------------------ TGI

    def _tgi_messages_options(
        self, options: dict[str, Any], response_format: Any
    ) -> tuple[dict[str, Any], Any]:
        """Options for TGI's messages API: limits checked, ``response_format`` in TGI's
        shape through ``extra_body`` (the OpenAI shape is rejected by TGI)."""
        send, _ = self._options({k: v for k, v in options.items() if k != "model"})
        self._limits.check(send, self.provider)
        fmt, model_cls = hf_tgi.grammar(response_format)
        if fmt is not None:
            options = {**options, "extra_body": {"response_format": fmt, **(options.get("extra_body") or {})}}
        return options, model_cls

    def _tgi_send(self, options: dict[str, Any], tools: Sequence[Any] | None) -> tuple[dict[str, Any], ClientOptions]:
        if tools:
            raise NotSupportedError(
                "tools need TGI's messages API (extra['api']='tgi-chat')", provider=self.provider
            )
        options.pop("model", None)
        send, client = self._options(options)
        for name in send.keys() & hf_tgi.GENERATE_UNSUPPORTED.keys():
            raise InvalidRequestError(
                f"option {name!r}: {hf_tgi.GENERATE_UNSUPPORTED[name]}", provider=self.provider
            )
        self._limits.check(send, self.provider)
        return send, client

    async def _tgi_chat(
        self, messages: MessagesInput, tools: Sequence[Any] | None, response_format: Any,
        options: dict[str, Any],
    ) -> ChatResponse:
        send, client = self._tgi_send(options, tools)
        body, stops, model_cls = hf_tgi.generate_body(
            normalize_messages(messages), send, response_format, stream=False
        )
        if client.extra_body:
            body.update(client.extra_body)
        data = await self._http.request("POST", "generate", json=body, model=self.model, client=client)
        response = hf_tgi.generate_response(
            data, stops, self.model, self.provider, None, None, bool(send.get("logprobs"))
        )
        self._record_usage(response.usage)  # counted also when the reply does not validate
        if response_format is not None:
            response.parsed = parse_structured(
                response.content, model_cls or response_format, self.provider, response
            )
        return response

    async def _tgi_stream(
        self, messages: MessagesInput, tools: Sequence[Any] | None, response_format: Any,
        options: dict[str, Any],
    ) -> AsyncGenerator[StreamChunk, None]:
        send, client = self._tgi_send(options, tools)
        body, stops, _ = hf_tgi.generate_body(
            normalize_messages(messages), send, response_format, stream=True
        )
        if client.extra_body:
            body.update(client.extra_body)
        provider = self.provider
        events = self._http.stream(
            "POST", "generate_stream", json=body, kind="sse", is_last=hf_tgi.stream_last,
            model=self.model, end_marker="the final event (generated_text)",
            parse=lambda ev: hf_tgi.stream_event(ev, provider), client=client,
        )
        usage = None
        try:
            async with aclosing(events), aclosing(hf_tgi.generate_stream_chunks(events, stops)) as chunks:
                async for chunk in chunks:
                    usage = chunk.usage or usage
                    yield chunk
        finally:
            self._record_usage(usage)
