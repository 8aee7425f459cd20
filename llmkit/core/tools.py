"""Tool (function) definitions from OpenAI-style dicts, pydantic models or typed functions,
and the decoding of a tool call's arguments as a server sent them."""

from __future__ import annotations

import inspect
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter

from llmkit.core.errors import InvalidRequestError
from llmkit.core.types import ToolCall

__all__ = [
    "ToolSpec",
    "decode_arguments",
    "model_schema",
    "normalize_tool_choice",
    "to_openai_tool",
    "to_openai_tools",
    "tool_call",
]

ToolSpec = Mapping[str, Any] | type[BaseModel] | Callable[..., Any]


# Schemas and tool definitions are built once per class or function (building one costs
# about a millisecond); the cache lets go of classes and functions nobody else holds.
_schemas: weakref.WeakKeyDictionary[type[BaseModel], dict[str, Any]] = weakref.WeakKeyDictionary()
_tools: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model.model_json_schema()``, built once per class (shared: do not mutate)."""
    schema = _schemas.get(model)
    if schema is None:
        schema = _schemas[model] = model.model_json_schema()
    return schema


def _from_model(model: type[BaseModel]) -> dict[str, Any]:
    schema = dict(model_schema(model))
    description = schema.pop("description", None) or (inspect.getdoc(model) or "")
    schema.pop("title", None)
    fn: dict[str, Any] = {"name": model.__name__, "parameters": schema}
    if description:
        fn["description"] = description
    return {"type": "function", "function": fn}


def _from_function(func: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolved forward references
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, Any)
        try:
            prop = TypeAdapter(annotation).json_schema()
        except Exception:
            prop = {}
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            try:
                TypeAdapter(type(param.default)).dump_json(param.default)
                prop.setdefault("default", param.default)
            except Exception:
                pass
        properties[name] = prop
    doc = inspect.getdoc(func) or ""
    fn: dict[str, Any] = {
        "name": func.__name__,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }
    if doc:
        fn["description"] = doc.split("\n\n")[0]
    return {"type": "function", "function": fn}


def _build_tool(tool: Callable[..., Any]) -> dict[str, Any]:
    if isinstance(tool, type) and issubclass(tool, BaseModel):
        return _from_model(tool)
    return _from_function(tool)


def to_openai_tool(tool: ToolSpec) -> dict[str, Any]:
    if isinstance(tool, Mapping):
        if tool.get("type") == "function" and "function" in tool:
            return dict(tool)
        if tool.get("type") == "custom" and isinstance(tool.get("custom"), Mapping):
            if not isinstance(tool["custom"].get("name"), str):
                raise InvalidRequestError("a custom tool needs custom.name")
            return dict(tool)
        if "name" in tool and ("parameters" in tool or "description" in tool):
            return {"type": "function", "function": dict(tool)}
        raise InvalidRequestError(
            "a tool dict must be OpenAI-style: {'type': 'function', 'function': {...}}"
        )
    if callable(tool):  # a pydantic model class or a typed function
        try:
            built = _tools.get(tool)
        except TypeError:  # not weakly referenceable (a builtin): built each time
            return _build_tool(tool)
        if built is None:
            built = _tools[tool] = _build_tool(tool)
        return {"type": "function", "function": built["function"]}
    raise InvalidRequestError(f"cannot make a tool of {type(tool).__name__}")


def to_openai_tools(tools: Sequence[ToolSpec] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    return [to_openai_tool(t) for t in tools]


def _tool_name(tool: Mapping[str, Any]) -> tuple[str, str]:
    kind = str(tool.get("type") or "function")
    spec = tool.get(kind)
    name = spec.get("name") if isinstance(spec, Mapping) else None
    return kind, str(name) if name is not None else ""


def _named(kind: str, name: Any, tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"tool_choice of type {kind!r} needs {kind}.name")
    if tools is not None:
        names = {n: k for k, n in map(_tool_name, tools)}
        if name not in names:
            raise InvalidRequestError(
                f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})"
            )
        kind = names[name]
    return {"type": kind, kind: {"name": name}}


def normalize_tool_choice(choice: Any, tools: Sequence[Mapping[str, Any]] | None = None) -> Any:
    """OpenAI's ``tool_choice`` for ``choice``, checked: ``"auto"``, ``"none"``,
    ``"required"``; the name of one of ``tools`` (a string, a pydantic class or a
    function), which becomes the named form; or an object form (``function``, ``custom``,
    ``allowed_tools``). Anything else is an :class:`InvalidRequestError`. ``tools`` are
    the wire tool definitions (None: names are not checked against them)."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        if tools is not None and choice in {n for _, n in map(_tool_name, tools)}:
            return _named("function", choice, tools)
        raise InvalidRequestError(
            f"invalid tool_choice {choice!r}: use 'auto', 'none', 'required' or the name of "
            "one of the tools"
        )
    if isinstance(choice, Mapping):
        kind = choice.get("type", "function")
        if kind == "allowed_tools":
            allowed = choice.get("allowed_tools")
            if (
                not isinstance(allowed, Mapping)
                or allowed.get("mode") not in ("auto", "required")
                or not isinstance(allowed.get("tools"), list)
            ):
                raise InvalidRequestError(
                    "tool_choice allowed_tools needs {'mode': 'auto'|'required', 'tools': [...]}"
                )
            return dict(choice)
        if kind in ("function", "custom"):
            spec = choice.get(kind)
            name = spec.get("name") if isinstance(spec, Mapping) else choice.get("name")
            return _named(kind, name, tools)
        raise InvalidRequestError(f"invalid tool_choice type {kind!r}")
    if isinstance(choice, type) or callable(choice):
        return _named("function", getattr(choice, "__name__", None), tools)
    raise InvalidRequestError(f"invalid tool_choice: {choice!r}")


# ----------------------------------------------------------------------- arguments


def decode_arguments(raw: Any) -> tuple[dict[str, Any], str, str | None]:
    """A tool call's arguments as the server sent them: (the decoded JSON object, the
    exact text, why it is not one). Text that is not valid JSON, or JSON that is not an
    object, gives ``{}`` and the reason; nothing is wrapped or invented. An object (Ollama,
    TGI send one) is taken as it is, its text the compact JSON of it; empty text is ``{}``."""
    if isinstance(raw, dict):
        return raw, _dumps(raw), None
    if raw is None or raw == "":
        return {}, "", None
    if not isinstance(raw, str):
        text = _dumps(raw)
        return {}, text, f"arguments are not a JSON object (got {_kind(raw)})"
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {}, raw, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, raw, f"arguments are not a JSON object (got {_kind(value)})"
    return value, raw, None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def tool_call(call_id: str, name: str, raw: Any, **extra: Any) -> ToolCall:
    arguments, text, error = decode_arguments(raw)
    return ToolCall(call_id, name, arguments, raw_arguments=text, arguments_error=error, **extra)
