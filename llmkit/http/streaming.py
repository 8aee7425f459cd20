"""Incremental parsers for Server-Sent Events and NDJSON: bytes in, events out.

Both accept arbitrary splits of the byte stream (an event or a UTF-8 character may be cut
across reads), CR, LF and CRLF line endings, and keep only an incomplete tail buffered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from llmkit.core.errors import StreamError

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
_object_new = object.__new__


def _new_event(raw: bytes, event_id: str | None, retry: int | None) -> SSEEvent:
    """A ``message`` event of ``raw`` data (the parser's path: no type checks)."""
    ev: SSEEvent = _object_new(SSEEvent)
    ev._raw = raw
    ev._data = None
    ev.event = "message"
    ev.id = event_id
    ev.retry = retry
    return ev


class _LineBuffer:
    """The pieces of a line not yet ended. Each read is scanned once and each byte copied
    once more when its line completes, so a line of any length costs linear time however
    finely it is split across reads."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def lines(self, data: bytes) -> list[bytes]:
        """The lines that ``data`` completes (``data`` holds only LF line ends)."""
        if b"\n" not in data:
            if data:
                self.parts.append(data)
                self.size += len(data)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        if self.parts:
            self.parts.append(lines[0])
            lines[0] = b"".join(self.parts)
            self.parts = []
        self.parts = [tail] if tail else []
        self.size = len(tail)
        return lines

    def take(self) -> bytes:
        tail = b"".join(self.parts)
        self.parts = []
        self.size = 0
        return tail


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG event-stream rules), working on bytes:
    lines are split on CR, LF or CRLF; text is decoded per complete event, so a UTF-8
    character cut across reads is never split. Linear in the stream's length."""

    __slots__ = ("_data", "_data_size", "_event", "_id", "_line", "_pending_cr", "_retry", "_started")

    def __init__(self) -> None:
        self._line = _LineBuffer()
        self._data: list[bytes] | None = None
        self._data_size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._started = False
        self._pending_cr = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        if (
            data[-2:] == b"\n\n"
            and self._started
            and not self._pending_cr
            and self._data is None
            and self._event is None
            and not self._line.parts
            and b"\r" not in data
        ):
            # the common read: whole events of one ``data: `` line each, nothing pending
            simple = self._simple_events(data)
            if simple is not None:
                return simple
        if self._pending_cr:  # the previous read ended in CR: a LF now belongs to it
            self._pending_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if not self._started:
            data = self._line.take() + data
            if len(data) < 3 and _BOM.startswith(data):
                self._line.lines(data)
                return []
            self._started = True
            if data.startswith(_BOM):
                data = data[3:]
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._pending_cr = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[SSEEvent] = []
        for line in self._line.lines(data):
            if not line:
                if self._data is not None:
                    events.append(self._dispatch())
                else:
                    self._event = None
            elif line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]  # one copy of the value
                if self._data is None:
                    self._data = [value]
                else:
                    self._data.append(value)
                self._data_size += len(value)
            elif line[0] != 58:  # not a ":" comment line
                self._field(line)
        return events

    def _simple_events(self, data: bytes) -> list[SSEEvent] | None:
        """The events of ``data`` when it is only ``data: <value>\\n\\n`` blocks (what the
        general path would dispatch for it), else None (nothing consumed)."""
        pieces = data[:-2].split(b"\n\n")
        for piece in pieces:
            if piece[:6] != b"data: " or b"\n" in piece:
                return None
        event_id, retry = self._id, self._retry
        return [_new_event(piece[6:], event_id, retry) for piece in pieces]

    def iter_feed(self, data: bytes) -> Iterator[SSEEvent]:
        yield from self.feed(data)

    def close(self) -> list[SSEEvent]:
        """End of stream. An event not ended by its blank line is discarded, as the WHATWG
        rules say: nothing is dispatched here."""
        self._line.take()
        self._data = None
        self._data_size = 0
        self._event = None
        return []

    @property
    def has_partial(self) -> bool:
        return self._data is not None or self._line.size > 0

    @property
    def buffered(self) -> int:
        """Bytes held for an event not yet complete."""
        return self._data_size + self._line.size

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
    """Incremental newline-delimited JSON parser: one JSON value per non-blank line.
    Linear in the stream's length."""

    __slots__ = ("_line",)

    def __init__(self) -> None:
        self._line = _LineBuffer()

    def feed(self, data: bytes) -> list[Any]:
        return [self._decode(line) for line in self._line.lines(data) if line.strip()]

    def close(self) -> list[Any]:
        """End of stream: a last line without its newline is still a value."""
        tail = self._line.take()
        return [self._decode(tail)] if tail.strip() else []

    @property
    def has_partial(self) -> bool:
        return any(part.strip() for part in self._line.parts)

    @property
    def buffered(self) -> int:
        """Bytes held for a line not yet complete."""
        return self._line.size

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
        for line in self._line.lines(data):
            if line.strip():
                yield self._decode(line)
