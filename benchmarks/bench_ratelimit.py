"""Fan-out against servers that limit the way real ones do: a scenario matrix.

    python benchmarks/bench_ratelimit.py              # the tables in benchmarks/README.md
    python benchmarks/bench_ratelimit.py --quick      # 200 prompts
    python benchmarks/bench_ratelimit.py --only bare,ollama --no-ray

Each scenario serves the scenario server (tests/servers/ratelimit_server.py) in its own
process and sends N prompts (400) through ``batch_generate`` at concurrency 64 with default
settings (max_retries=2, retry cap 60 s). The rate scenarios enforce 40 requests/s with a
burst of 10 (ideal: (N - 10) / 40 s); the concurrency ones admit 8 at once, each taking
0.2 s (Ollama: 2 run, 6 wait, 0.05 s each), ideal N / 40 s. "rejections" counts the 429s
and 503s the server sent, "% prompts" is that over N. Target: 0 failed, rejections <= 10%
of N, wall <= 1.25x ideal. The row "Retry-After 120 s over the cap" is a server that
refuses everything for 120 s: every call must raise ``RateLimitError`` at once, and only
the first request is sent.

The Ray table: ``llmkit.ray.run_batch`` with 4 actors (concurrency 32 each) against the
40 requests/s server, wall counted from the call of ``run_batch`` (Ray already started).

Older commits' results (the "before" table) come from running this file unchanged on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmkit import OllamaLLM, OpenAILLM, RateLimitError  # noqa: E402

# the server for bench_ray.py (kept as it was: that benchmark edits this text)
SERVER = """
import asyncio, json, sys
sys.path.insert(0, {root!r})
from aiohttp import web
from tests.servers import ServerState
from tests.servers.ratelimit_server import RateLimits, make_ratelimited_openai_app

