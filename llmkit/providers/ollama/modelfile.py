"""Ollama Modelfiles: the text of a Modelfile as the fields of ``POST /api/create``."""

from __future__ import annotations

import os
import re
from typing import Any

import orjson

from llmkit.core.errors import InvalidRequestError
from llmkit.providers.ollama.wire import BOOL_OPTIONS, FLOAT_OPTIONS, INT_OPTIONS

__all__ = ["is_local_path", "parse_modelfile"]

_INSTRUCTIONS = frozenset(
    {"from", "parameter", "template", "system", "adapter", "license", "message",
     "renderer", "parser"}
)
_MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_LEADING = re.compile(r"\s*(\S+)\s*")


def _unquote(value: str, lineno: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return inner
        return str(decoded)
    if value.startswith('"'):
        raise InvalidRequestError(f"Modelfile line {lineno}: unterminated quote: {value!r}")
    return value


def _typed_parameter(key: str, raw: str, lineno: int) -> Any:
    def bad(kind: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"Modelfile line {lineno}: PARAMETER {key} needs {kind}, got {raw!r}"
        )

    if key in INT_OPTIONS:
        try:
            return int(raw)
        except ValueError:
            raise bad("an integer") from None
    if key in FLOAT_OPTIONS:
        try:
            return float(raw)
        except ValueError:
            raise bad("a number") from None
    if key in BOOL_OPTIONS:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad("true or false")
    if key == "stop":
        return raw
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def parse_modelfile(text: str) -> dict[str, Any]:
    """The ``/api/create`` fields of a Modelfile.

    ``FROM`` -> ``from``; ``PARAMETER key value`` -> ``parameters`` (typed: ints, floats,
    bools; ``stop`` is always a list, one entry per line); ``SYSTEM``, ``TEMPLATE``,
    ``RENDERER``, ``PARSER`` -> strings; ``MESSAGE role content`` -> ``messages``;
    ``LICENSE`` -> a string, or a list when repeated; ``ADAPTER ref`` -> ``adapters``
    (``{file name: ref}``; a local path is uploaded by ``OllamaLLM.create_model``, which
    also turns a ``FROM`` naming a local file or directory into ``files``).
    Instructions are case-insensitive, ``#`` starts a comment line, values may be quoted
    (``"..."``) or triple-quoted over several lines (``\"\"\"...\"\"\"``). An unknown
    instruction raises :class:`InvalidRequestError` naming the line.
    """
    if not isinstance(text, str):
        raise InvalidRequestError("modelfile must be a string")
    lines = text.splitlines()
    out: dict[str, Any] = {}
    licenses: list[str] = []
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        m = _LEADING.match(line)
        assert m is not None
        word = m.group(1)
        instruction = word.lower()
        rest = line[m.end():]
        if instruction not in _INSTRUCTIONS:
            raise InvalidRequestError(
                f"Modelfile line {lineno}: unknown instruction {word!r}: {line[:80]!r}"
            )
        if instruction in ("parameter", "message"):
            m2 = _LEADING.match(rest)
            if m2 is None or not rest.strip():
                raise InvalidRequestError(
                    f"Modelfile line {lineno}: {word} needs a name and a value"
                )
            sub = m2.group(1)
            rest = rest[m2.end():]
        else:
            sub = ""
        # the value: triple-quoted (maybe over several lines), quoted, or the rest of the line
        if rest.startswith('"""'):
            body = rest[3:]
            if '"""' in body:
                value = body[: body.index('"""')]
            else:
                parts = [body]
                while True:
                    if i >= len(lines):
                        raise InvalidRequestError(
                            f'Modelfile line {lineno}: unterminated """ for {word}'
                        )
                    nxt = lines[i]
                    i += 1
                    if '"""' in nxt:
                        parts.append(nxt[: nxt.index('"""')])
                        break
                    parts.append(nxt)
                value = "\n".join(parts)
        else:
            value = _unquote(rest.strip(), lineno)
        if not value and instruction in ("from", "parameter", "adapter"):
            raise InvalidRequestError(f"Modelfile line {lineno}: {word} {sub}".rstrip() + " needs a value")

        if instruction == "from":
            out["from"] = value
        elif instruction == "parameter":
            key = sub.lower()
            params = out.setdefault("parameters", {})
            typed = _typed_parameter(key, value, lineno)
            if key == "stop":
                params.setdefault("stop", []).append(typed)
            else:
                params[key] = typed
        elif instruction == "message":
            role = sub.lower()
            if role not in _MESSAGE_ROLES:
                raise InvalidRequestError(
                    f"Modelfile line {lineno}: MESSAGE role must be one of "
                    f"{sorted(_MESSAGE_ROLES)}, not {sub!r}"
                )
            out.setdefault("messages", []).append({"role": role, "content": value})
        elif instruction == "license":
            licenses.append(value)
        elif instruction == "adapter":
            out.setdefault("adapters", {})[os.path.basename(value) or value] = value
        else:  # system, template, renderer, parser
            out[instruction] = value
    if licenses:
        out["license"] = licenses[0] if len(licenses) == 1 else licenses
    return out


def is_local_path(ref: str) -> bool:
    """Whether a FROM / ADAPTER value names a local file or directory (as the ``ollama``
    CLI reads it: an absolute, ``./``, ``../`` or ``~`` path, or one that exists) rather
    than a model name or a ``sha256:`` blob."""
    if ref.startswith("sha256:"):
        return False
    if ref.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        return True
    return os.path.exists(ref)
