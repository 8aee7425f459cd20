"""Long-life soak of one llmkit instance: memory, file descriptors and tasks over many
mixed calls, and the memory each open stream holds, side by side with openai-python.

(a) soak: one ``OpenAILLM`` doing ``--calls`` mixed calls (default 100 000) at concurrency
    256: chat, generate, full ``chat_stream`` and ``generate_stream`` streams, streams
    abandoned after one chunk with ``aclose()``, streams whose task is cancelled mid-way,
    embeddings, and calls that fail with 500 and with 429 (``max_retries=1``). Client RSS at
    every third (after ``gc.collect()``), open file descriptors and asyncio tasks against
    the baseline, and how every call ended, counted per kind.
(b) open streams: ``--streams`` (default 10 000) streams open at once, each having read
    its first chunk; RSS per open stream for llmkit and for openai-python, each in a fresh
    process, against the same server.

The server (:func:`serve`, a lean OpenAI-compatible one: fixed replies, the behaviour
chosen by the request's model name) runs in its own process, so its memory and CPU are not
the client's. Only the public API is used (``from llmkit import ...``).

    python benchmarks/bench_soak.py                        # 100 000 calls + 10 000 streams
    python benchmarks/bench_soak.py --calls 20000 --streams 2000   # a short run
    python benchmarks/bench_soak.py --cases soak --trace   # tracemalloc / gc diff per third

A markdown table goes to stdout, JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import platform
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MODEL = "gpt-4o-mini"
WORDS = 20  # content chunks of a full stream
SLOW_WORDS = 100  # chunks of the stream that is cancelled mid-way (3 ms apart)
DIM = 256  # embedding dimension
# the mix, per 20 calls
MIX = (
    ["chat"] * 4 + ["generate"] * 2 + ["chat_stream"] * 3 + ["generate_stream"]
    + ["abandon"] * 2 + ["cancel"] * 2 + ["embed"] * 3 + ["fail500"] * 2 + ["fail429"]
)
REPLY = " ".join(f"w{i}" for i in range(WORDS))


# =========================================================================== server


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, int] | None = None, choices: bool = True) -> bytes:
    obj: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
        "system_fingerprint": "fp_soak",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices else [],
    }
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _stream_events(model: str, words: int) -> list[bytes]:
    cid = "chatcmpl-soak"
    usage = {"prompt_tokens": 3, "completion_tokens": words, "total_tokens": words + 3}
    return (
        [_chunk(cid, model, {"role": "assistant", "content": ""})]
        + [_chunk(cid, model, {"content": f"w{i} " if i < words - 1 else f"w{i}"})
           for i in range(words)]
        + [_chunk(cid, model, {}, "stop"), _chunk(cid, model, {}, usage=usage, choices=False),
           b"data: [DONE]\n\n"]
    )


def _error(status: int, message: str, etype: str, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": etype, "param": None,
                                 "code": code}}).encode()


async def serve(port: int, flavor: str = "lean") -> None:
    """Until stdin closes: ``fail-500`` / ``fail-429`` models answer that status, ``slow``
    streams 2 ms apart, ``hold`` streams one chunk and then waits for the client to go.
    ``flavor="tests"``: every other request goes to the repository's OpenAI test server
    (tests/servers, spec validation and request recording off)."""
    from aiohttp import web

    chat_reply = json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion", "created": 1700000000,
        "model": MODEL, "system_fingerprint": "fp_soak",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": WORDS, "total_tokens": WORDS + 3},
    }).encode()
    vector = base64.b64encode(struct.pack(f"<{DIM}f", *[i / DIM for i in range(DIM)])).decode()
    embed_reply = json.dumps({
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }).encode()
    full = _stream_events(MODEL, WORDS)
    slow = _stream_events("slow", SLOW_WORDS)
    hold = _stream_events("hold", 2)[:2]
    e500 = _error(500, "The server had an error while processing your request.",
                  "server_error", None)
    e429 = _error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded")
    count = 0

    def headers(ctype: str = "application/json", **more: str) -> dict[str, str]:
        # a fresh request id per response, as real servers send
        nonlocal count
        count += 1
        return {"Content-Type": ctype, "x-request-id": f"req_{count:016x}",
                "openai-processing-ms": str(count % 97), **more}

    def cid() -> bytes:
        return f"chatcmpl-{count:024x}".encode()  # a fresh completion id per reply

    async def chat(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        model = body.get("model")
        if model == "fail-500":
            return web.Response(body=e500, status=500, headers=headers())
        if model == "fail-429":
            return web.Response(body=e429, status=429, headers=headers(
                **{"retry-after-ms": "0", "retry-after": "0"}))
        if not body.get("stream"):
            return web.Response(body=chat_reply.replace(b"chatcmpl-soak", cid()),
                                headers=headers())
        resp = web.StreamResponse(headers=headers("text/event-stream", **{
            "Cache-Control": "no-cache"}))
        await resp.prepare(request)
        events = {"slow": slow, "hold": hold}.get(model, full)
        name = cid()
        try:
            for ev in events:  # one write per event, as a generating server sends them
                await resp.write(ev.replace(b"chatcmpl-soak", name))
                if model == "slow":
                    await asyncio.sleep(0.003)
            if model == "hold":
                await asyncio.sleep(600)  # cancelled when the client goes away
            await resp.write_eof()
        except ConnectionError:  # the client went away mid-stream (abandoned, cancelled)
            pass
        return resp

    async def embeddings(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=embed_reply, headers=headers())

    if flavor == "tests":
        sys.path.insert(0, str(ROOT))
        from tests.servers import ServerState, make_openai_app

        state = ServerState(record_requests=False, validate_spec=False)
        state.reply, state.embedding_dim = REPLY, DIM
        app = make_openai_app(state)
        special = {"fail-500", "fail-429", "slow", "hold"}

        @web.middleware
        async def route(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.endswith("/chat/completions"):
                body = json.loads(await request.read())
                if body.get("model") in special:
                    return await chat(request)
            return await handler(request)

        app.middlewares.insert(0, route)
    else:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5,
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=16384)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await runner.cleanup()


class Server:
    def __init__(self, flavor: str = "lean") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", flavor],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError("the soak server did not start")

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# =========================================================================== client side


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Tracer:
    """With ``--trace``: tracemalloc snapshots and live object counts by type, diffed
    between the thirds (slow; for finding what grows, not for the numbers)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.snap: Any = None
        self.types: Counter[str] = Counter()
        if on:
            import tracemalloc

            tracemalloc.start(12)

    def mark(self, label: str) -> list[str]:
        if not self.on:
            return []
        import tracemalloc

        gc.collect()
        import linecache

        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__),
             tracemalloc.Filter(False, linecache.__file__)])
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        out = []
        if self.snap is not None:
            out.append(f"-- {label}: allocation growth by traceback")
            for stat in snap.compare_to(self.snap, "traceback")[:8]:
                if stat.size_diff <= 0:
                    continue
                out.append(f"{stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks")
                out.extend("    " + line for line in stat.traceback.format()[-8:])
            grown = [(t, n - self.types.get(t, 0)) for t, n in types.items()]
            grown = sorted((g for g in grown if g[1] > 0), key=lambda g: -g[1])[:15]
            out.append(f"-- {label}: live objects grown by type: {grown}")
        self.snap, self.types = snap, types
        return out


