"""Client CPU per streamed event of the Responses API (``POST /v1/responses``, SSE with
``event:`` lines): llmkit with ``extra={"api": "responses"}`` vs the raw aiohttp floor and
openai-python's ``client.responses.create(stream=True)``, against the repository's test
server in its own process (benchmarks/_server.py; the same harness as bench_openai.py).

Each client runs in a fresh subprocess; only its CPU time (``time.process_time``) is
counted, after a warm-up; best of ``--repeats`` runs. The floor splits the bytes into lines
(keeping only the unfinished tail), decodes each ``data:`` line with ``orjson.loads`` and
counts the ``response.output_text.delta`` events until ``response.completed``: nothing more.

    python benchmarks/bench_responses.py            # 16 streams of 2000 deltas, ~1 min
    python benchmarks/bench_responses.py --quick    # 4 streams of 1000 deltas

A markdown table goes to stdout, JSON to benchmarks/results/responses.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_openai import Server, _drive  # noqa: E402  (the same server and driver)

MODEL = "gpt-4o-mini"
PROMPT = "Say something."
CLIENTS = ("floor", "llmkit", "llmkit-typed", "llmkit-chat-api", "openai")
LABELS = {
    "floor": "raw aiohttp + orjson (floor)",
    "llmkit": "llmkit generate_stream, api=responses",
    "llmkit-typed": "llmkit chat_stream, api=responses",
    "llmkit-chat-api": "llmkit generate_stream, chat completions (reference)",
    "openai": "openai-python responses.create(stream=True)",
}


class Floor:
    def __init__(self, url: str) -> None:
        import aiohttp

        self.url = url + "/responses"
        self.session = aiohttp.ClientSession()
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer dummy"}

    async def stream(self) -> int:
        import orjson

        loads = orjson.loads
        body = orjson.dumps({"model": MODEL, "input": PROMPT, "stream": True})
        n = 0
        tail = b""
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            async for data in resp.content.iter_any():
                lines = (tail + data if tail else data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if line[:6] != b"data: ":
                        continue
                    kind = loads(line[6:])["type"]
                    if kind == "response.output_text.delta":
                        n += 1
                    elif kind == "response.completed":
                        return n
        return n

    async def close(self) -> None:
        await self.session.close()


class Llmkit:
    api = "responses"

    def __init__(self, url: str) -> None:
        from llmkit import OpenAILLM

        self.llm = OpenAILLM(model=MODEL, base_url=url, api_key="dummy", extra={"api": self.api})

    async def stream(self) -> int:
        n = 0
        async for _ in self.llm.generate_stream(PROMPT):
            n += 1
        return n

    async def close(self) -> None:
        await self.llm.aclose()


class LlmkitTyped(Llmkit):
    async def stream(self) -> int:
        n = 0
        async for chunk in self.llm.chat_stream(PROMPT):
            if chunk.delta:
                n += 1
        return n


class LlmkitChatAPI(Llmkit):
    api = "chat"


class OpenAIPython:
    def __init__(self, url: str) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=url, api_key="dummy", max_retries=0)

    async def stream(self) -> int:
        n = 0
        events = await self.client.responses.create(model=MODEL, input=PROMPT, stream=True)
        async for event in events:
            if event.type == "response.output_text.delta":
                n += 1
        return n

    async def close(self) -> None:
        await self.client.close()


CLASSES = {"floor": Floor, "llmkit": Llmkit, "llmkit-typed": LlmkitTyped,
           "llmkit-chat-api": LlmkitChatAPI, "openai": OpenAIPython}


async def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    client = CLASSES[spec["client"]](spec["url"])
    n = int(spec["n"])
    try:
        await client.stream()  # warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        counts = await _drive(lambda i: client.stream(), n, 4)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    finally:
        await client.close()
    deltas = sum(counts)
    assert deltas >= n * 10, f"too few deltas: {counts[:3]}"
    return {"cpu_s": cpu, "wall_s": wall, "units": deltas}


def run_case(client: str, n: int, words: int, repeats: int) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(repeats):
        with Server(words) as srv:
            spec = {"client": client, "url": srv.url, "n": n}
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True, text=True, timeout=300, env=env,
            )
        if proc.returncode != 0:
            return {"client": client, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if best is None or res["cpu_s"] < best["cpu_s"]:
            best = res
    assert best is not None
    best.update(client=client, n=n, cpu_us_per_event=1e6 * best["cpu_s"] / best["units"])
    print(f"  {client:16} {best['cpu_us_per_event']:.2f} us CPU/event", file=sys.stderr, flush=True)
    return best


def render(runs: list[dict[str, Any]]) -> str:
    floor = next((r for r in runs if r["client"] == "floor" and "cpu_s" in r), None)
    lines = ["| client | CPU us/event | vs floor | wall s | events/s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {LABELS[r['client']]} | error: {r['error'][:60]} | | | |")
            continue
        ratio = f"{r['cpu_us_per_event'] / floor['cpu_us_per_event']:.2f}x" if floor else "-"
        lines.append(f"| {LABELS[r['client']]} | {r['cpu_us_per_event']:.2f} | {ratio} | "
                     f"{r['wall_s']:.2f} | {r['units'] / r['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker_main(json.loads(args.worker)))))
        return
    n, words = (4, 1000) if args.quick else (16, 2000)
    runs = [run_case(c, n, words, 1 if args.quick else args.repeats)
            for c in args.clients.split(",") if c in CLASSES]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "responses.json").write_text(json.dumps({
        "runs": runs, "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(), "streams": n, "deltas_per_stream": words,
    }, indent=2))
    print(render(runs))
    floor = next((r for r in runs if r["client"] == "floor" and "cpu_s" in r), None)
    for name in ("llmkit", "llmkit-typed"):
        r = next((r for r in runs if r["client"] == name and "cpu_s" in r), None)
        if floor and r:
            ratio = r["cpu_us_per_event"] / floor["cpu_us_per_event"]
            print(f"\n{LABELS[name]}: {ratio:.2f}x floor (goal <= 2x): {'met' if ratio <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
