"""Ollama's wire format: request fields from the per-call options, messages in Ollama's
shape, and replies (``/api/chat`` and ``/api/generate``) as llmkit results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from llmkit.core.errors import InvalidRequestError, StreamError
from llmkit.core.tools import model_schema, normalize_tool_choice, tool_call
from llmkit.core.types import ChatResponse, Message, StreamChunk, ToolCall, Usage
from llmkit.http.error_mapping import error_from_payload

__all__ = [
    "OLLAMA_RUNTIME_OPTIONS",
    "OllamaChatResponse",
    "OllamaTimings",
    "checked_line",
    "finish_reason",
    "format_payload",
    "request_fields",
    "select_tools",
    "stream_chunk",
    "tool_calls",
    "usage",
    "wire_messages",
]

# Runtime options Ollama reads from ``options`` (a Modelfile's PARAMETERs), by type.
INT_OPTIONS = frozenset(
    {
        "num_keep", "seed", "num_predict", "draft_num_predict", "top_k", "repeat_last_n",
        "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "mirostat",
        "num_gqa", "num_gpu_layers",
    }
)
FLOAT_OPTIONS = frozenset(
    {
        "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "mirostat_tau", "mirostat_eta", "tfs_z",
    }
)
BOOL_OPTIONS = frozenset(
    {"penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only"}
)
OLLAMA_RUNTIME_OPTIONS = INT_OPTIONS | FLOAT_OPTIONS | BOOL_OPTIONS | {"stop"}

# Portable options that go into ``options`` under Ollama's name.
_IN_OPTIONS = {
    "max_tokens": "num_predict", "temperature": "temperature", "top_p": "top_p",
    "top_k": "top_k", "seed": "seed", "stop": "stop",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
}
# Request fields at the top level of a chat / generate body.
CHAT_FIELDS = frozenset({"format", "keep_alive", "think", "logprobs", "top_logprobs"})
GENERATE_FIELDS = CHAT_FIELDS | {"system", "raw", "suffix", "images", "template", "context"}
THINK_LEVELS = ("low", "medium", "high", "max")
_FINISH = {"stop": "stop", "length": "length"}


class OllamaTimings(BaseModel):
    """Ollama's timings of one reply, in nanoseconds (``None`` where not reported)."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> OllamaTimings | None:
        if "total_duration" not in data and "eval_duration" not in data:
            return None
        return cls.model_construct(
            total_duration=data.get("total_duration"),
            load_duration=data.get("load_duration"),
            prompt_eval_duration=data.get("prompt_eval_duration"),
            eval_duration=data.get("eval_duration"),
        )


class OllamaChatResponse(ChatResponse):
    """A :class:`ChatResponse` with Ollama's ``timings`` (also kept in ``raw``)."""

    timings: OllamaTimings | None = None


# --------------------------------------------------------------------------- requests


def _think(value: Any) -> bool | str:
    if isinstance(value, bool) or value in THINK_LEVELS:
        return value  # type: ignore[no-any-return]
    raise InvalidRequestError(
        f"think must be True, False or one of {', '.join(THINK_LEVELS)}, not {value!r:.60}",
        provider="ollama",
    )


def request_fields(
    send: Mapping[str, Any],
    extra: Mapping[str, Any],
    top_level: frozenset[str] = CHAT_FIELDS,
    per_call: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """The top-level fields and ``options`` of a chat or generate body.

    ``send`` holds what the user set (config sampling fields and per-call options, already
    checked); nothing else is sent, so the model's Modelfile PARAMETERs apply to the rest.
    Precedence, lowest first: the config's sampling fields, ``config.extra["options"]``,
    the call's options (``per_call`` names them), the call's ``options={...}`` dict.
    ``config.extra["keep_alive"]`` / ``["think"]`` apply when the call does not set them.
    """
    fields: dict[str, Any] = {}
    from_config: dict[str, Any] = {}
    from_call: dict[str, Any] = {}
    explicit: Mapping[str, Any] = {}
    for key, value in send.items():
        if key in _IN_OPTIONS or key in OLLAMA_RUNTIME_OPTIONS:
            target = from_call if key in per_call else from_config
            target[_IN_OPTIONS.get(key, key)] = value
        elif key in top_level:
            fields[key] = value
        elif key == "options":
            if not isinstance(value, Mapping):
                raise InvalidRequestError(f"options must be a dict, not {value!r:.60}")
            explicit = value
        elif key == "reasoning_effort":
            if value != "none" and value not in THINK_LEVELS:
                raise InvalidRequestError(
                    f"reasoning_effort must be one of none, {', '.join(THINK_LEVELS)} on Ollama"
                )
            fields.setdefault("think", False if value == "none" else value)
        elif key in GENERATE_FIELDS:
            raise InvalidRequestError(
                f"option {key!r} applies to /api/generate (completion), not to /api/chat",
                provider="ollama",
            )
        else:
            raise InvalidRequestError(f"option {key!r} is not sent to this Ollama endpoint")
    for key in ("keep_alive", "think"):
        if key not in fields and extra.get(key) is not None:
            fields[key] = extra[key]
    if "think" in fields:
        fields["think"] = _think(fields["think"])
    options = {**from_config, **(extra.get("options") or {}), **from_call, **explicit}
    if options:
        fields["options"] = options
    return fields


def format_payload(response_format: Any) -> tuple[Any, Any]:
    """Ollama's ``format`` (``"json"`` or a JSON schema) and the pydantic class, if any."""
    if response_format is None:
        return None, None
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        return model_schema(response_format), response_format
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_object":
            return "json", None
        if kind == "json_schema" and isinstance(response_format.get("json_schema"), Mapping):
            return dict(response_format["json_schema"].get("schema") or {}), None
        if kind == "text":
            return None, None
        return dict(response_format), None
    if response_format == "json":
        return "json", None
    raise InvalidRequestError(f"unsupported response_format: {response_format!r:.80}")


def _images(msg: Message) -> tuple[str, list[str]]:
    """Text and base64 images of a message (OpenAI-style content parts included)."""
    images = list(msg.images or ())
    content = msg.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, Mapping) else url
                    if isinstance(url, str):
                        images.append(url.split(",", 1)[1] if url.startswith("data:") else url)
                elif part.get("type") == "image" and isinstance(part.get("data"), str):
                    images.append(part["data"])
        return "".join(texts), images
    return content or "", images


