"""A deterministic example value for a JSON schema (the mock provider's structured replies).

Covers what pydantic's ``model_json_schema()`` emits: ``$ref``/``$defs`` (recursive models
included), ``anyOf``/``oneOf``/``allOf``, ``enum``/``const``, nullable types, objects with
required and defaulted properties, arrays and tuples (``prefixItems``), string formats and
length limits, numeric bounds and ``multipleOf``. Strings are the property's name, so an
example reads like the model it was built from (``{"city": "city", "celsius": 0.0}``).
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["SchemaExampleError", "example_from_schema"]

# Values that match pydantic's (and JSON Schema's) common string formats.
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "PT1S",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "hostname": "example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uuid1": "00000000-0000-1000-8000-000000000000",
    "uuid3": "00000000-0000-3000-8000-000000000000",
    "uuid4": "00000000-0000-4000-8000-000000000000",
    "uuid5": "00000000-0000-5000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "ipvanyaddress": "127.0.0.1",
    "ipv4network": "127.0.0.0/8",
    "ipvanynetwork": "127.0.0.0/8",
    "ipv4interface": "127.0.0.1/8",
    "ipvanyinterface": "127.0.0.1/8",
    "path": "example.txt",
}
_TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")
_MAX_DEPTH = 32


class SchemaExampleError(ValueError):
    """The schema has a constraint this builder cannot satisfy (e.g. a ``pattern``)."""


def example_from_schema(schema: dict[str, Any]) -> Any:
    """A value valid against ``schema``; the same schema always gives the same value."""
    return _Builder(schema.get("$defs") or schema.get("definitions") or {}).build(schema, "value")


class _Builder:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.active_refs: list[str] = []  # the $ref chain being built: recursion guard

    def build(self, schema: Any, name: str, variant: int = 0) -> Any:
        if schema is True or schema == {}:
            return name
        if not isinstance(schema, dict):
            raise SchemaExampleError(f"unsupported schema {schema!r}")
        if len(self.active_refs) > _MAX_DEPTH:
            raise SchemaExampleError("schema nests too deeply")
        if "$ref" in schema:
            return self._ref(schema, name, variant)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            values = schema["enum"]
            return values[variant % len(values)] if values else None
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged.update(self._resolve(part))
            return self.build(merged, name, variant)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.build(self._pick_branch(schema[key]), name, variant)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            if self.recursing and "null" in kind:
                kinds = ["null"]
            kind = min(kinds, key=_TYPE_ORDER.index)
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else None
        if kind is None:
            return name
        return getattr(self, f"_{kind}")(schema, name, variant)

    @property
    def recursing(self) -> bool:
        return len(set(self.active_refs)) < len(self.active_refs)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        target = self.defs.get(ref.rsplit("/", 1)[-1])
        if not isinstance(target, dict):
            raise SchemaExampleError(f"unresolvable $ref {ref!r}")
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}

    def _ref(self, schema: dict[str, Any], name: str, variant: int) -> Any:
        ref = schema["$ref"]
        if self.active_refs.count(ref) > 1:
            raise SchemaExampleError(f"{ref} has no finite instance (it always contains itself)")
        self.active_refs.append(ref)
        try:
            return self.build(self._resolve(schema), name, variant)
        finally:
            self.active_refs.pop()

    def _pick_branch(self, branches: list[Any]) -> Any:
        """The first branch that is not ``null``; ``null`` inside a recursive model."""
        non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if (self.recursing and len(non_null) < len(branches)) or not non_null:
            return {"type": "null"}
        return non_null[0]

    def _object(self, schema: dict[str, Any], name: str, variant: int) -> dict[str, Any]:
        required = set(schema.get("required", ()))
        out: dict[str, Any] = {}
        for prop, sub in (schema.get("properties") or {}).items():
            if prop in required:
                out[prop] = self.build(sub, prop, variant)
            elif isinstance(sub, dict) and "default" in sub:
                out[prop] = sub["default"]
            elif not self.recursing:
                out[prop] = self.build(sub, prop, variant)
        extra = schema.get("additionalProperties")
        for i in range(max(0, int(schema.get("minProperties", 0)) - len(out))):
            out[f"key{i}"] = self.build(extra if isinstance(extra, dict) else {}, f"key{i}", i)
        return out

    def _array(self, schema: dict[str, Any], name: str, variant: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        count = max(low, len(prefix), 0 if self.recursing else 1)
        if high is not None:
            count = min(count, int(high))
        if items is False:
            count = min(count, len(prefix))
        out = [self.build(sub, name, variant + i) for i, sub in enumerate(prefix[:count])]
        out += [self.build(items, name, variant + i) for i in range(len(out), count)]
        return out

    def _string(self, schema: dict[str, Any], name: str, variant: int) -> str:
        value = _FORMATS.get(schema.get("format", ""), name) or "value"
        if variant and value == name:
            value = f"{name}{variant}"
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(value) < low:
            value += "x" * (low - len(value))
        if high is not None and len(value) > int(high):
            value = value[: int(high)]
        pattern = schema.get("pattern")
        if pattern is not None and re.search(pattern, value) is None:
            raise SchemaExampleError(f"cannot make up a string for {name!r} matching {pattern!r}")
        return value

    def _integer(self, schema: dict[str, Any], name: str, variant: int) -> int:
        return int(self._number(schema, name, variant, integer=True))

    def _number(
        self, schema: dict[str, Any], name: str, variant: int, *, integer: bool = False
    ) -> float:
        """``variant`` when the bounds allow it, else the nearest allowed value."""
        low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
        high, high_open = _bound(schema, "maximum", "exclusiveMaximum")

        def allowed(v: float) -> bool:
            above = low is None or v > low or (v == low and not low_open)
            below = high is None or v < high or (v == high and not high_open)
            return above and below

        candidates = [float(variant)]
        if low is not None:
            candidates.append(low + 1 if low_open else low)
        if high is not None:
            candidates.append(high - 1 if high_open else high)
        if low is not None and high is not None:
            candidates.append((low + high) / 2)
        multiple = schema.get("multipleOf")
        for value in candidates:
            options = [math.ceil(value), math.floor(value)] if integer else [value]
            if multiple:
                options = [f(value / multiple) * multiple for f in (math.ceil, math.floor)]
            for option in options:
                if allowed(option) and (not integer or float(option).is_integer()):
                    return option
        raise SchemaExampleError(f"no number for {name!r} within the schema's bounds")

    def _boolean(self, schema: dict[str, Any], name: str, variant: int) -> bool:
        return variant % 2 == 0

    def _null(self, schema: dict[str, Any], name: str, variant: int) -> None:
        return None


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    """A range's bound and whether it is exclusive."""
    if isinstance(schema.get(exclusive), int | float):
        return float(schema[exclusive]), True
    if isinstance(schema.get(inclusive), int | float):
        return float(schema[inclusive]), False
    return None, False
