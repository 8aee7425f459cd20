"""Responses API requests: messages as input items (``message``, ``function_call``,
``function_call_output``), tools and ``tool_choice`` in the flat Responses form,
``response_format`` as ``text.format``, and the options under their Responses names
(``max_tokens`` as ``max_output_tokens``, ``reasoning_effort`` as ``reasoning.effort``,
``think`` as ``chat_template_kwargs.enable_thinking`` or ``reasoning.effort``, ``logprobs``
as ``include``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from llmkit.core.errors import InvalidRequestError
from llmkit.core.images import image_url
from llmkit.core.structured import response_format_payload
from llmkit.core.tools import normalize_tool_choice, to_openai_tools
from llmkit.core.types import Message, MessagesInput, normalize_messages

__all__ = ["input_items", "responses_body", "text_format"]

# ----------------------------------------------------------------------- input items


def _image(url: Any, detail: Any = None) -> dict[str, Any]:
    return {"type": "input_image", "image_url": image_url(url), "detail": detail or "auto"}


def _part(part: Any, role: str) -> dict[str, Any]:
    text_kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(part, str):
        return {"type": text_kind, "text": part}
    if not isinstance(part, Mapping):
        raise InvalidRequestError(f"a content part must be a dict or a string, not {type(part).__name__}")
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": text_kind, "text": str(part.get("text", ""))}
    if kind == "image_url":
        spec = part.get("image_url")
        if isinstance(spec, str):
            return _image(spec)
        if isinstance(spec, Mapping) and isinstance(spec.get("url"), str):
            return _image(spec["url"], spec.get("detail"))
        raise InvalidRequestError("an image_url part needs image_url.url")
    if kind == "image":
        source = part.get("image", part.get("url"))
        if not isinstance(source, str):
            raise InvalidRequestError("an image part needs 'image' (a URL, a path or base64 data)")
        return _image(source, part.get("detail"))
    return dict(part)  # input_image / input_file / ... in the Responses form, as given


def _content(m: Message) -> Any:
    role = str(m.role)
    if not m.images and not isinstance(m.content, list):
        return m.content or ""
    parts = [_part(p, role) for p in m.content] if isinstance(m.content, list) else (
        [_part(m.content, role)] if m.content else [])
    parts.extend(_image(img) for img in m.images or ())
    return parts


def _arguments(call: Any) -> str:
    raw = getattr(call, "raw_arguments", None)
    if isinstance(raw, str) and raw:
        return raw
    return orjson.dumps(call.arguments).decode()


def _items(m: Message) -> list[dict[str, Any]]:
    role = str(m.role)
    if role == "tool":
        if not m.tool_call_id:
            raise InvalidRequestError("a tool message needs tool_call_id (the call it answers)")
        return [{"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text()}]
    out: list[dict[str, Any]] = []
    content = _content(m)
    if content or not m.tool_calls:
        # "type": "message" always: llama.cpp cannot tell an untyped assistant item apart
        out.append({"type": "message", "role": role, "content": content})
    for call in m.tool_calls or ():
        out.append({"type": "function_call", "call_id": call.id, "name": call.name,
                    "arguments": _arguments(call)})
    return out


_ROLES = frozenset({"system", "user", "developer"})


def input_items(messages: MessagesInput) -> str | list[dict[str, Any]]:
    """The ``input`` of a request: a bare string stays a string, messages become items."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list) and messages and all(
        type(m) is dict and m.keys() <= {"role", "content"} and m.get("role") in _ROLES
        and type(m.get("content")) is str for m in messages
    ):
        return [{"type": "message", "role": m["role"], "content": m["content"]} for m in messages]
    out: list[dict[str, Any]] = []
    for m in normalize_messages(messages):
        out.extend(_items(m))
    return out


# ----------------------------------------------------------------------- tools, format


