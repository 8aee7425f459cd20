"""Incremental parsers for Server-Sent Events and NDJSON: bytes in, events out.

Both accept arbitrary splits of the byte stream (an event or a UTF-8 character may be cut
across reads), CR, LF and CRLF line endings, and keep only an incomplete tail buffered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from llmkit.errors import StreamError

__all__ = ["NDJSONParser", "SSEEvent", "SSEParser"]


class SSEEvent:
    """One dispatched event. ``data`` is text; the bytes are kept so that JSON payloads are
    decoded straight from them."""

    __slots__ = ("_data", "_raw", "event", "id", "retry")

    def __init__(
        self,
        data: str | bytes = "",
        event: str = "message",
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        if isinstance(data, bytes):
            self._raw: bytes | None = data
            self._data: str | None = None
        else:
            self._raw = None
            self._data = data
        self.event = event
        self.id = id
        self.retry = retry

    @property
    def data(self) -> str:
        if self._data is None:
            self._data = (self._raw or b"").decode("utf-8", "replace")
        return self._data

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = (self._data or "").encode()
        return self._raw

    def json(self) -> Any:
        try:
            return orjson.loads(self._raw if self._raw is not None else self.data)
        except orjson.JSONDecodeError:
            raise StreamError(f"malformed JSON in SSE event: {self.data[:200]!r}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry) == (
            other.data,
            other.event,
            other.id,
            other.retry,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SSEEvent(data={self.data!r}, event={self.event!r}, id={self.id!r}, retry={self.retry!r})"


_BOM = b"\xef\xbb\xbf"


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG event-stream rules), working on bytes:
    lines are split on CR, LF or CRLF; text is decoded per complete event, so a UTF-8
    character cut across reads is never split."""

    __slots__ = ("_buf", "_data", "_data_size", "_event", "_id", "_pending_cr", "_retry", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] | None = None
        self._data_size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._started = False
        self._pending_cr = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        if self._pending_cr:  # the previous read ended in CR: a LF now belongs to it
            self._pending_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        buf = self._buf + data if self._buf else data
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                self._pending_cr = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data is not None:
                    events.append(self._dispatch())
                else:
                    self._event = None
            elif line.startswith(b"data:"):
                value = line[5:]
                if value[:1] == b" ":
                    value = value[1:]
                if self._data is None:
                    self._data = [value]
                else:
                    self._data.append(value)
                self._data_size += len(value)
            elif line[0] != 58:  # not a ":" comment line
                self._field(line)
        return events

    def iter_feed(self, data: bytes) -> Iterator[SSEEvent]:
        yield from self.feed(data)

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still dispatched."""
        events = self.feed(b"\n") if self._buf else []
        if self._data is not None:
            events.append(self._dispatch())
        return events

    @property
    def has_partial(self) -> bool:
        return self._data is not None or bool(self._buf)

    @property
    def buffered(self) -> int:
        """Bytes held for an event not yet complete."""
        return self._data_size + len(self._buf)

    def _dispatch(self) -> SSEEvent:
        parts = self._data or []
        ev = SSEEvent(
            parts[0] if len(parts) == 1 else b"\n".join(parts),
            self._event or "message",
            self._id,
            self._retry,
        )
        self._data = None
        self._data_size = 0
        self._event = None
        return ev

    def _field(self, line: bytes) -> None:
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":  # a bare "data" line: an empty data value
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)


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
