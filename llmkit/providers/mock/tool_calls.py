"""The mock's tool calls, answered as a server that honours ``tool_choice`` would.

The tools are checked as every provider checks them (a bad tool or a ``tool_choice`` naming
no tool is an :class:`InvalidRequestError`). When ``tool_choice`` forces a call
(``"required"``, a named tool, ``allowed_tools`` in ``required`` mode) the reply is one
tool call whose arguments are made up from the tool's parameter schema (deterministic);
``"auto"``, ``"none"`` or no choice give the text reply (a server may choose not to call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmkit.core.errors import InvalidRequestError, NotSupportedError
from llmkit.core.schema_example import SchemaExampleError, example_from_schema
from llmkit.core.tools import normalize_tool_choice, to_openai_tools, tool_call
from llmkit.core.types import ToolCall

__all__ = ["forced_tool_call"]


def _spec_named(specs: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    for spec in specs:
        kind = str(spec.get("type") or "function")
        body = spec.get(kind)
        if isinstance(body, Mapping) and body.get("name") == name:
            return spec
    return None


def _chosen(specs: Sequence[Mapping[str, Any]], choice: Any) -> Mapping[str, Any] | None:
    """The tool ``choice`` forces, or None when the model may answer in text."""
    if choice in (None, "auto", "none"):
        return None
    if choice == "required":
        return specs[0]
    if choice["type"] == "allowed_tools":
        allowed = choice["allowed_tools"]
        if allowed["mode"] != "required":
            return None
        for entry in allowed["tools"]:
            name = entry.get("name") or (entry.get(entry.get("type", "function")) or {}).get("name")
            spec = _spec_named(specs, name) if isinstance(name, str) else None
            if spec is not None:
                return spec
        raise InvalidRequestError("tool_choice allowed_tools names none of the tools")
    kind = choice["type"]
    return _spec_named(specs, choice[kind]["name"])


def forced_tool_call(tools: Sequence[Any] | None, tool_choice: Any, provider: str) -> ToolCall | None:
    """The tool call ``tool_choice`` forces for ``tools``, or None."""
    specs = to_openai_tools(tools) if tools else None
    choice = normalize_tool_choice(tool_choice, specs)
    if choice in (None, "auto", "none"):
        return None
    if not specs:
        raise InvalidRequestError(
            f"tool_choice {tool_choice!r} needs tools", provider=provider, param="tool_choice"
        )
    spec = _chosen(specs, choice)
    if spec is None:
        return None
    kind = str(spec.get("type") or "function")
    body = spec[kind]
    name = str(body["name"])
    if kind == "custom":
        return ToolCall("call_mock_0", name, {"input": ""}, type="custom")
    schema = body.get("parameters") or {"type": "object", "properties": {}}
    try:
        arguments = example_from_schema(dict(schema))
    except SchemaExampleError as exc:
        raise NotSupportedError(
            f"MockLLM cannot make up arguments for tool {name!r} from its parameter schema "
            f"({exc}); script the call with a custom provider instead",
            provider=provider,
        ) from None
    return tool_call("call_mock_0", name, arguments)
