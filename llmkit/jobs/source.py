"""A job's input rows (API.md "Batch jobs"): a prompts file, JSONL rows, or OpenAI's batch
input format, read exactly as they are; a malformed line is an error naming the file
and the line, nothing is guessed.

* **Lines end at "\\n" only** (a trailing "\\r" is dropped); blank lines are skipped; the
  file is UTF-8.
* **A prompts file**: one prompt a line (surrounding whitespace trimmed). A line starting
  with ``{`` there is an error: a file is plain prompts or JSONL throughout.
* **JSONL** (the first non-blank line starts with ``{``, or the name ends in ``.jsonl`` /
  ``.ndjson``): every line is a JSON object, either ``{"prompt": "..."}`` or
  ``{"messages": [...]}``, with an optional ``options`` object (per-call options, e.g.
  ``{"temperature": 0}``; not ``model``: the job's model answers every row) and an
  optional ``id`` (a string or an integer, unique); or a
  line of OpenAI's batch input format, ``{"custom_id", "method": "POST", "url":
  "/v1/chat/completions", "body": {...}}``, whose ``custom_id`` is the row's id, whose
  body's ``messages`` are sent, and whose other body fields are the row's options
  (``model`` aside: the job's model answers every row).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmkit.jobs.errors import SourceError

__all__ = ["JobRow", "SourceError", "prompt_hash", "read_source"]

_ROW_KEYS = frozenset({"prompt", "messages", "options", "id"})
_BATCH_KEYS = frozenset({"custom_id", "method", "url", "body"})
CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class JobRow:
    """One input row: ``index`` (0-based among the rows), ``id`` (``id`` / ``custom_id``),
    ``text`` (the prompt as the output shows it), ``messages`` (what is sent: the prompt
    string or the message list), per-row ``options``, and the ``hash`` of what is sent."""

    index: int
    id: str | int | None
    text: str
    messages: str | list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)
    hash: str = ""
    line: int = 0


def prompt_hash(messages: Any, options: dict[str, Any] | None = None) -> str:
    """A short stable hash of what is sent for a row (the prompt or messages, and the
    row's options when it has any)."""
    payload: Any = messages if not options else {"messages": messages, "options": options}
    try:
        data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # text UTF-8 cannot hold (a lone surrogate): ASCII escapes
        data = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise SourceError(f"{where}: 'messages' must be a non-empty list of message objects")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise SourceError(f"{where}: messages[{i}] must be an object with a 'role' string")
    return value


def _shown(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    content = last.get("content", "")
    return content if isinstance(content, str) else orjson.dumps(content).decode()


def _batch_row(obj: dict[str, Any], where: str) -> tuple[Any, str, Any, dict[str, Any]]:
    missing = sorted(_BATCH_KEYS - obj.keys())
    extra = sorted(obj.keys() - _BATCH_KEYS)
    if missing or extra:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown keys {', '.join(extra)}"
        raise SourceError(f"{where}: an OpenAI batch input line {what}")
    custom_id = obj["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        raise SourceError(f"{where}: 'custom_id' must be a non-empty string")
    if obj["method"] != "POST":
        raise SourceError(f"{where}: 'method' must be \"POST\"")
    if obj["url"] != CHAT_URL:
        raise SourceError(f"{where}: only {CHAT_URL} rows can be run, not {obj['url']!r}")
    body = obj["body"]
    if not isinstance(body, dict):
        raise SourceError(f"{where}: 'body' must be a JSON object")
    if body.get("stream"):
        raise SourceError(f"{where}: a batch row cannot stream ('stream': true)")
    messages = _messages(body.get("messages"), where)
    options = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    return custom_id, _shown(messages), messages, options


def _row(obj: Any, where: str) -> tuple[Any, str, Any, dict[str, Any]]:
    """(id, text, messages, options) of one JSON row."""
    if not isinstance(obj, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(obj), "a number")
        raise SourceError(f"{where}: a JSONL row must be a JSON object, not {kind}"
                          if obj is not None else f"{where}: a JSONL row must be a JSON object, not null")
    if obj.keys() & _BATCH_KEYS:
        return _batch_row(obj, where)
    extra = sorted(obj.keys() - _ROW_KEYS)
    if extra:
        raise SourceError(f"{where}: unknown keys {', '.join(extra)} (a row has 'prompt' or "
                          "'messages', and optionally 'options' and 'id')")
    if ("prompt" in obj) == ("messages" in obj):
        raise SourceError(f"{where}: a row needs exactly one of 'prompt' and 'messages'")
    row_id = obj.get("id")
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, str | int)):
        raise SourceError(f"{where}: 'id' must be a string or an integer")
    options = obj.get("options", {})
    if not isinstance(options, dict):
        raise SourceError(f"{where}: 'options' must be a JSON object")
    if "model" in options:
        raise SourceError(f"{where}: a row cannot choose its model (every row of a job is "
                          "answered by the job's model, which its rows record)")
    if "prompt" in obj:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise SourceError(f"{where}: 'prompt' must be a non-empty string")
        return row_id, prompt, prompt, options
    messages = _messages(obj["messages"], where)
    return row_id, _shown(messages), messages, options


def _lines(source: Any, name: str) -> tuple[Iterable[tuple[int, str | dict[str, Any]]], str, bool]:
    """(numbered lines or rows, the name for messages, JSONL by name)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        return _split(data, str(path)), str(path), path.suffix in (".jsonl", ".ndjson")
    if isinstance(source, bytes | bytearray | memoryview):
        return _split(bytes(source), name), name, False
    items = []
    for n, item in enumerate(source, 1):
        if isinstance(item, str) and "\n" in item.rstrip("\r\n"):
            raise SourceError(f"{name} item {n}: a prompt line holds a line break")
        items.append((n, item.rstrip("\r\n") if isinstance(item, str) else item))
    return items, name, False


def _split(data: bytes, name: str) -> list[tuple[int, str]]:
    out = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            out.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise SourceError(f"{name} line {n}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return out


def read_source(source: str | os.PathLike[str] | bytes | Iterable[str | dict[str, Any]],
                *, name: str = "input") -> list[JobRow]:
    """The rows of a job input: a file path, the file's bytes, or an iterable of prompt
    lines and row objects (see the module docstring). Raises :class:`SourceError`."""
    numbered, name, jsonl = _lines(source, name)
    rows: list[JobRow] = []
    ids: dict[Any, int] = {}
    word = "line"
    for n, item in numbered:
        where = f"{name} {word} {n}"
        if isinstance(item, str):
            text = item.strip()
            if not text:
                continue
            if not rows and not jsonl:
                jsonl = text.startswith("{")
            if jsonl:
                try:
                    obj = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise SourceError(f"{where}: not valid JSON ({exc})") from None
                row_id, shown, messages, options = _row(obj, where)
            elif text.startswith("{"):
                raise SourceError(
                    f"{where}: looks like a JSON row in a file of plain prompts (its first row "
                    "is plain text); a file is one prompt a line or JSONL throughout")
            else:
                row_id, shown, messages, options = None, text, text, {}
        else:
            row_id, shown, messages, options = _row(item, where)
        if row_id is not None:
            if row_id in ids:
                raise SourceError(f"{where}: id {row_id!r} is also the id of {word} {ids[row_id]}")
            ids[row_id] = n
        rows.append(JobRow(len(rows), row_id, shown, messages, options,
                           prompt_hash(messages, options), n))
    return rows
