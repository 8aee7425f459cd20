"""Structured output: ``response_format`` values checked and turned into OpenAI's
``response_format`` body, and replies validated into the requested pydantic model."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from llmkit.core.errors import InvalidRequestError
from llmkit.core.tools import model_schema

__all__ = ["parse_structured", "response_format_payload"]


_SCHEMA_KEYS = frozenset(
    {"type", "properties", "$schema", "$ref", "anyOf", "oneOf", "allOf", "enum", "items", "$defs"}
)


def response_format_payload(response_format: Any) -> tuple[dict[str, Any] | None, Any]:
    """OpenAI ``response_format`` body for a pydantic class, a JSON schema dict, an
    OpenAI-style dict (checked) or ``"json"`` / ``"text"``; returns (payload, model class
    or None). Anything else is an :class:`InvalidRequestError`."""
    if response_format is None:
        return None, None
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        schema = model_schema(response_format)  # built once per class
        return (
            {
                "type": "json_schema",
                "json_schema": {"name": response_format.__name__, "schema": schema, "strict": False},
            },
            response_format,
        )
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise InvalidRequestError(
                    "response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}"
                )
            if "schema" in spec and not isinstance(spec["schema"], dict):
                raise InvalidRequestError("response_format json_schema.schema must be an object")
            return dict(response_format), None
        if kind in ("json_object", "text"):
            return dict(response_format), None
        if response_format.keys() & _SCHEMA_KEYS:  # a bare JSON schema
            return {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": response_format},
            }, None
    elif response_format in ("json", "json_object"):
        return {"type": "json_object"}, None
    elif response_format == "text":
        return {"type": "text"}, None
    raise InvalidRequestError(
        f"unsupported response_format {response_format!r:.100}: use a pydantic class, a JSON "
        "schema, 'json', or OpenAI's {'type': 'json_schema' | 'json_object' | 'text'}"
    )


def parse_structured(text: str, response_format: Any, provider: str | None) -> Any:
    """The reply validated into a pydantic model class (or decoded JSON otherwise)."""
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        try:
            return response_format.model_validate_json(_strip_fences(text))
        except ValidationError as exc:
            raise InvalidRequestError(
                f"reply does not match {response_format.__name__}: {exc.errors()[:3]}",
                provider=provider,
            ) from None
    try:
        return json.loads(_strip_fences(text))
    except ValueError:
        return None


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t

