"""OpenAI and OpenAI-compatible servers (``provider="openai"``, :class:`OpenAILLM`): keys,
organization and project, the raw endpoints, model info; the calls themselves are
:class:`~llmkit.providers.openai.compatible.OpenAICompatible`'s."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

from llmkit.core.config import LLMConfig
from llmkit.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    LLMError,
    register_secret,
)
from llmkit.core.options import Unpack
from llmkit.core.types import (
    Capabilities,
    ChatResponse,
    MessagesInput,
    ModelInfo,
    Usage,
)
from llmkit.http.transport import HTTPTransport
from llmkit.providers.openai.chat import (
    OpenAIOptions,
    context_from_models,
    context_from_props,
    decode_event,
    is_done,
    is_openai_host,
    known_context_length,
    parse_usage,
    refused_options,
)
from llmkit.providers.openai.chat.models import looks_like_llama_cpp
from llmkit.providers.openai.compatible import OpenAICompatible
from llmkit.providers.openai.responses import ResponsesAPI, responses_api

__all__ = ["OpenAICompatible", "OpenAILLM"]

_HEALTH_TIMEOUT = 10.0


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
