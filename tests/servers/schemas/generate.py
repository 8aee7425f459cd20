"""Make the in-repo schema set (``tests/servers/schemas/<spec>.json``) from the providers'
official OpenAPI files.

Each output file holds the components of one specification with what validation needs and
nothing else: names, ``type``, ``required``, ``enum``, ``nullable``, ``$ref`` between
components, ``additionalProperties``, bounds, patterns, formats and ``discriminator`` (the
validator reads it). Descriptions, titles, defaults, examples and ``x-`` extensions are
dropped; a keyword this script does not know stops it (so nothing is dropped by accident).
Draft 2019-09 recursion (``$recursiveRef``), which Draft 2020-12 validators reject, becomes a
``$ref`` to the component itself. The header of each file records the source file, its
``info`` version and its SHA-256.

    python -m tests.servers.schemas.generate            # write, from $LLMKIT_SPECS or ../shared/specs
    python -m tests.servers.schemas.generate --check    # exit 1, naming the schemas that differ

``tests/test_spec_schemas.py`` runs the check wherever the official files are present.
``openai-batch.json`` next to the generated files is hand-written (the batch line formats are
in OpenAI's Batch guide, not in the OpenAPI file) and is not touched here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.servers.schemas import HERE, SOURCES, Source, default_specs

REPO_ROOT = HERE.parents[2]
GENERATOR = "tests/servers/schemas/generate.py"

# --------------------------------------------------------------------------- keywords

_COMPONENTS = "#/components/"

# Keywords whose value is a schema, a map of schemas, or a list of schemas.
_SCHEMA_ONE = frozenset({
    "items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
    "unevaluatedProperties", "unevaluatedItems", "additionalItems",
})
_SCHEMA_MAP = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs"})
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
# Keywords kept as they are (their values are data, not schemas).
_KEPT = frozenset({
    "type", "enum", "const", "required", "nullable", "format", "$ref",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "dependentRequired",
    "$recursiveRef", "$recursiveAnchor",  # rewritten by recursion_as_ref
    # spec_validation checks a discriminated oneOf as anyOf (OpenAPI picks the member by it)
    "discriminator",
})
# Documentation and code-generation hints: no effect on what is valid.
_DROPPED = frozenset({
    "description", "title", "default", "example", "examples", "deprecated", "readOnly",
    "writeOnly", "externalDocs", "xml", "$comment",
})


def minimal(schema: Any, where: str) -> Any:
    """``schema`` with only the keywords validation needs (see the module docstring)."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: a schema must be an object, not {type(schema).__name__}")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        at = f"{where}/{key}"
        if key in _DROPPED or key.startswith("x-"):
            continue
        if key in _SCHEMA_ONE:
            out[key] = (
                [minimal(v, f"{at}/{i}") for i, v in enumerate(value)]
                if key == "items" and isinstance(value, list) else minimal(value, at)
            )
        elif key in _SCHEMA_MAP:
            out[key] = {name: minimal(v, f"{at}/{name}") for name, v in value.items()}
        elif key in _SCHEMA_LIST:
            out[key] = [minimal(v, f"{at}/{i}") for i, v in enumerate(value)]
        elif key in _KEPT:
            out[key] = value
        else:
            raise ValueError(f"{at}: keyword {key!r} unknown to {GENERATOR}; list it as kept or dropped")
    return out


