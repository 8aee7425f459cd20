"""OpenAI chat-completions wire format: request bodies, responses and stream chunks.
Shared by the OpenAI provider and the OpenAI-compatible APIs of Hugging Face."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from llmkit.base import response_format_payload
from llmkit.errors import ConfigError, StreamError, error_from_payload
from llmkit.streaming import SSEEvent
from llmkit.tools import normalize_tool_choice, to_openai_tools
from llmkit.types import (
    ChatResponse,
    Message,
    MessagesInput,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    normalize_messages,
)

__all__ = [
    "ToolCallAssembler",
    "chat_body",
    "message_to_openai",
    "parse_chat_response",
    "parse_stream_event",
    "parse_usage",
]

_DROP = {"stream", "messages", "model"}

# Documented request fields passed through by name: OpenAI's chat-completions fields that
# are not portable options, and the sampling extensions of llama.cpp's and vLLM's servers.
OPENAI_PROVIDER_OPTIONS: frozenset[str] = frozenset(
    {
        # OpenAI
        "logit_bias", "parallel_tool_calls", "user", "service_tier", "store", "metadata",
        "modalities", "audio", "prediction", "web_search_options", "verbosity",
        "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
        "max_completion_tokens", "stream_options",
        # llama.cpp server
        "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "mirostat", "mirostat_tau",
        "mirostat_eta", "grammar", "json_schema", "cache_prompt", "n_probs", "samplers",
        "dynatemp_range", "dynatemp_exponent", "xtc_probability", "xtc_threshold",
        "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n",
        "id_slot", "n_keep", "n_indent", "t_max_predict_ms", "reasoning_format",
        "chat_template_kwargs", "timings_per_token", "post_sampling_probs", "return_tokens",
        "ignore_eos",
        # vLLM
        "repetition_penalty", "min_tokens", "best_of", "use_beam_search", "length_penalty",
        "skip_special_tokens", "include_stop_str_in_output", "stop_token_ids",
        "guided_json", "guided_regex", "guided_choice", "guided_grammar",
        "structured_outputs", "add_generation_prompt", "continue_final_message",
        "chat_template", "truncate_prompt_tokens",
    }
)


def max_tokens_field(base_url: str, extra: Mapping[str, Any]) -> str:
    """The body field of the max_tokens option: ``max_completion_tokens`` on
    api.openai.com (``max_tokens`` is deprecated there and refused by reasoning models),
    ``max_tokens`` on other servers; ``extra["max_tokens_field"]`` overrides."""
    override = extra.get("max_tokens_field")
    if override is not None:
        if override not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                "extra['max_tokens_field'] must be 'max_tokens' or 'max_completion_tokens', "
                f"not {override!r}"
            )
        return str(override)
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "api.openai.com" or host.endswith(".openai.azure.com"):
        return "max_completion_tokens"
    return "max_tokens"


def message_to_openai(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        d["name"] = m.name
    if m.tool_calls:
        d["tool_calls"] = [tc.to_openai() for tc in m.tool_calls]
        if not m.content:
            d["content"] = None
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    return d


_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
_PLAIN_KEYS = frozenset({"role", "content", "name"})


def openai_messages(messages: MessagesInput) -> list[dict[str, Any]]:
    """Wire messages. Plain strings and simple ``{"role", "content"}`` dicts take a fast
    path; everything else goes through :func:`normalize_messages` for validation."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, list) and messages:
        out: list[dict[str, Any]] = []
        for m in messages:
            if (
                type(m) is dict
                and m.keys() <= _PLAIN_KEYS
                and m.get("role") in _ROLES
                and type(m.get("content")) is str
            ):
                out.append(m)
            else:
                break
        else:
            return out
    return [message_to_openai(m) for m in normalize_messages(messages)]


def chat_body(
    model: str,
    messages: MessagesInput,
    options: dict[str, Any],
    *,
    tools: Sequence[Any] | None = None,
    tool_choice: Any = None,
    response_format: Any = None,
    stream: bool = False,
    include_usage: bool = True,
    max_tokens_field: str = "max_tokens",
    extra_body: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Any]:
    """The request body, and the pydantic class to validate the reply into (if any).
    ``options`` are the checked options to send; ``max_tokens`` goes out as
    ``max_tokens_field``; ``extra_body`` is merged last."""
    body: dict[str, Any] = {
        "model": model,
        "messages": openai_messages(messages),
    }
    for key, value in options.items():
        if key in _DROP or value is None:
            continue
        body[max_tokens_field if key == "max_tokens" else key] = value
    if tools:
        body["tools"] = to_openai_tools(tools)
    if tool_choice is not None:
        body["tool_choice"] = normalize_tool_choice(tool_choice)
    payload, model_cls = response_format_payload(response_format)
    if payload is not None:
        body["response_format"] = payload
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    if extra_body:
        body.update(extra_body)
    return body, model_cls


