"""OpenAI chat-completions requests: wire messages (image parts included), the options
translated to the names a server documents, tools, ``tool_choice`` and ``response_format``
checked, the body assembled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from llmkit.base import response_format_payload
from llmkit.core.errors import ConfigError, InvalidRequestError
from llmkit.core.images import image_url
from llmkit.core.tools import normalize_tool_choice, to_openai_tools
from llmkit.core.types import Message, MessagesInput, normalize_messages

from .options import REMOVED_OPTIONS

__all__ = [
    "chat_body",
    "is_openai_host",
    "max_tokens_field",
    "message_to_openai",
    "openai_messages",
    "refused_options",
]

# top_k and the other sampling fields OpenAI's own API lacks go out under their names to
# every OpenAI-compatible server (vLLM, llama.cpp, TGI, LM Studio take them); only
# api.openai.com and Azure OpenAI are known to refuse them.
_NOT_ON_OPENAI = {
    "top_k": "api.openai.com has no top_k (OpenAI-compatible servers such as vLLM and "
    "llama.cpp take it)",
    "think": "OpenAI's API controls reasoning with reasoning_effort",
}


def is_openai_host(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def refused_options(base_url: str) -> dict[str, str]:
    """The options a server at ``base_url`` cannot honour, and why: vLLM's removed
    ``guided_*`` fields everywhere, ``top_k`` and ``think`` on api.openai.com and Azure."""
    refused = dict(REMOVED_OPTIONS)
    if is_openai_host(base_url):
        refused.update(_NOT_ON_OPENAI)
    return refused


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
    return "max_completion_tokens" if is_openai_host(base_url) else "max_tokens"


# ----------------------------------------------------------------------- messages


def _image_part(value: Any, detail: Any = None) -> dict[str, Any]:
    url: dict[str, Any] = {"url": image_url(value)}
    if detail is not None:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


def _content_part(part: Any) -> Any:
    """One content part in OpenAI's form: strings become text parts, image parts get a URL
    (a local file or base64 data becomes a data URL); other parts pass as given."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise InvalidRequestError(f"a content part must be a dict or a string, not {type(part).__name__}")
    kind = part.get("type")
    if kind == "image_url":
        spec = part.get("image_url")
        if isinstance(spec, str):
            return _image_part(spec)
        if isinstance(spec, Mapping) and isinstance(spec.get("url"), str):
            return _image_part(spec["url"], spec.get("detail"))
        raise InvalidRequestError("an image_url part needs image_url.url")
    if kind == "image":  # {"type": "image", "image": <url, path or base64>} or "url"
        source = part.get("image", part.get("url"))
        if not isinstance(source, str):
            raise InvalidRequestError("an image part needs 'image' (a URL, a path or base64 data)")
        return _image_part(source, part.get("detail"))
    return part


def _content(m: Message) -> Any:
    content = m.content
    if not m.images and not isinstance(content, list):
        return content
    parts: list[Any] = []
    if isinstance(content, list):
        parts.extend(_content_part(p) for p in content)
    elif content:
        parts.append({"type": "text", "text": content})
    parts.extend(_image_part(img) for img in m.images or ())
    return parts


def message_to_openai(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": _content(m)}
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


# ----------------------------------------------------------------------- body

_RESERVED = frozenset({"stream", "messages", "model"})


def _wire_options(options: Mapping[str, Any], max_tokens_name: str) -> dict[str, Any]:
    """The options under their wire names: ``max_tokens`` as ``max_tokens_name``; ``think``
    (servers other than OpenAI's) as ``chat_template_kwargs.enable_thinking`` for True /
    False, or ``reasoning_effort`` for a level."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in _RESERVED:
            raise InvalidRequestError(f"{key!r} cannot be given as an option here")
        if key == "max_tokens":
            out[max_tokens_name] = value
        elif key == "think":
            if isinstance(value, bool):
                kwargs = dict(options.get("chat_template_kwargs") or {})
                kwargs["enable_thinking"] = value
                out["chat_template_kwargs"] = kwargs
            else:
                out.setdefault("reasoning_effort", options.get("reasoning_effort", value))
        elif key == "chat_template_kwargs" and "chat_template_kwargs" in out:
            out["chat_template_kwargs"] = {**value, **out["chat_template_kwargs"]}
        else:
            out[key] = value
    return out


def chat_body(
    model: str,
    messages: MessagesInput,
    options: Mapping[str, Any],
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
    ``options`` are the checked options to send (see :func:`resolve_options`);
    ``extra_body`` is merged last, as given."""
    body: dict[str, Any] = {"model": model, "messages": openai_messages(messages)}
    if options:
        body.update(_wire_options(options, max_tokens_field))
    wire_tools = to_openai_tools(tools) if tools else None
    if wire_tools:
        body["tools"] = wire_tools
    if tool_choice is not None:
        if not wire_tools:
            raise InvalidRequestError("tool_choice is only allowed together with tools")
        body["tool_choice"] = normalize_tool_choice(tool_choice, wire_tools)
    payload, model_cls = response_format_payload(response_format)
    if payload is not None:
        body["response_format"] = payload
    if stream:
        body["stream"] = True
        if include_usage and "stream_options" not in body:
            body["stream_options"] = {"include_usage": True}
    if extra_body:
        body.update(extra_body)
    return body, model_cls