def _tool(wire: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions tool definition in the Responses form (flat)."""
    kind = wire.get("type")
    if kind == "function":
        fn = dict(wire["function"])
        fn.pop("type", None)
        return {"type": "function", "name": fn.pop("name"),
                "parameters": fn.pop("parameters", None), "strict": fn.pop("strict", False), **fn}
    if kind == "custom":
        return {"type": "custom", **dict(wire["custom"])}
    return dict(wire)


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, Mapping) and choice.get("type") in ("function", "custom"):
        kind = choice["type"]
        return {"type": kind, "name": choice[kind]["name"]}
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        allowed = choice["allowed_tools"]
        return {"type": "allowed_tools", "mode": allowed["mode"],
                "tools": [_tool_ref(t) for t in allowed["tools"]]}
    return choice


def _tool_ref(tool: Any) -> Any:
    if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
        return {"type": "function", "name": tool["function"].get("name")}
    return tool


def text_format(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions ``response_format`` as the Responses ``text.format``."""
    if payload.get("type") != "json_schema":
        return dict(payload)
    spec = payload["json_schema"]
    out: dict[str, Any] = {"type": "json_schema", "name": spec["name"],
                           "schema": spec.get("schema") or {}}
    if "strict" in spec:
        out["strict"] = spec["strict"]
    if spec.get("description"):
        out["description"] = spec["description"]
    return out


# ----------------------------------------------------------------------- body

_RESERVED = frozenset({"stream", "input", "model", "messages"})


def _wire_options(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in _RESERVED:
            raise InvalidRequestError(f"{key!r} cannot be given as an option here")
        if key in ("max_tokens", "max_completion_tokens"):
            out["max_output_tokens"] = value
        elif key == "reasoning_effort":
            out["reasoning"] = {**out.get("reasoning", {}), "effort": value}
        elif key == "reasoning":
            if not isinstance(value, Mapping):
                raise InvalidRequestError("reasoning must be a dict, e.g. {'effort': 'low', 'summary': 'auto'}")
            out["reasoning"] = {**value, **out.get("reasoning", {})}
        elif key == "think":  # other servers than OpenAI's (refused there)
            if isinstance(value, bool):
                kwargs = {**(options.get("chat_template_kwargs") or {}), "enable_thinking": value}
                out["chat_template_kwargs"] = kwargs
            else:
                out["reasoning"] = {"effort": value, **out.get("reasoning", {})}
        elif key == "chat_template_kwargs" and "chat_template_kwargs" in out:
            out["chat_template_kwargs"] = {**value, **out["chat_template_kwargs"]}
        elif key == "verbosity":
            out["text"] = {**out.get("text", {}), "verbosity": value}
        elif key == "logprobs":
            if value:
                include = list(options.get("include") or ())
                if "message.output_text.logprobs" not in include:
                    include.append("message.output_text.logprobs")
                out["include"] = include
        elif key == "include" and "include" in out:
            continue
        else:
            out[key] = value
    return out


def responses_body(
    model: str,
    messages: MessagesInput,
    options: Mapping[str, Any],
    *,
    tools: Sequence[Any] | None = None,
    tool_choice: Any = None,
    response_format: Any = None,
    stream: bool = False,
    extra_body: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Any]:
    """The ``POST /responses`` body, and the pydantic class to validate the reply into."""
    body: dict[str, Any] = {"model": model, "input": input_items(messages)}
    if options:
        body.update(_wire_options(options))
    wire_tools = to_openai_tools(tools) if tools else None
    if wire_tools:
        body["tools"] = [_tool(t) for t in wire_tools]
    if tool_choice is not None:
        if not wire_tools:
            raise InvalidRequestError("tool_choice is only allowed together with tools")
        body["tool_choice"] = _tool_choice(normalize_tool_choice(tool_choice, wire_tools))
    payload, model_cls = response_format_payload(response_format)
    if payload is not None:
        body["text"] = {**body.get("text", {}), "format": text_format(payload)}
    if stream:
        body["stream"] = True
    if extra_body:
        body.update(extra_body)
    return body, model_cls
