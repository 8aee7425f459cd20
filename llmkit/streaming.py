"""Incremental parsers for Server-Sent Events and NDJSON: bytes in, events out.

Both accept arbitrary splits of the byte stream (an event or a UTF-8 character may be cut
across reads), CR, LF and CRLF line endings, and keep only an incomplete tail buffered.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from llmkit.errors import StreamError

__all__ = ["NDJSONParser", "SSEEvent", "SSEParser"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError:
            raise StreamError(f"malformed JSON in SSE event: {self.data[:200]!r}") from None


class _LineSplitter:
    """Splits decoded text into lines on CR, LF or CRLF, across feeds."""

    __slots__ = ("_buf", "_decoder", "_pending_cr")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._pending_cr = False

    def feed(self, data: bytes) -> list[str]:
        text = self._decoder.decode(data)
        if not text:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        buf = self._buf + text
        if "\r" not in buf:
            lines = buf.split("\n")
            self._buf = lines.pop()
            return lines
        if buf.endswith("\r"):
            self._pending_cr = True
        lines = buf.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buf = lines.pop()
        return lines

    def flush(self) -> list[str]:
        tail = self._buf + self._decoder.decode(b"", final=True)
        self._buf = ""
        return [tail] if tail else []


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG event-stream rules)."""

    __slots__ = (
        "_data",
        "_data_size",
        "_event",
        "_has_data",
        "_id",
        "_lines",
        "_retry",
        "_started",
    )

    def __init__(self) -> None:
        self._lines = _LineSplitter()
        self._data: list[str] = []
        self._data_size = 0
        self._has_data = False
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._started = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in self._lines.feed(data):
            ev = self._line(line)
            if ev is not None:
                events.append(ev)
        return events

    def iter_feed(self, data: bytes) -> Iterator[SSEEvent]:
        yield from self.feed(data)

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still dispatched."""
        events: list[SSEEvent] = []
        for line in self._lines.flush():
            ev = self._line(line)
            if ev is not None:
                events.append(ev)
        ev = self._dispatch()
        if ev is not None:
            events.append(ev)
        return events

    @property
    def has_partial(self) -> bool:
        return self._has_data or bool(self._lines._buf)

    @property
    def buffered(self) -> int:
        """Characters held for an event not yet complete."""
        return self._data_size + len(self._lines._buf)

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        ev = SSEEvent("\n".join(self._data), self._event or "message", self._id, self._retry)
        self._data = []
        self._data_size = 0
        self._has_data = False
        self._event = ""
        return ev

    def _line(self, line: str) -> SSEEvent | None:
        if not self._started:
            self._started = True
            if line.startswith("\ufeff"):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None


class NDJSONParser:
    """Incremental newline-delimited JSON parser: one JSON value per non-blank line."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf + data if self._buf else data
        if b"\n" not in buf:
            self._buf = buf
            return []
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        return [self._decode(line) for line in lines if line.strip()]

    def close(self) -> list[Any]:
        tail, self._buf = self._buf, b""
        return [self._decode(tail)] if tail.strip() else []

    @property
    def has_partial(self) -> bool:
        return bool(self._buf.strip())

    @property
    def buffered(self) -> int:
        """Bytes held for a line not yet complete."""
        return len(self._buf)

    @staticmethod
    def _decode(line: bytes) -> Any:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            text = line.decode("utf-8", "replace")
            raise StreamError(f"malformed NDJSON line: {text[:200]!r}") from None

    def iter_feed(self, data: bytes) -> Iterator[Any]:
        """Like :meth:`feed`, but lazy: the values before a malformed line are produced
        before its :class:`StreamError` is raised."""
        buf = self._buf + data if self._buf else data
        if b"\n" not in buf:
            self._buf = buf
            return
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            if line.strip():
                yield self._decode(line)