def parse_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    p = data.get("prompt_tokens") or 0
    c = data.get("completion_tokens") or 0
    t = data.get("total_tokens") or (p + c)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=t)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def parse_tool_calls(raw: Any) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for tc in raw or ():
        fn = tc.get("function") or {}
        calls.append(
            ToolCall(id=tc.get("id") or "", name=fn.get("name") or "", arguments=_arguments(fn.get("arguments")))
        )
    return calls


# What a field of an unexpected type raises while a response or chunk is decoded.
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)


def parse_chat_response(data: Any, model: str, provider: str) -> ChatResponse:
    try:
        return _parse_chat_response(data, model, provider)
    except _SHAPE_ERRORS as exc:
        raise error_from_payload(
            None, status=200, provider=provider,
            default_message=f"unexpected response shape ({type(exc).__name__}): {str(data)[:200]}",
        ) from None


def _parse_chat_response(data: Any, model: str, provider: str) -> ChatResponse:
    if not isinstance(data, dict):
        raise error_from_payload(
            None, status=200, provider=provider, default_message="response is not a JSON object"
        )
    if "error" in data and "choices" not in data:
        raise error_from_payload(data, status=500, provider=provider)
    choices = data.get("choices") or []
    if not choices:
        raise error_from_payload(
            None, status=200, provider=provider, default_message="response has no choices"
        )
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ChatResponse(
        content=content or "",
        tool_calls=parse_tool_calls(message.get("tool_calls")),
        finish_reason=choice.get("finish_reason"),
        usage=parse_usage(data.get("usage")) or Usage(),
        model=data.get("model") or model,
        raw=data,
    )


def is_done(ev: SSEEvent) -> bool:
    return ev.raw == b"[DONE]"


def _decode_event(ev: SSEEvent, provider: str) -> dict[str, Any] | None:
    """The event's JSON object; ``None`` for the [DONE] marker and empty events. Error
    events raise their typed error (a :class:`StreamError` unless the body says more)."""
    raw = ev.raw
    if raw == b"[DONE]" or not raw.strip():
        return None
    obj = ev.json()
    if type(obj) is not dict:
        raise StreamError(f"unexpected stream event: {ev.data[:200]!r}", provider=provider)
    if "error" in obj or ev.event == "error":
        raise error_from_payload(obj, status=None, provider=provider)
    return obj


def _shape_error(ev: SSEEvent, provider: str, exc: Exception) -> StreamError:
    return StreamError(
        f"unexpected stream event ({type(exc).__name__}): {ev.data[:200]!r}", provider=provider
    )


def parse_stream_event(ev: SSEEvent, provider: str) -> StreamChunk | None:
    """A chunk from one SSE event (``None`` for the [DONE] marker and empty events);
    :class:`StreamError` for an event that is not a chunk."""
    try:
        obj = _decode_event(ev, provider)
        if obj is None:
            return None
        usage = obj.get("usage")
        choices = obj.get("choices")
        if not choices:
            return StreamChunk(usage=parse_usage(usage) if usage else None, raw=obj)
        choice = choices[0]
        delta = choice.get("delta") or {}
        tcs = delta.get("tool_calls")
        return StreamChunk(
            delta=delta.get("content") or "",
            tool_calls=[
                ToolCallDelta(
                    index=tc.get("index", i),
                    id=tc.get("id"),
                    name=(tc.get("function") or {}).get("name"),
                    arguments=(tc.get("function") or {}).get("arguments") or "",
                )
                for i, tc in enumerate(tcs)
            ]
            if tcs
            else [],
            finish_reason=choice.get("finish_reason"),
            usage=parse_usage(usage) if usage else None,
            raw=obj,
        )
    except _SHAPE_ERRORS as exc:
        raise _shape_error(ev, provider, exc) from None


def parse_stream_text(ev: SSEEvent, provider: str) -> tuple[str, Usage | None] | None:
    """Only the text delta and usage of one SSE event (the light path of text streams)."""
    try:
        obj = _decode_event(ev, provider)
        if obj is None:
            return None
        usage = obj.get("usage")
        choices = obj.get("choices")
        text = (choices[0].get("delta") or {}).get("content") if choices else None
        if text is not None and type(text) is not str:
            raise TypeError("content is not a string")
        return text or "", (parse_usage(usage) if usage else None)
    except _SHAPE_ERRORS as exc:
        raise _shape_error(ev, provider, exc) from None


class ToolCallAssembler:
    """Joins streamed tool-call deltas into complete :class:`ToolCall` objects."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: Sequence[ToolCallDelta]) -> None:
        for d in deltas:
            call = self._calls.setdefault(d.index, {"id": "", "name": "", "arguments": []})
            if d.id:
                call["id"] = d.id
            if d.name:
                call["name"] = d.name
            if d.arguments:
                call["arguments"].append(d.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=c["id"], name=c["name"], arguments=_arguments("".join(c["arguments"])))
            for _, c in sorted(self._calls.items())
        ]
