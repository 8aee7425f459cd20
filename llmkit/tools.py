"""Tool (function) definitions from OpenAI-style dicts, pydantic models or typed functions."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter

from llmkit.errors import InvalidRequestError

__all__ = ["ToolSpec", "normalize_tool_choice", "to_openai_tool", "to_openai_tools"]

ToolSpec = Mapping[str, Any] | type[BaseModel] | Callable[..., Any]


def _from_model(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
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


def to_openai_tool(tool: ToolSpec) -> dict[str, Any]:
    if isinstance(tool, Mapping):
        if tool.get("type") == "function" and "function" in tool:
            return dict(tool)
        if "name" in tool and ("parameters" in tool or "description" in tool):
            return {"type": "function", "function": dict(tool)}
        raise InvalidRequestError(
            "a tool dict must be OpenAI-style: {'type': 'function', 'function': {...}}"
        )
    if isinstance(tool, type) and issubclass(tool, BaseModel):
        return _from_model(tool)
    if callable(tool):
        return _from_function(tool)
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