async def one_call(llm: Any, kind: str, errors: Any, i: int = 0) -> str:
    """Run call ``i`` of ``kind``; return how it ended ('ok' or what went wrong)."""
    msgs = [{"role": "user", "content": f"Say something about {i}."}]
    if kind == "chat":
        r = await llm.chat(msgs)
        return "ok" if r.content == REPLY and r.usage.completion_tokens == WORDS else "bad reply"
    if kind == "generate":
        return "ok" if await llm.generate(msgs) == REPLY else "bad reply"
    if kind == "chat_stream":
        parts, last = [], None
        async for chunk in llm.chat_stream(msgs):
            parts.append(chunk.delta)
            last = chunk
        good = "".join(parts) == REPLY and last is not None and last.finish_reason == "stop"
        return "ok" if good and last.usage is not None else "bad stream"
    if kind == "generate_stream":
        text = "".join([d async for d in llm.generate_stream(msgs)])
        return "ok" if text == REPLY else "bad stream"
    if kind == "abandon":
        stream = llm.chat_stream(msgs)
        first = await stream.__anext__()
        await stream.aclose()
        return "ok" if first is not None else "bad stream"
    if kind == "cancel":
        got = asyncio.Event()

        async def consume() -> None:
            n = 0
            async for _ in llm.generate_stream(msgs, model="slow"):
                n += 1
                if n == 3:
                    got.set()
            got.set()  # the whole stream came before the cancel: counted below

        task = asyncio.ensure_future(consume())
        await got.wait()
        if task.done():
            return "finished before cancel"
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "ok"
        return "not cancelled"
    if kind == "embed":
        v = await llm.embed(f"hello world {i}")
        return "ok" if len(v) == DIM else "bad vector"
    if kind in ("fail500", "fail429"):
        want = errors.ServerError if kind == "fail500" else errors.RateLimitError
        try:
            await llm.generate(msgs, model="fail-500" if kind == "fail500" else "fail-429")
        except want:
            return "ok"
        except Exception as exc:
            return type(exc).__name__
        return "no error"
    raise ValueError(kind)


