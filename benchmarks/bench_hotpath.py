"""Per-request and per-chunk CPU of llmkit's hot paths against the raw aiohttp + orjson
floor, as medians of interleaved repeated runs (for a shared, noisy machine).

Cases, every one in the same run as its floor:

* ``generate`` and ``chat`` (a typed ``ChatResponse``): CPU per non-streamed request at
  concurrency 1, 16 and 256;
* ``generate_stream`` (text) and ``chat_stream`` (a typed ``StreamChunk`` per event): CPU
  per content chunk, 16 streamed replies of 2000 chunks at concurrency 16.

One repetition runs every client once against one server (benchmarks/_server.py, its own
process), clients in turn, each in a fresh process that counts only its own CPU
(``time.process_time``, after a warm-up) over ``--batches`` batches of the same work and
keeps the batch with the least CPU (what other processes do only adds to it);
repetitions alternate the client order. The ratio reported is the median over
repetitions of llmkit / floor within the repetition.
With ``--pin`` (default) the server runs on CPU 0 and the clients on CPU 1.

    python benchmarks/bench_hotpath.py                 # 5 repetitions, ~4 min
    python benchmarks/bench_hotpath.py --repeats 3 --quick
    python benchmarks/bench_hotpath.py --cases chat --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_openai import Server, run_worker  # noqa: E402

# (case label, bench_openai case, client)
REQUEST_CLIENTS = (("floor", "floor"), ("generate", "llmkit"), ("chat", "llmkit-chat"))
STREAM_CLIENTS = (("floor", "floor"), ("generate_stream", "llmkit"),
                  ("chat_stream", "llmkit-typed"))
TARGETS = {"generate": 1.2, "chat": 1.2, "generate_stream": 1.3, "chat_stream": 1.5}


def _pin(proc_pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc_pid, {cpu})


def one_group(case: str, clients: tuple[tuple[str, str], ...], n: int, concurrency: int,
              words: int, rep: int, pin: bool, batches: int) -> dict[str, float]:
    """Every client once against one server; returns CPU us per unit by label."""
    order = list(clients) if rep % 2 == 0 else list(reversed(clients))
    srv = Server(words)
    try:
        _pin(srv.proc.pid, 0 if pin else None)
        out: dict[str, float] = {}
        for label, client in order:
            res = run_worker({"case": case, "client": client, "url": srv.url, "n": n,
                              "concurrency": concurrency, "cpu": 1 if pin else None,
                              "batches": batches})
            if "error" in res:
                raise RuntimeError(f"{label} c={concurrency}: {res['error']}")
            out[label] = 1e6 * res["cpu_s"] / res["units"]
        return out
    finally:
        srv.stop()


def summarize(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    labels = list(samples[0])
    out = {}
    for label in labels:
        values = [s[label] for s in samples]
        ratios = [s[label] / s["floor"] for s in samples]
        out[label] = {"median_us": statistics.median(values), "min_us": min(values),
                      "max_us": max(values), "median_ratio": statistics.median(ratios),
                      "ratios": ratios}
    return out


def render(groups: list[dict[str, Any]]) -> str:
    lines = ["| case | concurrency | client | CPU us/unit (median) | min-max | vs floor "
             "(median of paired ratios) | per-run ratios | target |",
             "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: |"]
    for g in groups:
        for label, s in g["summary"].items():
            target = TARGETS.get(label)
            mark = "" if target is None else (
                f"<= {target}x {'met' if s['median_ratio'] <= target else 'NOT met'}")
            ratios = " ".join(f"{r:.2f}" for r in s["ratios"])
            lines.append(
                f"| {g['case']} | {g['concurrency']} | {label} | {s['median_us']:.1f} | "
                f"{s['min_us']:.1f}-{s['max_us']:.1f} | {s['median_ratio']:.2f}x | "
                f"{ratios if label != 'floor' else ''} | {mark} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="chat,stream")
    parser.add_argument("--concurrency", default="1,16,256",
                        help="concurrency levels of the request cases")
    parser.add_argument("--quick", action="store_true", help="fewer requests and chunks")
    parser.add_argument("--batches", type=int, default=3,
                        help="measured batches per client process; the least CPU counts")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    levels = [int(c) for c in args.concurrency.split(",")]
    chat_n = {1: 500, 16: 1000, 256: 2000}
    stream_n, stream_words = 16, 2000
    if args.quick:
        chat_n = {1: 200, 16: 400, 256: 1000}
        stream_n, stream_words = 16, 500
    started = time.perf_counter()
    plan: list[tuple[str, tuple[tuple[str, str], ...], int, int, int]] = []
    if "chat" in cases:
        plan += [("chat", REQUEST_CLIENTS, chat_n.get(c, 2000), c, 50) for c in levels]
    if "stream" in cases:
        plan.append(("stream", STREAM_CLIENTS, stream_n, 16, stream_words))
    samples: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(plan))}
    for rep in range(args.repeats):  # interleaved: every case once per repetition
        for i, (case, clients, n, c, words) in enumerate(plan):
            samples[i].append(one_group(case, clients, n, c, words, rep, args.pin,
                                        args.batches))
            print(f"  rep {rep + 1} {case} c={c}: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in samples[i][-1].items()),
                  file=sys.stderr, flush=True)
    groups = []
    for i, (case, _, n, c, words) in enumerate(plan):
        groups.append({"case": "stream (per chunk)" if case == "stream" else "request",
                       "concurrency": c, "n": n, "words": words, "samples": samples[i],
                       "summary": summarize(samples[i])})
    table = render(groups)
    print(table)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"hotpath-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"groups": groups, "repeats": args.repeats, "pin": args.pin,
                                "loadavg_at_end": os.getloadavg(),
                                "elapsed_s": time.perf_counter() - started}, indent=2))
    print(f"\n{time.perf_counter() - started:.0f} s; JSON: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
