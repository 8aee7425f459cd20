"""Distributed batch on Ray: rows/s with 1, 2 and 4 actors, without and with a shared limit.

    python benchmarks/bench_ray.py            # the table in benchmarks/README.md
    python benchmarks/bench_ray.py --quick

A local Ray cluster (``ray.init(num_cpus=2)``) and the OpenAI-compatible test server in
its own process: (a) unlimited and fast (20-word replies), N prompts; (b) behind a token
bucket of 40 requests/s, burst 10 (tests/servers/ratelimit_server.py), 400 prompts, every
actor asking the one rate-limiter actor. Each actor holds one llmkit instance with
``concurrency_per_actor=32``. "wall" includes starting the actors; "span" is the
server's first to last admitted request. The row "in-process" is one llmkit instance's
``batch_generate`` at concurrency 64 in the driver, for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import ray  # noqa: E402
from bench_ratelimit import SERVER  # noqa: E402

from llmkit import OpenAILLM  # noqa: E402
from llmkit.ray import run_batch  # noqa: E402

SPAN = """
    async def span(request):
        return web.json_response(limits.admitted_at)
    app.router.add_get("/span", span)
"""


class Server:
    """The rate-limited test server (no limits when none are given) in its own process."""

    def __init__(self, limits: dict[str, Any]) -> None:
        import subprocess

        code = SERVER.format(root=str(ROOT)).replace(
            '    app.router.add_get("/counters", counters)\n',
            '    app.router.add_get("/counters", counters)\n' + SPAN,
        ).replace("ServerState(record_requests=False, validate_spec=False)", "ServerState(record_requests=False, validate_spec=False, reply=' '.join(['w'] * 20))")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(limits)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.base = self.proc.stdout.readline().strip()
        self.url = self.base + "/v1"

    def get(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(self.base + path) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def ray_case(server: Server, prompts: Path, n: int, actors: int) -> dict[str, Any]:
    before = server.get("/counters")
    config = {"provider": "openai", "base_url": server.url, "model": "gpt-4o-mini", "max_tokens": 64}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_batch(prompts, config, output=Path(tmp) / "o.jsonl", actors=actors,
                           concurrency_per_actor=32, progress=False)
        wall = time.perf_counter() - started
    after = server.get("/counters")
    times = server.get("/span")[before["admitted"]:]
    span = max(times) - min(times)
    return {
        "actors": actors,
        "prompts": n,
        "failed": result.failed,
        "429": after["rejected"] - before["rejected"],
        "wall s": wall,
        "span s": span,
        "rows/s (wall)": n / wall,
        "rows/s (span)": n / span,
    }


async def in_process(server: Server, n: int) -> dict[str, Any]:
    async with OpenAILLM(model="gpt-4o-mini", base_url=server.url, max_tokens=64) as llm:
        started = time.perf_counter()
        results = await llm.batch_generate([f"p{i}" for i in range(n)], concurrency=64, return_exceptions=True)
        wall = time.perf_counter() - started
    return {"actors": "in-process", "prompts": n, "failed": sum(isinstance(r, BaseException) for r in results),
            "429": 0, "wall s": wall, "span s": wall, "rows/s (wall)": n / wall, "rows/s (span)": n / wall}


def table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("| " + " | ".join("---:" for _ in cols) + " |")
    for row in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_fast = 1000 if args.quick else 3000
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fast_prompts = Path(tmp) / "fast.txt"
            fast_prompts.write_text("".join(f"p{i}\n" for i in range(n_fast)))
            server = Server({})
            try:
                rows = [asyncio.run(in_process(server, n_fast))]
                rows += [ray_case(server, fast_prompts, n_fast, a) for a in (1, 2, 4)]
            finally:
                server.close()
            table("(a) unlimited fast server", rows)
            limited = Path(tmp) / "limited.txt"
            limited.write_text("".join(f"p{i}\n" for i in range(400)))
            rows = []
            for actors in (1, 2, 4):
                server = Server({"requests_per_second": 40.0, "request_burst": 10})
                try:
                    rows.append(ray_case(server, limited, 400, actors))
                finally:
                    server.close()
            table("(b) 40 requests/s, burst 10, shared limit (ideal span 9.75 s)", rows)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
