"""Tool (function) definitions from OpenAI-style dicts, pydantic models or typed functions."""

from __future__ import annotations

import inspect
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter

from llmkit.errors import InvalidRequestError

__all__ = [
    "ToolSpec",
    "model_schema",
    "normalize_tool_choice",
    "to_openai_tool",
    "to_openai_tools",
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


def normalize_tool_choice(choice: Any) -> Any:
    """``"auto"``/``"none"``/``"required"`` pass; a name becomes OpenAI's object form."""
    if choice is None or isinstance(choice, Mapping):
        return choice
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, type) or callable(choice):
        return {"type": "function", "function": {"name": choice.__name__}}
    raise InvalidRequestError(f"invalid tool_choice: {choice!r}")
