"""Batch job files: prompts in (one per line, or JSON lines), JSONL records out, resumable.

A record is one prompt's outcome::

    {"index": 3, "prompt": "...", "prompt_hash": "9f2c...", "provider": "openai",
     "model": "gpt-4o-mini", "output": "...", "usage": {"prompt_tokens": 9, ...}}

with ``"error": {"type": ..., "message": ...}`` in place of ``output`` when it failed. A
rerun with the same output skips the rows already answered whose prompt hash matches, and
refuses (:class:`BatchFileError`) to mix answers of another provider, model or prompts file
unless forced. Used by ``llmkit batch`` and :mod:`llmkit.ray`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from llmkit.core.errors import ConfigError, LLMError, redact

__all__ = [
    "BatchFileError",
    "Prompt",
    "compact",
    "done_indexes",
    "error_record",
    "make_record",
    "open_output",
    "parse_prompt",
    "prompt_hash",
    "read_prompts",
    "read_records",
]


class BatchFileError(ConfigError):
    """A prompts file or an earlier output that cannot be used as it is."""


@dataclass(frozen=True)
class Prompt:
    index: int
    text: str  # what the record shows: the prompt, or the last user message
    payload: Any  # what is sent: a string or a list of message dicts
    hash: str


def prompt_hash(payload: Any) -> str:
    """A short stable hash of what is sent for a prompt."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def parse_prompt(row: Any, where: str) -> tuple[str, Any]:
    """(text for the record, payload) from a plain line or a ``{"prompt"}`` /
    ``{"messages"}`` object."""
    if isinstance(row, str):
        stripped = row.strip()
        if not stripped.startswith("{"):
            return stripped, stripped
        try:
            row = json.loads(stripped)
        except ValueError:
            return stripped, stripped
    if isinstance(row, dict):
        if isinstance(row.get("prompt"), str):
            return row["prompt"], row["prompt"]
        messages = row.get("messages")
        if isinstance(messages, list) and messages:
            last = next(
                (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
                messages[-1],
            )
            content = last.get("content", "") if isinstance(last, dict) else last
            return (content if isinstance(content, str) else json.dumps(content)), list(messages)
    raise BatchFileError(f"{where}: a JSON line needs a 'prompt' string or a 'messages' list")


def read_prompts(source: str | os.PathLike[str] | Iterable[str], name: str = "input") -> list[Prompt]:
    """The prompts of a file (or of lines); blank lines are skipped."""
    if isinstance(source, str | os.PathLike):
        name = str(source)
        try:
            lines: Iterable[str] = Path(source).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BatchFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    else:
        lines = source
    prompts: list[Prompt] = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            text, payload = parse_prompt(line, f"{name} line {lineno}")
            prompts.append(Prompt(len(prompts), text, payload, prompt_hash(payload)))
    return prompts


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an earlier run (a torn last line is ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    records = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("index"), int):
            records.append(obj)
    return records


def done_indexes(
    prompts: Sequence[Prompt],
    records: Iterable[dict[str, Any]],
    *,
    provider: str,
    model: str,
    output: str,
    force: bool = False,
) -> set[int]:
    """Indexes already answered in ``records``; a row of another prompts file, provider or
    model raises :class:`BatchFileError` unless ``force`` (then other prompts are answered
    again, and answers of another provider or model are kept)."""
    done: set[int] = set()
    for rec in records:
        index = rec["index"]
        matches = index < len(prompts) and rec.get("prompt_hash") == prompts[index].hash
        if not matches:
            if force:
                continue
            what = (
                f"row {index} answers a different prompt than line {index + 1} of the prompts"
                if index < len(prompts)
                else f"row {index} is beyond the {len(prompts)} prompts"
            )
            raise BatchFileError(
                f"{output} holds answers to another prompts file ({what}); use another "
                "output file, or --force to answer those prompts again"
            )
        answered_by = (rec.get("provider"), rec.get("model"))
        if answered_by != (provider, model) and not force:
            raise BatchFileError(
                f"{output} holds answers from provider {answered_by[0]!r} model "
                f"{answered_by[1]!r}, not {provider!r} {model!r}; use another output file, "
                "or --force to keep them and add this run's answers"
            )
        if "output" in rec:
            done.add(index)
    return done


def error_record(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, LLMError):
        return {"type": exc.type, "message": exc.message}
    return {"type": type(exc).__name__, "message": redact(str(exc))}


def make_record(prompt: Prompt, provider: str, model: str, result: Any) -> dict[str, Any]:
    """The record of one outcome: a reply (``str``, or anything with ``content`` and
    ``usage``) or an exception."""
    record: dict[str, Any] = {
        "index": prompt.index,
        "prompt": prompt.text,
        "prompt_hash": prompt.hash,
        "provider": provider,
        "model": model,
    }
    if isinstance(result, BaseException):
        record["error"] = error_record(result)
    elif isinstance(result, str):
        record["output"] = result
    else:
        record["output"] = result.content
        usage = getattr(result, "usage", None)
        if usage is not None:
            record["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
    return record


def compact(path: Path, prompts: Sequence[Prompt]) -> None:
    """Rewrite the output in index order, one record per prompt of this file (a success
    wins over an error; rows of other prompts are dropped)."""
    best: dict[int, dict[str, Any]] = {}
    for rec in read_records(path):
        i = rec["index"]
        if i >= len(prompts) or rec.get("prompt_hash") != prompts[i].hash:
            continue
        if i not in best or "output" in rec or "output" not in best[i]:
            best[i] = rec
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in sorted(best):
            f.write(json.dumps(best[i], ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def open_output(path: Path) -> IO[str]:
    """The output file opened for appending (a torn last line gets its newline)."""
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    out = path.open("a", encoding="utf-8")
    if torn:
        out.write("\n")
    return out
