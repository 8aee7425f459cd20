"""SSE and NDJSON parsers: byte-by-byte, random splits, line endings, UTF-8 splits."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.core.errors import StreamError
from llmkit.http.streaming import NDJSONParser, SSEEvent, SSEParser


def feed_all(parser: SSEParser | NDJSONParser, data: bytes, cuts: list[int]) -> list:
    out: list = []
    pos = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))):
        out.extend(parser.feed(data[pos:cut]))
        pos = cut
    out.extend(parser.feed(data[pos:]))
    out.extend(parser.close())
    return out


def encode_sse(events: list[str], eol: str) -> bytes:
    parts = []
    for e in events:
        for line in e.split("\n"):
            parts.append(f"data: {line}{eol}")
        parts.append(eol)
    return "".join(parts).encode()


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
    max_size=40,
)
multi_line = st.lists(texts, min_size=1, max_size=3).map("\n".join)


@given(
    events=st.lists(multi_line, min_size=1, max_size=8),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_sse_random_splits_give_same_events(events: list[str], eol: str, cuts: list[int]) -> None:
    data = encode_sse(events, eol)
    got = feed_all(SSEParser(), data, cuts)
    assert [e.data for e in got] == events


def test_sse_byte_by_byte_with_multibyte_utf8() -> None:
    payload = [orjson.dumps({"t": "héllo wörld ✓ 🚀"}).decode(), "[DONE]"]
    data = encode_sse(payload, "\r\n")
    parser = SSEParser()
    got: list[SSEEvent] = []
    for i in range(len(data)):
        got.extend(parser.feed(data[i : i + 1]))
    got.extend(parser.close())
    assert [e.data for e in got] == payload
    assert got[0].json() == {"t": "héllo wörld ✓ 🚀"}


def test_sse_fields_comments_and_multiline() -> None:
    data = (
        b": keep-alive comment\n"
        b"event: delta\nid: 7\nretry: 1500\ndata: line one\ndata:line two\n\n"
        b"data\n\n"  # field with no colon: empty data
        b"event: ping\n\n"  # no data: not dispatched
        b"\xef\xbb\xbf"  # a BOM mid-stream is data, not stripped
    )
    parser = SSEParser()
    events = parser.feed(data) + parser.close()
    assert events[0] == SSEEvent("line one\nline two", "delta", "7", 1500)
    assert events[1].data == ""
    assert len(events) == 2


def test_sse_leading_bom_stripped() -> None:
    parser = SSEParser()
    events = parser.feed("\ufeffdata: x\n\n".encode())
    assert [e.data for e in events] == ["x"]


def test_sse_incomplete_final_event_discarded_on_close() -> None:
    # WHATWG: "If the file ends in the middle of an event, before the final empty line,
    # the incomplete event is not dispatched."
    for tail in (b"data: tail", b"data: tail\n"):
        parser = SSEParser()
        assert parser.feed(b"data: first\n\n" + tail) == [SSEEvent("first")]
        assert parser.has_partial
        assert parser.close() == []
        assert not parser.has_partial and parser.buffered == 0


def test_sse_malformed_json_event_raises_stream_error() -> None:
    (ev,) = SSEParser().feed(b"data: {not json\n\n")
    with pytest.raises(StreamError, match="malformed JSON"):
        ev.json()


def test_sse_buffered_counts_pending_bytes() -> None:
    parser = SSEParser()
    parser.feed(b"data: " + b"x" * 1000 + b"\n")
    assert parser.buffered >= 1000
    parser.feed(b"\n")
    assert parser.buffered == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(texts, children, max_size=3),
    max_leaves=10,
)


@given(
    objs=st.lists(json_values, min_size=1, max_size=10),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
)
@settings(max_examples=300, deadline=None)
def test_ndjson_random_splits(objs: list, crlf: bool, cuts: list[int]) -> None:
    eol = b"\r\n" if crlf else b"\n"
    data = b"".join(orjson.dumps(o) + eol for o in objs)
    assert feed_all(NDJSONParser(), data, cuts) == objs


def test_ndjson_byte_by_byte_and_blank_lines() -> None:
    data = '{"a": "ü"}\n\n  \n{"b": [1, 2]}\n{"done": true}'.encode()
    parser = NDJSONParser()
    out = []
    for i in range(len(data)):
        out.extend(parser.feed(data[i : i + 1]))
    out.extend(parser.close())
    assert out == [{"a": "ü"}, {"b": [1, 2]}, {"done": True}]


def test_ndjson_malformed_line() -> None:
    parser = NDJSONParser()
    with pytest.raises(StreamError, match="malformed NDJSON"):
        parser.feed(b'{"ok": 1}\n{"broken": \n')


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
@settings(max_examples=300, deadline=None)
def test_parsers_never_raise_untyped_errors_on_garbage(data: bytes, cuts: list[int]) -> None:
    events = feed_all(SSEParser(), data, cuts)
    for ev in events:
        try:
            ev.json()
        except StreamError:
            pass
    try:
        feed_all(NDJSONParser(), data, cuts)
    except StreamError:
        pass


def _parse_seconds(parser: SSEParser | NDJSONParser, data: bytes, read: int = 1024) -> float:
    pieces = [data[i : i + read] for i in range(0, len(data), read)]
    start = time.perf_counter()
    events = [ev for piece in pieces for ev in parser.feed(piece)]
    elapsed = time.perf_counter() - start
    assert len(events) == 1
    return elapsed


@pytest.mark.parametrize("kind", ["sse", "ndjson"])
def test_parsers_linear_in_event_length(kind: str) -> None:
    """An 8 MB event (the default max_event_bytes) in 1 KiB reads: a parser that re-copies
    its buffer on each read needs 15-50 s for it; a linear one a few ms. The bound leaves
    room for a loaded machine and still fails any quadratic parser by far."""

    def event(size: int) -> bytes:
        if kind == "sse":
            return b"data: " + orjson.dumps({"c": "x" * size}) + b"\n\n"
        return orjson.dumps({"c": "x" * size}) + b"\n"

    make = SSEParser if kind == "sse" else NDJSONParser
    big = event(8 << 20)
    t_big = min(_parse_seconds(make(), big) for _ in range(2))
    assert t_big < 1.5, f"8 MB event took {t_big:.2f}s"
    # the event is intact
    parser = make()
    (ev,) = [e for i in range(0, len(big), 1024) for e in parser.feed(big[i : i + 1024])]
    value = ev.json() if kind == "sse" else ev
    assert value == {"c": "x" * (8 << 20)}


def test_sse_2mb_event_in_1kib_reads_is_fast() -> None:
    data = b"data: " + orjson.dumps({"c": "y" * (2 << 20)}) + b"\n\n"
    assert min(_parse_seconds(SSEParser(), data) for _ in range(3)) < 0.4


def test_whole_event_reads_match_byte_by_byte_reads() -> None:
    """Reads that hold whole ``data:`` events (the common case, parsed on a short path)
    give the same events as the same bytes fed one at a time, ids and retry kept."""
    stream = [
        b"data: a\n\n", b"data: b\n\ndata: c\n\n", b"id: 7\nretry: 30\n\n", b"data: d\n\n",
        b"data: \n\n", b"event: x\ndata: e\n\n", b"data: f\ndata: g\n\n", b": hi\n\ndata: h\n\n",
    ]
    whole = SSEParser()
    by_read = [ev for read in stream for ev in whole.feed(read)]
    single = SSEParser()
    by_byte = [ev for read in stream for i in range(len(read)) for ev in single.feed(read[i:i + 1])]
    assert by_read == by_byte
    assert [(e.data, e.event, e.id, e.retry) for e in by_read] == [
        ("a", "message", None, None), ("b", "message", None, None), ("c", "message", None, None),
        ("d", "message", "7", 30), ("", "message", "7", 30), ("e", "x", "7", 30),
        ("f\ng", "message", "7", 30), ("h", "message", "7", 30),
    ]
