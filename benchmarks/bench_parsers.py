"""Parser micro-benchmark: one SSE event / one NDJSON line of 1 KB, 1 MB and 8 MB, fed in
1 KiB reads (the way a slow stream arrives), time per MB.

    python benchmarks/bench_parsers.py [--repeats N] [--read-size BYTES]

A linear parser shows a flat time per MB across sizes; a parser that re-scans or re-copies
its buffer on every read grows with the event's size (quadratic time).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from llmkit.http.streaming import NDJSONParser, SSEParser

SIZES = {"1 KB": 1024, "1 MB": 1024 * 1024, "8 MB": 8 * 1024 * 1024}


def sse_event(size: int) -> bytes:
    payload = orjson.dumps({"choices": [{"delta": {"content": "x" * size}}]})
    return b"data: " + payload + b"\n\n"


def ndjson_line(size: int) -> bytes:
    return orjson.dumps({"message": {"content": "x" * size}, "done": False}) + b"\n"


def feed_in_reads(make: Callable[[], SSEParser | NDJSONParser], data: bytes, read: int) -> float:
    """Seconds to parse ``data`` arriving in ``read``-byte pieces (slicing not counted)."""
    pieces = [data[i : i + read] for i in range(0, len(data), read)]
    parser = make()
    start = time.perf_counter()
    events = 0
    for piece in pieces:
        events += len(parser.feed(piece))
    elapsed = time.perf_counter() - start
    if events != 1:
        raise AssertionError(f"expected one event, got {events}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs")
    ap.add_argument("--read-size", type=int, default=1024, help="bytes per read")
    args = ap.parse_args()
    print(f"reads of {args.read_size} bytes; best of {args.repeats}")
    print("| parser | event | reads | us | ms per MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, make, build in (
        ("SSE", SSEParser, sse_event),
        ("NDJSON", NDJSONParser, ndjson_line),
    ):
        for label, size in SIZES.items():
            data = build(size)
            best = min(feed_in_reads(make, data, args.read_size) for _ in range(args.repeats))
            reads = -(-len(data) // args.read_size)
            per_mb = best * 1000 / (len(data) / (1024 * 1024))
            print(f"| {name} | {label} | {reads} | {best * 1e6:.0f} | {per_mb:.2f} |")


if __name__ == "__main__":
    main()
