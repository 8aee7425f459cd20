"""The Responses API calls of an OpenAI provider instance (``extra={"api": "responses"}``):
``chat``, ``chat_stream``, ``generate_stream`` and the raw ``create_response``, through the
instance's own transport (so rate limits, retries, metrics and hooks are the same)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Protocol

from llmkit.core.config import LLMConfig
from llmkit.core.errors import ConfigError, InvalidRequestError
from llmkit.core.options import ClientOptions
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, MessagesInput, StreamChunk, Usage
from llmkit.http.transport import HTTPTransport

from .events import ResponseEvents, decode, is_last
from .options import chat_refusals, responses_refusals
from .request import responses_body
from .response import parse_response, parse_usage

__all__ = ["RESPONSES_PATH", "Provider", "ResponsesAPI", "responses_api"]


class Provider(Protocol):
    """What the Responses calls use of the OpenAI instance they belong to."""

    config: LLMConfig
    _http: HTTPTransport
    _unsupported: Mapping[str, str]

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...

    def _chat_model(self) -> str: ...
    def _options(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], ClientOptions]: ...
    def _record_usage(self, usage: Usage | None) -> None: ...

RESPONSES_PATH = "responses"
_END = "response.completed (or response.incomplete / response.failed)"


class ResponsesAPI:
    """Sends one provider instance's calls to ``POST /responses``."""

    def __init__(self, llm: Provider) -> None:
        self.llm = llm

    def _request(
        self, messages: MessagesInput, options: Mapping[str, Any], *, tools: Sequence[Any] | None,
        tool_choice: Any, response_format: Any, stream: bool = False,
    ) -> tuple[dict[str, Any], Any, ClientOptions]:
        """(body, pydantic class of the reply or None, client options) of one call."""
        llm = self.llm
        model = options.get("model") or llm._chat_model()
        if "model" in options:
            options = {k: v for k, v in options.items() if k != "model"}
        opts, client = llm._options(options)
        body, model_cls = responses_body(
            model, messages, opts, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=stream, extra_body=client.extra_body,
        )
        return body, model_cls, client

    async def chat(
        self, messages: MessagesInput, *, tools: Sequence[Any] | None, tool_choice: Any,
        response_format: Any, options: Mapping[str, Any],
    ) -> ChatResponse:
        llm = self.llm
        body, model_cls, client = self._request(
            messages, options, tools=tools, tool_choice=tool_choice, response_format=response_format,
        )
        model = body["model"]
        data = await llm._http.request("POST", RESPONSES_PATH, json=body, model=model, client=client)
        response = parse_response(data, model, llm.provider)
        llm._record_usage(response.usage)
        if response_format is not None and response.refusal is None:
            # a reply that does not validate is a ReplyValidationError, one the token limit
            # cut (status "incomplete") a ReplyTruncatedError; both carry the response
            response.parsed = parse_structured(
                response.content, model_cls or response_format, llm.provider, response
            )
        return response

    def _open(
        self, messages: MessagesInput, options: Mapping[str, Any], parse: Callable[[ResponseEvents], Any],
        *, tools: Sequence[Any] | None, tool_choice: Any, response_format: Any,
    ) -> AsyncGenerator[Any, None]:
        body, _, client = self._request(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=True,
        )
        state = ResponseEvents(self.llm.provider)
        return self.llm._http.stream(
            "POST", RESPONSES_PATH, json=body, kind="sse", is_last=is_last, model=body["model"],
            end_marker=_END, parse=parse(state), client=client,
        )

    async def chat_stream(
        self, messages: MessagesInput, *, tools: Sequence[Any] | None, tool_choice: Any,
        response_format: Any, options: Mapping[str, Any],
    ) -> AsyncGenerator[StreamChunk, None]:
        events = self._open(messages, options, lambda s: s.chunk, tools=tools,
                            tool_choice=tool_choice, response_format=response_format)
        usage: Usage | None = None
        try:
            async with aclosing(events):
                async for chunk in events:
                    if chunk is not None:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        yield chunk
        finally:
            self.llm._record_usage(usage)

    async def generate_stream(
        self, messages: MessagesInput, *, tools: Sequence[Any] | None, tool_choice: Any,
        response_format: Any, options: Mapping[str, Any],
    ) -> AsyncGenerator[str, None]:
        events = self._open(messages, options, lambda s: s.text, tools=tools,
                            tool_choice=tool_choice, response_format=response_format)
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
            self.llm._record_usage(usage)

    # ------------------------------------------------------------ raw

    async def create_response(self, request: dict[str, Any]) -> Any:
        if not isinstance(request, dict):
            raise InvalidRequestError("request must be a dict")
        llm = self.llm
        body = {"model": llm.model, **request}
        if body.get("stream"):
            return self._raw_stream(body)
        data = await llm._http.request("POST", RESPONSES_PATH, json=body, model=body["model"])
        if isinstance(data, dict):
            llm._record_usage(_usage_or_none(data.get("usage")))
        return data

    async def _raw_stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        llm = self.llm
        provider = llm.provider
        events = llm._http.stream(
            "POST", RESPONSES_PATH, json=body, kind="sse", is_last=is_last, model=body["model"],
            end_marker=_END, parse=lambda ev: decode(ev, provider),
        )
        usage: Usage | None = None
        try:
            async with aclosing(events):
                async for obj in events:
                    if obj is None:
                        continue
                    response = obj.get("response")
                    if isinstance(response, dict) and response.get("usage"):
                        usage = _usage_or_none(response["usage"]) or usage
                    yield obj
        finally:
            llm._record_usage(usage)


def _usage_or_none(raw: Any) -> Usage | None:
    try:
        return parse_usage(raw)
    except (TypeError, ValueError):
        return None



def responses_api(llm: Provider, openai_host: bool) -> ResponsesAPI | None:
    """The Responses API of ``llm`` when its config says ``extra={"api": "responses"}``
    (None for chat completions, the default); sets the options each API refuses."""
    api = llm.config.extra.get("api", "chat")
    if api in ("chat", "chat_completions"):
        llm._unsupported = {**llm._unsupported, **chat_refusals()}
        return None
    if api != "responses":
        raise ConfigError(f"extra['api'] must be 'chat' or 'responses', not {api!r}")
    llm._unsupported = responses_refusals(llm._unsupported, openai_host)
    return ResponsesAPI(llm)