def wire_messages(msgs: list[Message]) -> list[dict[str, Any]]:
    """Messages in ``ChatMessage`` shape: ``role``, ``content``, ``images``, ``tool_calls``
    (the function only) and, on a tool result, ``tool_name`` (from ``name`` or the call it
    answers); a ``developer`` message is a ``system`` one."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool results
    for msg in msgs:
        role = "system" if str(msg.role) == "developer" else str(msg.role)
        if msg.images is None and (msg.content is None or isinstance(msg.content, str)):
            item: dict[str, Any] = {"role": role, "content": msg.content or ""}
        else:
            text, images = _images(msg)
            item = {"role": role, "content": text}
            if images:
                item["images"] = images
        if msg.tool_calls:  # Ollama's ToolCall is the function alone (no id)
            for tc in msg.tool_calls:
                if tc.id:
                    names[tc.id] = tc.name
            item["tool_calls"] = [
                {"function": {"name": tc.name, "arguments": tc.arguments}} for tc in msg.tool_calls
            ]
        if role == "tool":  # a tool result names its tool (``tool_name``), not a call id
            name = msg.name or (names.get(msg.tool_call_id) if msg.tool_call_id else None)
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def select_tools(tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[dict[str, Any]] | None:
    """Ollama has no ``tool_choice``: ``"none"`` drops the tools, a named function keeps
    only that one; ``"auto"`` and ``"required"`` send them all."""
    if not tools:
        return None
    choice = normalize_tool_choice(tool_choice, tools)
    if choice == "none":
        return None
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        picked = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not picked:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not among the tools")
        return picked
    return tools


# --------------------------------------------------------------------------- replies


def checked_line(obj: Any, provider: str) -> dict[str, Any]:
    """``obj`` if it is a stream object, else the typed error (run inside the transport)."""
    if type(obj) is not dict or "error" in obj:
        if isinstance(obj, dict):
            raise error_from_payload(obj, provider=provider)
        raise StreamError(f"unexpected stream line: {obj!r:.200}", provider=provider)
    return obj


def usage(data: Mapping[str, Any]) -> Usage:
    return Usage.of(data.get("prompt_eval_count"), data.get("eval_count"))


def finish_reason(data: Mapping[str, Any], called_tools: bool) -> str:
    """Normalised: a reply that called tools is ``tool_calls``; ``done_reason`` ``length``
    is ``length``; every other end (``stop``, ``load``, ``unload``) is ``stop``. Ollama's
    own value stays in ``raw``."""
    if called_tools:
        return "tool_calls"
    return _FINISH.get(str(data.get("done_reason")), "stop")


def tool_calls(message: Mapping[str, Any], start: int = 0) -> list[ToolCall]:
    """The calls of a message (each whole, as Ollama sends them): arguments are an object,
    or text that is decoded as such (kept in ``raw_arguments``, with ``arguments_error``
    when it is not a JSON object)."""
    calls = []
    for i, tc in enumerate(message.get("tool_calls") or (), start):
        fn = tc.get("function") or {}
        calls.append(tool_call(str(tc.get("id") or f"call_{i}"), str(fn.get("name", "")),
                               fn.get("arguments")))
    return calls


_CHUNK_DEFAULTS = {
    name: field.default for name, field in StreamChunk.model_fields.items()
    if field.default_factory is None
}


def stream_chunk(**fields: Any) -> StreamChunk:
    """A :class:`StreamChunk` of already well-typed values, built without checks: one per
    streamed line."""
    values = {**_CHUNK_DEFAULTS, **fields}
    if "tool_calls" not in fields:
        values["tool_calls"] = []
    return StreamChunk._trusted(values)


def chat_response(data: Any, model: str, provider: str) -> OllamaChatResponse:
    """A non-streamed ``/api/chat`` or ``/api/generate`` reply."""
    if not isinstance(data, dict):
        raise StreamError(f"unexpected Ollama response: {data!r:.200}", provider=provider)
    message = data.get("message")
    if isinstance(message, dict):
        content, thinking = message.get("content"), message.get("thinking")
        calls = tool_calls(message)
    else:
        content, thinking, calls = data.get("response"), data.get("thinking"), []
    logprobs = data.get("logprobs")
    return OllamaChatResponse(
        content=str(content or ""),
        tool_calls=calls,
        finish_reason=finish_reason(data, bool(calls)),
        usage=usage(data),
        model=str(data.get("model") or model),
        raw=data,
        reasoning=str(thinking) if thinking else None,
        logprobs=logprobs if isinstance(logprobs, list) else None,
        timings=OllamaTimings.of(data),
    )
