"""Client overhead of OpenAI-compatible chat: llmkit vs a raw aiohttp floor, openai-python
and LiteLLM, against the same local test server.

One command runs every case. Each case starts the server (benchmarks/_server.py) in its
own process and runs each client in a fresh subprocess, so only the client's CPU time
(``time.process_time`` of the client process) is counted and imports or caches of one
client never help another.

(a) chat:   CPU per non-streamed request at concurrency 1, 16 and 256;
(b) stream: CPU per streamed SSE chunk (one long reply per request);
(c) fanout: 10k prompts at concurrency 256, wall time and RSS: floor (Semaphore + gather)
            vs ``batch_generate``;
(d) import: ``import llmkit`` and ``from llmkit import LLMConfig, create_llm`` in a fresh
            interpreter (best of N), and whether torch got imported;
(e) observability: CPU per request and per chunk of llmkit alone, with a no-op hook on
            every event, and with ``llmkit.instrument()`` (OpenTelemetry SDK providers,
            spans batched to an exporter that drops them, metrics aggregated in memory).

Usage::

    pip install -e '.[bench]'
    python benchmarks/bench_openai.py           # full run (< 10 min on 2 cores)
    python benchmarks/bench_openai.py --quick   # < 2 min
    python benchmarks/bench_openai.py --cases overhead   # (e) only

A markdown table goes to stdout, JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say something."}]
CLIENTS = ("floor", "llmkit", "llmkit-typed", "openai", "litellm")
LABELS = {
    "floor": "raw aiohttp + orjson (floor)",
    "llmkit": "llmkit OpenAILLM",
    "llmkit-typed": "llmkit OpenAILLM (chat_stream)",
    "llmkit-chat": "llmkit OpenAILLM (chat)",
    "openai": "openai-python AsyncOpenAI",
    "litellm": "litellm acompletion",
    "llmkit-hooks": "llmkit OpenAILLM + no-op hooks",
    "llmkit-otel": "llmkit OpenAILLM + llmkit.instrument()",
}
OVERHEAD_CLIENTS = ("llmkit", "llmkit-hooks", "llmkit-otel")
CASES = ("chat", "stream", "fanout", "import", "overhead")


# =========================================================================== clients
# Each client offers chat(prompt) -> str and stream() -> number of content chunks.


class Floor:
    """The least code that does the same HTTP work: aiohttp + orjson."""

    def __init__(self, url: str, concurrency: int) -> None:
        import aiohttp

        self.url = url + "/chat/completions"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(100, concurrency))
        )
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer dummy"}

    async def chat(self, prompt: str) -> str:
        import orjson

        body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}]})
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            obj = orjson.loads(await resp.read())
        return str(obj["choices"][0]["message"]["content"])

    async def stream(self) -> int:
        """Split the byte stream into lines (only the unfinished tail is kept between
        reads), decode each ``data:`` event and read its content: nothing more."""
        import orjson

        loads = orjson.loads
        body = orjson.dumps({"model": MODEL, "messages": MESSAGES, "stream": True})
        n = 0
        tail = b""
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            async for data in resp.content.iter_any():
                lines = (tail + data if tail else data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if line[:6] != b"data: ":
                        continue
                    payload = line[6:]
                    if payload == b"[DONE]":
                        return n
                    choices = loads(payload)["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        n += 1
        return n

    async def close(self) -> None:
        await self.session.close()


class Llmkit:
    def __init__(self, url: str, concurrency: int) -> None:
        from llmkit import OpenAILLM

        self.llm = OpenAILLM(
            model=MODEL, base_url=url, api_key="dummy", max_concurrency=max(64, concurrency)
        )

    async def chat(self, prompt: str) -> str:
        return await self.llm.generate(prompt)

    async def stream(self) -> int:
        n = 0
        async for _ in self.llm.generate_stream(MESSAGES):
            n += 1
        return n

    async def close(self) -> None:
        await self.llm.aclose()


class LlmkitTyped(Llmkit):
    """``chat_stream``: a typed :class:`StreamChunk` per event."""

    async def stream(self) -> int:
        n = 0
        async for chunk in self.llm.chat_stream(MESSAGES):
            if chunk.delta:
                n += 1
        return n


class LlmkitChat(Llmkit):
    """``chat``: a typed :class:`ChatResponse` per request."""

    async def chat(self, prompt: str) -> str:
        return (await self.llm.chat(prompt)).content


class LlmkitHooks(Llmkit):
    """llmkit with a no-op callback on every hook event."""

    def __init__(self, url: str, concurrency: int) -> None:
        super().__init__(url, concurrency)
        for event in ("request", "response", "retry", "error"):
            self.llm.on(event, lambda e: None)


class LlmkitOTel(Llmkit):
    """llmkit with OpenTelemetry on: SDK providers, spans batched and dropped."""

    def __init__(self, url: str, concurrency: int) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        import llmkit

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        llmkit.instrument(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        super().__init__(url, concurrency)

    async def close(self) -> None:
        await super().close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


class OpenAIPython:
    def __init__(self, url: str, concurrency: int) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=url, api_key="dummy", max_retries=0)

    async def chat(self, prompt: str) -> str:
        r = await self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}]
        )
        return r.choices[0].message.content or ""

    async def stream(self) -> int:
        n = 0
        stream = await self.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True  # type: ignore[arg-type]
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
        return n

    async def close(self) -> None:
        await self.client.close()


class LiteLLM:
    def __init__(self, url: str, concurrency: int) -> None:
        # never fetch the model cost map, no telemetry, no callbacks
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import litellm

        litellm.telemetry = False
        litellm.success_callback = []
        litellm.failure_callback = []
        litellm.callbacks = []
        litellm.suppress_debug_info = True
        self.litellm = litellm
        self.url = url

    async def chat(self, prompt: str) -> str:
        r = await self.litellm.acompletion(
            model=f"openai/{MODEL}",
            messages=[{"role": "user", "content": prompt}],
            api_base=self.url,
            api_key="dummy",
        )
        return str(r.choices[0].message.content)

    async def stream(self) -> int:
        n = 0
        resp = await self.litellm.acompletion(
            model=f"openai/{MODEL}", messages=MESSAGES, api_base=self.url, api_key="dummy",
            stream=True,
        )
        async for chunk in resp:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
        return n

    async def close(self) -> None:
        pass


def make_client(name: str, url: str, concurrency: int) -> Any:
    cls = {
        "floor": Floor, "llmkit": Llmkit, "llmkit-typed": LlmkitTyped, "llmkit-chat": LlmkitChat,
        "openai": OpenAIPython,
        "litellm": LiteLLM, "llmkit-hooks": LlmkitHooks, "llmkit-otel": LlmkitOTel,
    }[name]
    return cls(url, concurrency)


# =========================================================================== worker


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _drive(fn: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> list[Any]:
    """``n`` calls, ``concurrency`` at a time, through a fixed set of worker coroutines."""
    items = iter(range(n))
    out: list[Any] = []

    async def worker() -> None:
        for i in items:
            out.append(await fn(i))

    await asyncio.gather(*(worker() for _ in range(min(n, concurrency))))
    return out


async def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    case, name, url = spec["case"], spec["client"], spec["url"]
    n, concurrency = int(spec["n"]), int(spec["concurrency"])
    if spec.get("cpu") is not None:  # pin the client to one core
        os.sched_setaffinity(0, {int(spec["cpu"])})
    client = make_client(name, url, concurrency)
    try:
        # ``batches`` > 1: the measured work is done that many times and the batch that
        # took the least CPU counts (other processes on a shared machine only add)
        batches = int(spec.get("batches", 1))
        if case == "chat":
            await _drive(lambda i: client.chat(f"prompt {i}"), min(n, 50), concurrency)  # warm-up
            best = None
            for _ in range(batches):
                c0, t0 = time.process_time(), time.perf_counter()
                replies = await _drive(lambda i: client.chat(f"prompt {i}"), n, concurrency)
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                assert len(replies) == n and all(replies), "empty replies"
                best = (cpu, wall) if best is None or cpu < best[0] else best
            assert best is not None
            return {"cpu_s": best[0], "wall_s": best[1], "units": n, "unit": "request"}
        if case == "stream":
            await client.stream()  # warm-up
            best = None
            for _ in range(batches):
                c0, t0 = time.process_time(), time.perf_counter()
                counts = await _drive(lambda i: client.stream(), n, concurrency)
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                chunks = sum(counts)
                assert chunks >= n * 10, f"too few chunks: {counts[:3]}"
                best = (cpu, wall) if best is None or cpu < best[0] else best
            assert best is not None
            return {"cpu_s": best[0], "wall_s": best[1], "units": chunks, "unit": "chunk",
                    "chunks_per_request": chunks / n}
        if case == "fanout":
            await _drive(lambda i: client.chat(f"warm {i}"), 20, 4)
            prompts = [f"prompt {i}" for i in range(n)]
            rss0 = _rss_kb()
            c0, t0 = time.process_time(), time.perf_counter()
            if name == "floor":
                sem = asyncio.Semaphore(concurrency)

                async def one(p: str) -> str:
                    async with sem:
                        return str(await client.chat(p))

                replies = await asyncio.gather(*(one(p) for p in prompts))
            else:
                replies = await client.llm.batch_generate(prompts, concurrency=concurrency)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert replies[-1] == f"Echo: prompt {n - 1}" or replies[-1], "bad reply"
            return {"cpu_s": cpu, "wall_s": wall, "units": n, "unit": "request",
                    "rss_before_mb": rss0 / 1024, "peak_rss_mb": peak / 1024,
                    "rss_growth_mb": (peak - rss0) / 1024}
        raise ValueError(case)
    finally:
        await client.close()


# =========================================================================== orchestration


class Server:
    def __init__(self, reply_words: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_server.py"), "--reply-words", str(reply_words)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError("the benchmark server did not start")

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_worker(spec: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_case(case: str, client: str, n: int, concurrency: int, reply_words: int,
             repeats: int) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        with Server(reply_words) as srv:
            res = run_worker({"case": case, "client": client, "url": srv.url, "n": n,
                              "concurrency": concurrency})
        if "error" in res:
            best = res
            break
        if best is None or res["cpu_s"] < best["cpu_s"]:
            best = res
    assert best is not None
    best.update(case=case, client=client, n=n, concurrency=concurrency)
    if "cpu_s" in best:
        best["cpu_us_per_unit"] = 1e6 * best["cpu_s"] / best["units"]
    status = best.get("error") or f"{best['cpu_us_per_unit']:.1f} us CPU/{best['unit']}"
    print(f"  {case:6} c={concurrency:<3} {client:8} {status}", file=sys.stderr, flush=True)
    return best


IMPORT_SNIPPETS = {
    "dependency floor: pydantic.BaseModel, asyncio, orjson, backoff": (
        "from pydantic import BaseModel, SecretStr, Field; import asyncio, orjson, backoff"
    ),
    "import llmkit": "import llmkit",
    "from llmkit import LLMConfig, create_llm": "from llmkit import LLMConfig, create_llm",
    "import openai": "import openai",
    "import litellm": "import litellm",
}


def import_time(stmt: str, repeats: int) -> dict[str, Any]:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        f"{stmt}\n"
        "d = time.perf_counter() - t\n"
        "print(d, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True")
    # Measure what an installed package costs: bytecode cached, as pip install leaves it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "llmkit")],
                   capture_output=True, check=False)
    times = []
    torch = transformers = False
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=120, cwd=str(ROOT))
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1]}
        d, t, tr = out.stdout.split()
        times.append(float(d))
        torch, transformers = t == "True", tr == "True"
    return {"best_ms": 1000 * min(times), "median_ms": 1000 * sorted(times)[len(times) // 2],
            "torch_imported": torch, "transformers_imported": transformers}


# =========================================================================== report


def _ratio(value: float | None, floor: float | None) -> str:
    if value is None or not floor:
        return "-"
    return f"{value / floor:.2f}x"


def render(results: dict[str, Any]) -> str:
    lines = []
    lines.append("### (a) CPU per non-streamed chat request (client process only)\n")
    lines.append("| concurrency | client | CPU us/request | vs floor | wall s | req/s |")
    lines.append("| ---: | --- | ---: | ---: | ---: | ---: |")
    for row in _rows(results, "chat"):
        lines.append(row)
    lines.append("\n### (b) CPU per streamed chunk (SSE)\n")
    lines.append("| concurrency | client | CPU us/chunk | vs floor | wall s | chunks/s |")
    lines.append("| ---: | --- | ---: | ---: | ---: | ---: |")
    for row in _rows(results, "stream"):
        lines.append(row)
    lines.append("\n### (c) fan-out\n")
    lines.append("| prompts | concurrency | client | wall s | vs floor | CPU s | RSS before MB | peak RSS MB | growth MB |")
    lines.append("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    fan = [r for r in results["runs"] if r["case"] == "fanout"]
    floor = next((r for r in fan if r["client"] == "floor" and "wall_s" in r), None)
    for r in fan:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['concurrency']} | {LABELS[r['client']]} | error: {r['error']} |||||")
            continue
        lines.append(
            f"| {r['n']} | {r['concurrency']} | {LABELS[r['client']]} | {r['wall_s']:.2f} | "
            f"{_ratio(r['wall_s'], floor and floor['wall_s'])} | {r['cpu_s']:.2f} | "
            f"{r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_growth_mb']:.1f} |"
        )
    lines.append("\n### (d) import time (fresh interpreter, best of N)\n")
    lines.append("| statement | best ms | median ms | torch imported |")
    lines.append("| --- | ---: | ---: | --- |")
    for stmt, r in results["imports"].items():
        if "error" in r:
            lines.append(f"| `{stmt}` | error: {r['error']} | | |")
        else:
            lines.append(f"| `{stmt}` | {r['best_ms']:.1f} | {r['median_ms']:.1f} | {r['torch_imported']} |")
    lines.append("\n### (e) observability overhead (llmkit alone = 1.00x)\n")
    lines.append("| case | concurrency | client | CPU us/unit | vs llmkit | extra us/unit |")
    lines.append("| --- | ---: | --- | ---: | ---: | ---: |")
    for row in _overhead_rows(results):
        lines.append(row)
    lines.append("\n### Goals\n")
    for goal, ok, detail in results["goals"]:
        lines.append(f"- {'met' if ok else 'NOT met'}: {goal} ({detail})")
    return "\n".join(lines)


def _rows(results: dict[str, Any], case: str) -> list[str]:
    out = []
    runs = [r for r in results["runs"] if r["case"] == case]
    for c in sorted({r["concurrency"] for r in runs}):
        group = [r for r in runs if r["concurrency"] == c]
        floor = next((r for r in group if r["client"] == "floor" and "cpu_s" in r), None)
        for r in group:
            if "error" in r:
                out.append(f"| {c} | {LABELS[r['client']]} | error: {r['error']} | | | |")
                continue
            out.append(
                f"| {c} | {LABELS[r['client']]} | {r['cpu_us_per_unit']:.1f} | "
                f"{_ratio(r['cpu_us_per_unit'], floor and floor['cpu_us_per_unit'])} | "
                f"{r['wall_s']:.2f} | {r['units'] / r['wall_s']:.0f} |"
            )
    return out


def _overhead_rows(results: dict[str, Any]) -> list[str]:
    out = []
    runs = [r for r in results["runs"] if r["case"].startswith("overhead-")]
    for case, c in sorted({(r["case"], r["concurrency"]) for r in runs}):
        group = [r for r in runs if r["case"] == case and r["concurrency"] == c]
        base = next((r for r in group if r["client"] == "llmkit" and "cpu_s" in r), None)
        for r in group:
            if "error" in r:
                out.append(f"| {case[9:]} | {c} | {LABELS[r['client']]} | error: {r['error']} | | |")
                continue
            extra = r["cpu_us_per_unit"] - base["cpu_us_per_unit"] if base else None
            out.append(
                f"| {case[9:]} | {c} | {LABELS[r['client']]} | {r['cpu_us_per_unit']:.1f} | "
                f"{_ratio(r['cpu_us_per_unit'], base and base['cpu_us_per_unit'])} | "
                f"{'-' if extra is None else f'{extra:+.1f}'} |"
            )
    return out


def goals(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    runs = results["runs"]

    def get(case: str, client: str, c: int | None = None) -> dict[str, Any] | None:
        for r in runs:
            if r["case"] == case and r["client"] == client and (c is None or r["concurrency"] == c):
                return r if "cpu_s" in r else None
        return None

    out: list[tuple[str, bool, str]] = []
    for c in sorted({r["concurrency"] for r in runs if r["case"] == "chat"}):
        f, k, o, li = (get("chat", x, c) for x in ("floor", "llmkit", "openai", "litellm"))
        if f and k:
            ratio = k["cpu_us_per_unit"] / f["cpu_us_per_unit"]
            others = [x for x in (o, li) if x]
            below = all(k["cpu_us_per_unit"] < x["cpu_us_per_unit"] for x in others)
            out.append((
                f"non-streamed CPU <= 1.3x floor and below openai-python and litellm, c={c}",
                ratio <= 1.3 and below and len(others) == 2,
                f"{ratio:.2f}x floor; openai {_ratio(o and o['cpu_us_per_unit'], k['cpu_us_per_unit'])}"
                f", litellm {_ratio(li and li['cpu_us_per_unit'], k['cpu_us_per_unit'])} of llmkit",
            ))
    f = get("stream", "floor")
    for client, limit, what in (("llmkit", 1.5, "generate_stream"), ("llmkit-typed", 2.0, "chat_stream")):
        k = get("stream", client)
        if f and k:
            ratio = k["cpu_us_per_unit"] / f["cpu_us_per_unit"]
            out.append((f"per-chunk CPU of {what} <= {limit}x floor", ratio <= limit, f"{ratio:.2f}x"))
    imp = results["imports"].get("import llmkit", {})
    if "best_ms" in imp:
        out.append(("import llmkit < 100 ms without torch",
                    imp["best_ms"] < 100 and not imp["torch_imported"],
                    f"{imp['best_ms']:.1f} ms, torch imported: {imp['torch_imported']}"))
    imp = results["imports"].get("from llmkit import LLMConfig, create_llm", {})
    if "best_ms" in imp:
        out.append(("`from llmkit import LLMConfig, create_llm` < 100 ms",
                    imp["best_ms"] < 100 and not imp["torch_imported"],
                    f"{imp['best_ms']:.1f} ms, torch imported: {imp['torch_imported']}"))
    f, k = get("fanout", "floor"), get("fanout", "llmkit")
    if f and k:
        ratio = k["wall_s"] / f["wall_s"]
        flat = k["rss_growth_mb"] <= max(f["rss_growth_mb"], 5.0)
        out.append(("fan-out wall time within 1.2x of floor, RSS flat",
                    ratio <= 1.2 and flat,
                    f"{ratio:.2f}x wall; RSS growth {k['rss_growth_mb']:.1f} MB vs floor "
                    f"{f['rss_growth_mb']:.1f} MB"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 2 min)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--report", metavar="JSON", help="print the tables of an earlier run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.report:
        results = json.loads(Path(args.report).read_text())
        results["goals"] = goals(results)
        print(render(results))
        return

    if args.worker:
        print(json.dumps(asyncio.run(worker_main(json.loads(args.worker)))))
        return

    clients = [c for c in args.clients.split(",") if c in CLIENTS]
    cases = set(args.cases.split(","))
    if args.quick:
        chat_n = {1: 200, 16: 400, 256: 600}
        stream_n, stream_words, fan_n, repeats, import_repeats = 4, 1000, 2000, 1, 3
    else:
        chat_n = {1: 1000, 16: 2000, 256: 3000}
        stream_n, stream_words, fan_n, repeats, import_repeats = 16, 2000, 10_000, 2, 7

    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if "chat" in cases:
        print("(a) chat", file=sys.stderr)
        for c, n in chat_n.items():
            for client in clients:
                if client != "llmkit-typed":  # the same request path as llmkit
                    runs.append(run_case("chat", client, n, c, 50, repeats))
    if "stream" in cases:
        print("(b) stream", file=sys.stderr)
        for client in clients:
            runs.append(run_case("stream", client, stream_n, 4, stream_words, repeats))
    if "fanout" in cases:
        print("(c) fanout", file=sys.stderr)
        for client in ("floor", "llmkit"):
            runs.append(run_case("fanout", client, fan_n, 256, 20, 1))
    imports = {}
    if "import" in cases:
        print("(d) import", file=sys.stderr)
        imports = {label: import_time(stmt, import_repeats) for label, stmt in IMPORT_SNIPPETS.items()}
    if "overhead" in cases:
        print("(e) observability overhead", file=sys.stderr)
        for c in (1, 16):
            for client in OVERHEAD_CLIENTS:
                run = run_case("chat", client, chat_n[c], c, 50, repeats)
                runs.append({**run, "case": "overhead-chat"})
        for client in OVERHEAD_CLIENTS:
            run = run_case("stream", client, stream_n, 4, stream_words, repeats)
            runs.append({**run, "case": "overhead-stream"})

    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "mode": "quick" if args.quick else "full",
        "runs": runs,
        "imports": imports,
        "elapsed_s": time.perf_counter() - started,
    }
    results["goals"] = goals(results)
    table = render(results)
    print(table)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"openai-{results['mode']}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\n{results['mode']} run, {results['elapsed_s']:.0f} s; JSON: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
