"""The job file format: output rows, the progress journal, resuming, the atomic final
output and the provider-mode state file. Every way of running a job (live fan-out, the
provider's Batch API, the CLI, Ray) reads and writes job files through this module.

A row is one input row's outcome, a JSON object on one line::

    {"index": 3, "id": "q3", "prompt": "...", "prompt_hash": "9f2c...", "provider": "openai",
     "model": "gpt-4o-mini", "mode": "live", "output": "...", "usage": {...}}

with ``"error": {"type": ..., "message": ...}`` in place of ``output`` when it failed.

* **Lines end at "\\n" only.** Rows are UTF-8 JSON in which U+0085, U+2028 and U+2029 are
  escaped (``\\u2028``), so no reader (not even ``str.splitlines``) sees a line break
  inside a row, and every file is split on ``b"\\n"`` only.
* **The journal** (``OUTPUT.journal``) is append-only: a row is appended (and handed to
  the operating system) as soon as it is known. Its reader ignores a torn last line (a
  crash in the middle of a write); appending after a crash first cuts that torn tail off.
* **The output** holds one row per input row done, in input order; it is only ever
  replaced whole (temporary file, fsync, rename), from the previous output and the
  journal, so a crash, a full disk or a read-only directory leaves the previous output
  as it was. Then the journal is removed.
* **Resuming**: a rerun skips the rows whose answer is in the output or the journal and
  whose prompt hash matches; failed rows are tried again. Rows of another prompts file,
  provider or model are refused (:class:`JobFileError`) unless forced.
* **The state file** (provider mode, ``OUTPUT.state.json``) is a JSON object replaced
  atomically like the output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from llmkit.core.errors import LLMError, redact
from llmkit.jobs.errors import JobFileError, JobWriteError
from llmkit.jobs.source import JobRow

__all__ = [
    "JobFileError",
    "JobWriteError",
    "Journal",
    "compact",
    "decode_row",
    "done_rows",
    "encode_row",
    "error_row",
    "journal_path",
    "load_state",
    "make_row",
    "read_rows",
    "remove_state",
    "replace_file",
    "save_state",
    "state_path",
]

# Characters some line readers (Python's str.splitlines, JavaScript) treat as line breaks
# and that JSON may carry raw: NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
_RAW_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def _io_error(action: str, path: Path, exc: OSError) -> JobFileError:
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        why += " (the disk is full or a file size limit was reached)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why += " (the directory is not writable)"
    cls = JobWriteError if action == "write" else JobFileError
    return cls(f"cannot {action} {path}: {why}")


# --------------------------------------------------------------------------- rows


def encode_row(row: dict[str, Any]) -> bytes:
    """One row as a line: JSON, UTF-8, raw line-breaking characters escaped, ending "\\n"."""
    try:
        data = orjson.dumps(row)
    except TypeError:  # text UTF-8 cannot hold (a lone surrogate, from a custom provider)
        return json.dumps(row, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
    if b"\xc2\x85" in data or b"\xe2\x80" in data:
        for raw, escaped in _RAW_BREAKS:
            data = data.replace(raw, escaped)
    return data + b"\n"


def decode_row(line: bytes, where: str) -> dict[str, Any]:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:  # a lone surrogate's escape, which orjson refuses (see encode_row)
            row = json.loads(line)
        except ValueError:
            raise JobFileError(f"{where}: not a job row ({exc})") from None
    if not isinstance(row, dict) or not isinstance(row.get("index"), int):
        raise JobFileError(f"{where}: not a job row (no integer 'index')")
    return row


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    """(complete lines, the torn tail after the last "\\n")."""
    *lines, tail = data.split(b"\n")
    return lines, tail


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an output or journal file (none when it does not exist); a torn last
    line is ignored, any other line that is not a row is an error naming the line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _io_error("read", path, exc) from None
    lines, _torn = _lines(data)
    return [decode_row(line, f"{path} line {n}") for n, line in enumerate(lines, 1) if line.strip()]


def error_row(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, LLMError):
        return {"type": exc.type, "message": exc.message}
    return {"type": type(exc).__name__, "message": redact(str(exc))}


def usage_dict(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def make_row(row: JobRow, provider: str, model: str, mode: str, result: Any) -> dict[str, Any]:
    """The output row of one outcome: a reply (``str``, or anything with ``content`` and
    ``usage``), an exception, or an ``{"type", "message"}`` error dict."""
    out: dict[str, Any] = {"index": row.index}
    if row.id is not None:
        out["id"] = row.id
    out.update(prompt=row.text, prompt_hash=row.hash, provider=provider, model=model, mode=mode)
    if isinstance(result, BaseException):
        out["error"] = error_row(result)
    elif isinstance(result, dict):
        out["error"] = {"type": str(result["type"]), "message": str(result["message"])}
    elif isinstance(result, str):
        out["output"] = result
    else:
        out["output"] = result.content
        usage = getattr(result, "usage", None)
        if usage is not None:
            out["usage"] = usage_dict(usage)
    return out


# --------------------------------------------------------------------------- resume


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal")


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".state.json")


def done_rows(
    rows: list[JobRow],
    earlier: Iterable[dict[str, Any]],
    *,
    provider: str,
    model: str,
    output: Path,
    force: bool = False,
) -> dict[int, dict[str, Any]]:
    """The rows of an earlier run to keep, by index (a success wins over an error; of two
    alike the later wins). A row of another prompts file, provider or model raises
    :class:`JobFileError` unless ``force`` (then other prompts are dropped, and answers of
    another provider or model kept)."""
    best: dict[int, dict[str, Any]] = {}
    for rec in earlier:
        index = rec["index"]
        if not (index < len(rows) and rec.get("prompt_hash") == rows[index].hash):
            if force:
                continue
            what = (
                f"row {index} answers a different prompt than input row {index + 1}"
                if index < len(rows)
                else f"row {index} is beyond the {len(rows)} prompts"
            )
            raise JobFileError(
                f"{output} holds answers to another prompts file ({what}); use another "
                "output file, or --force to answer those prompts again"
            )
        if (rec.get("provider"), rec.get("model")) != (provider, model) and not force:
            raise JobFileError(
                f"{output} holds answers from provider {rec.get('provider')!r} model "
                f"{rec.get('model')!r}, not {provider!r} {model!r}; use another output file, "
                "or --force to keep them and add this run's answers"
            )
        if index not in best or "output" in rec or "output" not in best[index]:
            best[index] = rec
    return best


# --------------------------------------------------------------------------- writing


def _complete_end(path: Path, size: int) -> int:
    """The length of ``path``'s part that ends in "\n" (what is left of torn tail cut)."""
    if not size:
        return 0
    with path.open("rb") as f:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                return start + i + 1
            pos = start
    return 0


