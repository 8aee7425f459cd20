"""Fan-out against a rate-limited server: failures, 429s and time against the ideal.

    python benchmarks/bench_ratelimit.py            # the table in benchmarks/README.md
    python benchmarks/bench_ratelimit.py --quick

The server is the OpenAI-compatible test server behind OpenAI-style token buckets
(tests/servers/ratelimit_server.py), in its own process. Each case sends N prompts through
``batch_generate`` at concurrency 64 with default settings (max_retries=2) unless the case
says otherwise; the token cases set ``max_tokens=1024``, where estimates start. "ideal" is the time the server's buckets need at best: (N - burst) / rate
for requests, (tokens admitted - burst) / rate for tokens. The row "no client limiter"
replaces the instance's limiter with one that never waits: what every task backing off on
its own gives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmkit import OpenAILLM  # noqa: E402
from llmkit.http.ratelimit import Feedback, Ticket  # noqa: E402

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


class NoWait:
    """A limiter backend that never holds anyone (every task retries on its own)."""

    counts_tokens = False

    async def reserve(self, tokens: float) -> tuple[float, Ticket | None]:
        return 0.0, Ticket(0.0, tokens, 0.0, 0.0, 0)

    async def wait_left(self, ticket: Ticket) -> float | None:
        return 0.0

    def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None:
        return None

    def correct(self, ticket: Ticket, tokens: float) -> None:
        return None


async def run_case(name: str, server: dict[str, Any], n: int, words: int, **client: Any) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER.format(root=str(ROOT)), json.dumps(server),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        base = (await proc.stdout.readline()).decode().strip()
        no_limiter = client.pop("no_limiter", False)
        prompts = [" ".join(f"p{i}w{j}" for j in range(words)) for i in range(n)]
        async with OpenAILLM(model="gpt-4o-mini", base_url=base + "/v1", **client) as llm:
            if no_limiter:
                llm._rate_limiter.backend = NoWait()
            started = time.perf_counter()
            results = await llm.batch_generate(prompts, concurrency=64, return_exceptions=True)
            elapsed = time.perf_counter() - started
            counters = await llm._http.request("GET", base + "/counters")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 10)
    if "requests_per_second" in server:
        ideal = (n - server.get("request_burst", 10)) / server["requests_per_second"]
    else:
        ideal = (counters["tokens"] - server["token_burst"]) / server["tokens_per_second"]
    sent = counters["admitted"] + counters["rejected"]
    return {
        "case": name,
        "prompts": n,
        "failed": sum(isinstance(r, BaseException) for r in results),
        "requests": sent,
        "429": counters["rejected"],
        "429 %": 100.0 * counters["rejected"] / max(1, sent),
        "time s": elapsed,
        "ideal s": ideal,
        "x ideal": elapsed / ideal,
    }


def cases(quick: bool) -> list[tuple[str, dict[str, Any], int, int, dict[str, Any]]]:
    n = 200 if quick else 400
    req = {"requests_per_second": 40.0, "request_burst": 10}
    tok = {"tokens_per_second": 800.0, "token_burst": 400.0}
    t = 120 if quick else 240
    return [
        ("40 req/s, burst 10: defaults", req, n, 1, {}),
        ("40 req/s, burst 10: requests_per_minute=2400", req, n, 1, {"requests_per_minute": 2400}),
        ("40 req/s, burst 10: no client limiter", req, n, 1, {"no_limiter": True}),
        ("800 tokens/s, burst 400: defaults", tok, t, 20, {"max_tokens": 1024}),
        (
            "800 tokens/s, burst 400: tokens_per_minute=48000",
            tok, t, 20, {"max_tokens": 1024, "tokens_per_minute": 48000},
        ),
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols[1:]) + " |")
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = [await run_case(name, server, n, words, **client) for name, server, n, words, client in cases(args.quick)]
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