async def soak(url: str, calls: int, concurrency: int, trace: bool) -> dict[str, Any]:
    import llmkit
    from llmkit import OpenAILLM

    gc.collect()
    fds0, tasks0 = open_fds(), len(asyncio.all_tasks())
    llm = OpenAILLM(model=MODEL, base_url=url, api_key="dummy", max_retries=1,
                    max_concurrency=concurrency,
                    extra={"embedding_model": "text-embedding-3-small"})
    tracer = Tracer(trace)
    ends: dict[str, Counter[str]] = {k: Counter() for k in sorted(set(MIX))}
    for kind in MIX:  # warm-up: every kind once
        await one_call(llm, kind, llmkit)
    thirds = [calls // 3, 2 * calls // 3, calls]
    marks: list[dict[str, Any]] = []
    lines: list[str] = []
    done = 0
    next_call = 0

    def mark(label: str) -> None:
        gc.collect()
        marks.append({"label": label, "calls": done, "rss_mb": rss_mb(), "fds": open_fds(),
                      "tasks": len(asyncio.all_tasks()), "gc_objects": len(gc.get_objects()),
                      "t": time.perf_counter()})
        lines.extend(tracer.mark(label))

    mark("start")

    async def worker(limit: int) -> None:
        nonlocal done, next_call
        while next_call < limit:
            i = next_call
            next_call += 1
            kind = MIX[i % len(MIX)]
            try:
                end = await one_call(llm, kind, llmkit, i)
            except Exception as exc:
                end = type(exc).__name__
            ends[kind][end] += 1
            done += 1

    # three thirds; between them the calls in flight finish, so every mark is taken at
    # rest (the pool keeps its idle connections)
    wall = 0.0
    for limit, label in zip(thirds, ("1/3", "2/3", "end"), strict=True):
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(limit) for _ in range(concurrency)))
        wall += time.perf_counter() - t0
        await asyncio.sleep(0.1)  # aborted connections' callbacks
        mark(label)
    metrics = llm.get_metrics()
    await llm.aclose()
    await asyncio.sleep(0.1)
    gc.collect()
    after = {"fds": open_fds(), "tasks": len(asyncio.all_tasks())}
    return {
        "calls": calls, "concurrency": concurrency, "wall_s": wall, "marks": marks,
        "baseline": {"fds": fds0, "tasks": tasks0}, "after_close": after,
        "ends": {k: dict(v) for k, v in ends.items()},
        "requests": getattr(metrics, "requests", None), "trace": lines,
    }


async def open_streams(url: str, client: str, n: int) -> dict[str, Any]:
    """``n`` streams open at once, each past its first chunk; RSS per stream."""
    msgs = [{"role": "user", "content": "Say something."}]
    if client == "llmkit":
        from llmkit import OpenAILLM

        llm = OpenAILLM(model=MODEL, base_url=url, api_key="dummy", max_concurrency=n,
                        timeout=300, extra={"connection_limit": n})

        async def opened() -> Any:
            stream = llm.chat_stream(msgs, model="hold")
            await stream.__anext__()
            return stream

        async def close_all(streams: list[Any]) -> None:
            for s in streams:
                await s.aclose()
            await llm.aclose()
    else:
        import httpx
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        oc = AsyncOpenAI(base_url=url, api_key="dummy", max_retries=0, timeout=300,
                         http_client=DefaultAsyncHttpxClient(
                             limits=httpx.Limits(max_connections=n,
                                                 max_keepalive_connections=n)))

        async def opened() -> Any:
            stream = await oc.chat.completions.create(model="hold", messages=msgs,  # type: ignore[arg-type]
                                                      stream=True)
            await stream.__anext__()
            return stream

        async def close_all(streams: list[Any]) -> None:
            for s in streams:
                await s.close()
            await oc.close()

    first = await opened()  # imports and the first connection, before the baseline
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    streams = list(await asyncio.gather(*(opened() for _ in range(n - 1))))
    wall = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_mb()
    await close_all([first, *streams])
    return {"client": client, "streams": n, "rss_before_mb": rss0, "rss_open_mb": rss1,
            "kb_per_stream": (rss1 - rss0) * 1024 / (n - 1), "open_wall_s": wall}


