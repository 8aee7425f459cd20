"""Structured output: ``response_format`` values checked and turned into OpenAI's
``response_format`` body (a pydantic class as a strict JSON schema, as openai-python's
``.parse()`` sends it), and replies validated into the requested pydantic model: a reply
that does not match is a :class:`ReplyValidationError`, one cut by the token limit a
:class:`ReplyTruncatedError`, both carrying the whole response."""

from __future__ import annotations

import copy
import json
import logging
import weakref
from typing import Any

from pydantic import BaseModel, ValidationError

from llmkit.core.errors import InvalidRequestError, ReplyTruncatedError, ReplyValidationError
from llmkit.core.tools import model_schema

__all__ = ["parse_structured", "response_format_payload", "strict_schema"]

log = logging.getLogger("llmkit.structured")


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
        schema, why_not = strict_schema(response_format)  # built once per class
        if why_not is not None and response_format not in _told:
            _told.add(response_format)
            log.warning(
                "response_format %s is sent with strict: false: its schema cannot be strict (%s)",
                response_format.__name__, why_not,
            )
        return (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": response_format.__name__, "schema": schema, "strict": why_not is None,
                },
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


def parse_structured(
    text: str, response_format: Any, provider: str | None, response: Any = None
) -> Any:
    """The reply validated into a pydantic model class (or decoded JSON otherwise).
    ``response`` is the whole :class:`~llmkit.ChatResponse`: a reply that does not
    validate raises :class:`ReplyValidationError` with it, one cut by the token limit
    (``finish_reason == "length"``) :class:`ReplyTruncatedError`."""
    cut = response is not None and getattr(response, "finish_reason", None) == "length"
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        try:
            return response_format.model_validate_json(_strip_fences(text))
        except ValidationError as exc:
            name = response_format.__name__
            if cut:
                raise _truncated(name, response, provider) from None
            raise ReplyValidationError(
                f"reply does not match {name}: {exc.errors(include_url=False)[:3]}",
                provider=provider, response=response,
            ) from None
    try:
        return json.loads(_strip_fences(text))
    except ValueError:
        if cut:
            raise _truncated("JSON", response, provider) from None
        return None


def _truncated(name: str, response: Any, provider: str | None) -> ReplyTruncatedError:
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "completion_tokens", 0)
    return ReplyTruncatedError(
        f"the token limit cut the reply after {tokens} completion tokens, before it was "
        f"complete {name} (finish_reason 'length'): raise max_tokens",
        provider=provider, response=response,
    )


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t


# ----------------------------------------------------------------------- strict schemas

_told: weakref.WeakSet[type[BaseModel]] = weakref.WeakSet()
_STRICT_CACHE: weakref.WeakKeyDictionary[type[BaseModel], tuple[dict[str, Any], str | None]] = (
    weakref.WeakKeyDictionary()
)
_logged: set[str] = set()


def strict_schema(model: type[BaseModel]) -> tuple[dict[str, Any], str | None]:
    """The strict form of ``model``'s JSON schema, as OpenAI's structured outputs take it and
    openai-python's ``.parse()`` sends it: every object closed (``additionalProperties:
    false``), every property required (an optional one is already nullable in pydantic's
    schema: ``X | None``), ``default: null`` dropped, a lone ``allOf`` and a ``$ref`` with
    siblings inlined. Returns (schema, None), or (pydantic's own schema, the reason) when
    the schema cannot be strict (an object with open keys, e.g. a ``dict[str, int]``
    field). Built once per class."""
    cached = _STRICT_CACHE.get(model)
    if cached is None:
        original = model_schema(model)
        schema = copy.deepcopy(original)
        try:
            cached = (_strict(schema, schema, ()), None)
        except _NotStrict as exc:
            cached = (original, str(exc))
        _STRICT_CACHE[model] = cached
    return cached


class _NotStrict(Exception):
    pass


def _where(path: tuple[str, ...]) -> str:
    return "/".join(path) or "the root"


def _strict(node: Any, root: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _NotStrict(f"schema at {_where(path)} is not an object")
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                _strict(sub, root, (*path, key, name))
    if "patternProperties" in node:
        raise _NotStrict(f"{_where(path)} has patternProperties")
    if node.get("type") == "object":
        extra = node.setdefault("additionalProperties", False)
        if extra is not False:
            raise _NotStrict(f"{_where(path)} allows keys of its own (a dict field)")
    props = node.get("properties")
    if isinstance(props, dict):
        node["required"] = list(props)
        node["properties"] = {k: _strict(v, root, (*path, "properties", k)) for k, v in props.items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root, (*path, "items"))
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(v, root, (*path, "anyOf", str(i))) for i, v in enumerate(node["anyOf"])]
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) == 1:
            node.update(_strict(all_of[0], root, (*path, "allOf", "0")))
            node.pop("allOf")
        else:
            node["allOf"] = [_strict(v, root, (*path, "allOf", str(i))) for i, v in enumerate(all_of)]
    if "default" in node and node["default"] is None:
        node.pop("default")
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        target = _resolve(root, ref)
        node.update({**target, **node})
        node.pop("$ref")
        return _strict(node, root, path)
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise _NotStrict(f"$ref {ref!r} is not local")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    if not isinstance(target, dict):
        raise _NotStrict(f"$ref {ref!r} does not resolve")
    return target