async def main():
    limits = RateLimits(**json.loads(sys.argv[1]))
    app = make_ratelimited_openai_app(limits, ServerState(record_requests=False, validate_spec=False))
    async def counters(request):
        return web.json_response({{"admitted": limits.admitted, "rejected": limits.rejected,
                                  "tokens": limits.tokens_admitted}})
    app.router.add_get("/counters", counters)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(f"http://127.0.0.1:{{runner.addresses[0][1]}}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

asyncio.run(main())
"""

RATE = {"requests_per_second": 40.0, "request_burst": 10}
IN_FLIGHT = {"max_in_flight": 8, "service_time": 0.2}

# name, server limits, flavour, instances, kind of ideal
SCENARIOS: list[tuple[str, str, dict[str, Any], str, int, str]] = [
    ("quantized", "headers: 2,400/min counting down; enforced 40/s, burst 10",
     {**RATE, "headers": "per_minute"}, "openai", 1, "rate"),
    ("quantized_burst", "headers: 2,400/min, remaining and reset of the 40/s bucket",
     {**RATE, "headers": "per_minute_burst"}, "openai", 1, "rate"),
    ("consistent", "headers describe the enforced bucket", {**RATE}, "openai", 1, "rate"),
    ("retry_after", "only Retry-After in whole seconds", {**RATE, "headers": "none", "retry_after": "seconds"},
     "openai", 1, "rate"),
    ("bare", "bare 429, nothing else", {**RATE, "headers": "none", "retry_after": "none"}, "openai", 1, "rate"),
    ("in_flight_503", "at most 8 in flight, 503 beyond", {**IN_FLIGHT}, "openai", 1, "flight"),
    ("tgi", "TGI: at most 8 in flight, 429 Model is overloaded", {**IN_FLIGHT, "overload": "tgi"},
     "tgi", 1, "flight"),
    ("ollama", "Ollama: 2 parallel + 6 queued, 503 server busy",
     {"max_in_flight": 8, "parallel": 2, "service_time": 0.05, "overload": "ollama"}, "ollama", 1, "flight"),
    ("two_instances", "two instances, one key, at once (quantized server)",
     {**RATE, "headers": "per_minute"}, "openai", 2, "rate"),
    ("reset_unix_ms", "reset given as a unix timestamp in ms", {**RATE, "reset_format": "unix_ms"},
     "openai", 1, "rate"),
    ("reset_inf", "x-ratelimit-reset-requests: inf", {**RATE, "extra_headers": {"x-ratelimit-reset-requests": "inf"}},
     "openai", 1, "rate"),
    ("over_cap", "Retry-After 120 s over the cap (60 s)", {"closed_for": 120.0}, "openai", 1, "over_cap"),
]


class Server:
    """The scenario server in its own process."""

    def __init__(self, limits: dict[str, Any], flavour: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.ratelimit_server", json.dumps(limits), flavour],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.base = self.proc.stdout.readline().strip()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def client(flavour: str, base: str) -> Any:
    if flavour == "ollama":
        return OllamaLLM(model="llama3.2:latest", base_url=base)
    return OpenAILLM(model="gpt-4o-mini", base_url=base + "/v1", api_key="sk-bench-key")


async def fan_out(flavour: str, base: str, prompts: list[str], instances: int) -> tuple[list[Any], float]:
    llms = [client(flavour, base) for _ in range(instances)]
    share = len(prompts) // instances
    parts = [prompts[i * share : (i + 1) * share] for i in range(instances)]
    started = time.perf_counter()
    try:
        done = await asyncio.gather(*(
            llm.batch_generate(part, concurrency=64, return_exceptions=True)
            for llm, part in zip(llms, parts, strict=True)
        ))
        elapsed = time.perf_counter() - started
    finally:
        for llm in llms:
            await llm.aclose()
    return [r for part in done for r in part], elapsed


def run_scenario(key: str, label: str, limits: dict[str, Any], flavour: str, instances: int,
                 ideal_kind: str, n: int) -> dict[str, Any]:
    server = Server(limits, flavour)
    try:
        prompts = [f"p{i}" for i in range(n)]
        results, wall = asyncio.run(asyncio.wait_for(fan_out(flavour, server.base, prompts, instances), 60))
        counters = server.get("/counters")
    finally:
        server.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    if ideal_kind == "rate":
        ideal = (n - limits["request_burst"]) / limits["requests_per_second"]
    elif ideal_kind == "flight":
        ideal = n * limits["service_time"] / limits.get("parallel", limits["max_in_flight"])
    else:
        ideal = 0.0
    rejections = counters["rejected"]
    if ideal_kind == "over_cap":
        raised = all(isinstance(r, RateLimitError) and (r.retry_after or 0) > 60 for r in failed)
        ok = len(failed) == n and raised and counters["admitted"] + rejections == 1 and wall < 1.0
    else:
        ok = not failed and rejections <= 0.10 * n and wall <= 1.25 * ideal
    return {
        "scenario": label,
        "failed": len(failed),
        "sent": counters["admitted"] + rejections,
        "rejections": rejections,
        "% prompts": 100.0 * rejections / n,
        "wall s": wall,
        "ideal s": ideal,
        "x ideal": wall / ideal if ideal else float("nan"),
        "target": "ok" if ok else "MISSED",
    }


def ray_case(n: int, actors: int) -> dict[str, Any]:
    import ray

    from llmkit.ray import run_batch

    server = Server(dict(RATE), "openai")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "prompts.txt"
            source.write_text("".join(f"p{i}\n" for i in range(n)))
            if not ray.is_initialized():
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            config = {"provider": "openai", "base_url": server.base + "/v1", "model": "gpt-4o-mini",
                      "api_key": "sk-bench-key"}
            started = time.perf_counter()
            result = run_batch(source, config, output=Path(tmp) / "out.jsonl", actors=actors,
                               concurrency_per_actor=32, progress=False)
            wall = time.perf_counter() - started
        counters = server.get("/counters")
        times = server.get("/span")["admitted_at"]
    finally:
        server.close()
    ideal = (n - RATE["request_burst"]) / RATE["requests_per_second"]
    first = min(times) if times else float("nan")
    return {
        "actors": actors,
        "prompts": n,
        "failed": result.failed,
        "rejections": counters["rejected"],
        "wall s": wall,
        "ideal s": ideal,
        "x ideal": wall / ideal,
        "span s": max(times) - first if times else float("nan"),
        "target": "ok" if result.failed == 0 and wall <= 1.25 * ideal else "MISSED",
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols[1:]) + " |")
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 prompts")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    n = 200 if args.quick else 400
    wanted = {k for k in args.only.split(",") if k}
    rows = []
    for key, label, limits, flavour, instances, ideal_kind in SCENARIOS:
        if wanted and key not in wanted:
            continue
        try:
            rows.append(run_scenario(key, label, limits, flavour, instances, ideal_kind, n))
        except (TimeoutError, asyncio.TimeoutError):
            rows.append({"scenario": label, "failed": "hung (60 s)", "sent": "", "rejections": "",
                         "% prompts": "", "wall s": "", "ideal s": "", "x ideal": "", "target": "MISSED"})
        print(f"  {key}: {rows[-1]}", file=sys.stderr, flush=True)
    if rows:
        print_table(rows)
    ray_rows = []
    if not args.no_ray and (not wanted or "ray" in wanted):
        ray_rows.append(ray_case(n, 4))
        print()
        print_table(ray_rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"matrix": rows, "ray": ray_rows}, indent=1))


if __name__ == "__main__":
    main()