class Journal:
    """The append-only journal of one output file. ``append`` writes a row and hands it
    to the operating system (a killed process loses nothing written)."""

    def __init__(self, output: Path) -> None:
        self.path = journal_path(output)
        self._file: IO[bytes] | None = None

    def open(self) -> Journal:
        try:
            f = self.path.open("ab")
            end = _complete_end(self.path, f.seek(0, os.SEEK_END))
            if end != f.tell():
                f.truncate(end)  # cut the torn tail of a crashed write off
                f.seek(0, os.SEEK_END)
        except OSError as exc:
            raise _io_error("write", self.path, exc) from None
        self._file = f
        return self

    def append(self, row: dict[str, Any]) -> None:
        self.append_many((row,))

    def append_many(self, rows: Iterable[dict[str, Any]]) -> None:
        assert self._file is not None, "Journal.open() first"
        data = b"".join(encode_row(r) for r in rows)
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            raise _io_error("write", self.path, exc) from None

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def replace_file(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``path`` whole: a temporary file beside it, fsync, rename over it. On any
    error the temporary file is removed and ``path`` is as it was."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        with contextlib.suppress(OSError):  # the rename itself survives a power cut
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as exc:
        raise _io_error("write", path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def compact(output: Path, kept: dict[int, dict[str, Any]]) -> None:
    """Replace ``output`` with ``kept`` in index order (see :func:`replace_file`), then
    remove the journal whose rows it now holds."""
    def chunks() -> Iterator[bytes]:
        buf: list[bytes] = []
        for index in sorted(kept):
            buf.append(encode_row(kept[index]))
            if len(buf) >= 1024:
                yield b"".join(buf)
                buf.clear()
        yield b"".join(buf)

    replace_file(output, chunks())
    with contextlib.suppress(FileNotFoundError):
        journal_path(output).unlink()


# --------------------------------------------------------------------------- state


def load_state(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _io_error("read", path, exc) from None
    try:
        state = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise JobFileError(f"{path}: not a job state file ({exc})") from None
    if not isinstance(state, dict) or state.get("version") != 1:
        raise JobFileError(f"{path}: not a job state file (version 1)")
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    replace_file(path, [orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n"])


def remove_state(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