def recursion_as_ref(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Draft 2019-09 recursion (OpenAI's ``CompoundFilter``: ``$recursiveAnchor: true`` at
    the top, ``$recursiveRef: "#"`` inside), which Draft 2020-12 does not know, as a plain
    ``$ref`` to the component itself (nothing extends these components, so the recursion
    always lands on the component)."""
    anchored = schema.pop("$recursiveAnchor", False) is True

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "$recursiveRef":
                if not (anchored and value == "#"):
                    raise ValueError(f"{name}: $recursiveRef {value!r} without a top anchor")
                out["$ref"] = f"{_COMPONENTS}schemas/{name}"
            elif key == "$recursiveAnchor":
                raise ValueError(f"{name}: $recursiveAnchor below the top")
            else:
                out[key] = walk(value)
        return out

    result: dict[str, Any] = walk(schema)
    return result


# --------------------------------------------------------------------------- components

def _refs(node: Any) -> set[str]:
    """Every local ``$ref`` under ``node`` (as ``kind/name``, e.g. ``schemas/Model``)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(_COMPONENTS):
                found.add(ref[len(_COMPONENTS):])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def kept_components(doc: dict[str, Any], source: Source) -> list[str]:
    """Names of the schema components to keep, sorted."""
    schemas: dict[str, Any] = doc["components"]["schemas"]
    if source.paths is None:
        return sorted(schemas)
    missing = [p for p in source.paths if p not in doc["paths"]]
    if missing:
        raise ValueError(f"{source.file} has no paths {missing}")
    todo = _refs([doc["paths"][p] for p in source.paths])
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        kind, _, name = ref.partition("/")
        todo |= _refs(doc["components"][kind][name]) - seen
    return sorted(ref.partition("/")[2] for ref in seen if ref.startswith("schemas/"))


def load_source(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        doc: dict[str, Any] = json.loads(text)
        return doc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~1 s for OpenAI's 3 MB
    parsed: dict[str, Any] = yaml.load(text, Loader=loader)
    return parsed


def generate(spec_name: str, specs: Path) -> str:
    """The text of ``<spec_name>.json`` made from the official file under ``specs``."""
    source = SOURCES[spec_name]
    path = specs / source.file
    data = path.read_bytes()
    doc = load_source(path)
    schemas = doc["components"]["schemas"]
    header = {
        "generated_by": GENERATOR,
        "source": {
            "file": source.file,
            "origin": source.origin,
            "title": doc["info"]["title"],
            "version": doc["info"]["version"],
            "openapi": doc["openapi"],
            "sha256": hashlib.sha256(data).hexdigest(),
            "paths": list(source.paths) if source.paths is not None else "all components",
        },
    }
    lines = [json.dumps(header, separators=(",", ":"))[:-1] + ',"components":{"schemas":{']
    names = kept_components(doc, source)
    for i, name in enumerate(names):
        schema = recursion_as_ref(name, minimal(schemas[name], name))
        body = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"{json.dumps(name)}:{body}" + ("," if i < len(names) - 1 else ""))
    lines.append("}}}")
    return "\n".join(lines) + "\n"


def output_path(spec_name: str) -> Path:
    return HERE / f"{spec_name}.json"


def differences(spec_name: str, specs: Path) -> list[str]:
    """What differs between the in-repo ``<spec_name>.json`` and a fresh generation."""
    path = output_path(spec_name)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    return compare(spec_name, generate(spec_name, specs), current)


def compare(spec_name: str, fresh_text: str, current_text: str) -> list[str]:
    """The differences between two texts of ``<spec_name>.json``, each naming its schema."""
    if fresh_text == current_text:
        return []
    if not current_text:
        return [f"{spec_name}.json: missing"]
    fresh, current = json.loads(fresh_text), json.loads(current_text)
    found = []
    for key in ("generated_by", "source"):
        if fresh.get(key) != current.get(key):
            found.append(f"{spec_name} {key}: {current.get(key)} -> {fresh.get(key)}")
    new, old = fresh["components"]["schemas"], current["components"]["schemas"]
    found += [f"{spec_name} schema {n}: added" for n in sorted(set(new) - set(old))]
    found += [f"{spec_name} schema {n}: removed" for n in sorted(set(old) - set(new))]
    found += [f"{spec_name} schema {n}: changed" for n in sorted(set(new) & set(old))
              if new[n] != old[n]]
    return found or [f"{spec_name}.json: same schemas, different layout"]


def missing_sources(specs: Path) -> str | None:
    """``None`` when every official file is under ``specs``, else which one is missing."""
    for source in SOURCES.values():
        if not (specs / source.file).is_file():
            return f"{specs / source.file} not found (set LLMKIT_SPECS to the specs folder)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=Path, default=None,
                        help="the official specs folder (default: $LLMKIT_SPECS or ../shared/specs)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the in-repo set differs")
    args = parser.parse_args(argv)
    specs: Path = args.specs or default_specs()
    missing = missing_sources(specs)
    if missing:
        parser.error(missing)
    if args.check:
        found = [d for name in SOURCES for d in differences(name, specs)]
        print("\n".join(found) or f"schema set up to date with {specs}")
        return 1 if found else 0
    for name in SOURCES:
        text = generate(name, specs)
        output_path(name).write_text(text, encoding="utf-8")
        print(f"{output_path(name).relative_to(REPO_ROOT)}: {text.count(chr(10)) - 2} schemas, "
              f"{len(text.encode()) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