# =========================================================================== report


def render_soak(r: dict[str, Any]) -> list[str]:
    marks = r["marks"]
    out = [f"### (a) {r['calls']} mixed calls at concurrency {r['concurrency']} "
           f"({r['wall_s']:.0f} s, {r['calls'] / r['wall_s']:.0f} calls/s)\n",
           "| point | calls | RSS MB | open fds | asyncio tasks | gc objects |",
           "| --- | ---: | ---: | ---: | ---: | ---: |",
           f"| before the instance | | | {r['baseline']['fds']} | {r['baseline']['tasks']} | |"]
    for m in marks:
        out.append(f"| {m['label']} | {m['calls']} | {m['rss_mb']:.1f} | {m['fds']} | "
                   f"{m['tasks']} | {m['gc_objects']} |")
    out.append(f"| after aclose() | | | {r['after_close']['fds']} | "
               f"{r['after_close']['tasks']} | |")
    third = {m["label"]: m for m in marks}
    growth = third["end"]["rss_mb"] - third["1/3"]["rss_mb"]
    out.append(f"\nRSS growth after the first third: {growth:+.1f} MB "
               f"({growth * 1024 * 1024 / max(1, third['end']['calls'] - third['1/3']['calls']):.1f}"
               " bytes/call)\n")
    out.append("| kind | calls | ended as expected | other endings |")
    out.append("| --- | ---: | ---: | --- |")
    for kind, ends in r["ends"].items():
        other = {k: v for k, v in ends.items() if k != "ok"}
        out.append(f"| {kind} | {sum(ends.values())} | {ends.get('ok', 0)} | {other or '-'} |")
    return out


def render_streams(rows: list[dict[str, Any]]) -> list[str]:
    out = ["\n### (b) streams open at once (each past its first chunk)\n",
           "| client | streams | RSS before MB | RSS open MB | KB per open stream | open s |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['client']} | error: {r['error']} | | | | |")
            continue
        out.append(f"| {r['client']} | {r['streams']} | {r['rss_before_mb']:.1f} | "
                   f"{r['rss_open_mb']:.1f} | {r['kb_per_stream']:.1f} | {r['open_wall_s']:.1f} |")
    return out


def run_client(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if proc.returncode != 0:
        return {"client": spec.get("client"), "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["case"] == "soak":
        return asyncio.run(soak(spec["url"], spec["calls"], spec["concurrency"], spec["trace"]))
    return asyncio.run(open_streams(spec["url"], spec["client"], spec["streams"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--cases", default="soak,streams")
    parser.add_argument("--trace", action="store_true",
                        help="tracemalloc and gc type counts diffed per third (slow)")
    parser.add_argument("--server", choices=("lean", "tests"), default="lean",
                        help="lean: this file's server; tests: the repository's test server")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(0, args.serve))
        return
    if args.client:
        print(json.dumps(client_main(json.loads(args.client))))
        return

    cases = set(args.cases.split(","))
    results: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                           "platform": platform.platform(),
                                           "cpus": os.cpu_count()}}
    lines: list[str] = []
    if "soak" in cases:
        srv = Server(args.server)
        try:
            res = run_client({"case": "soak", "url": srv.url, "calls": args.calls,
                              "concurrency": args.concurrency, "trace": args.trace},
                             timeout=7200)
        finally:
            srv.stop()
        results["soak"] = res
        if "error" in res:
            lines.append(f"soak: error: {res['error']}")
        else:
            lines += render_soak(res)
            lines += res["trace"]
    if "streams" in cases:
        rows = []
        for client in ("llmkit", "openai-python"):
            srv = Server(args.server)
            try:
                rows.append(run_client({"case": "streams", "url": srv.url, "client": client,
                                        "streams": args.streams}, timeout=1800))
            finally:
                srv.stop()
        results["streams"] = rows
        lines += render_streams(rows)
    results["loadavg_at_end"] = os.getloadavg()
    print("\n".join(lines))
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
