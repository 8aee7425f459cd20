"""Client CPU cost of talking to Ollama: llmkit vs a raw aiohttp floor vs the ``ollama``
package's AsyncClient, against the same local test server.

The server (tests/servers/ollama_server.py) runs in a separate process, so only the
client's CPU time (``time.process_time`` of this process) is measured. Two workloads:

* stream: ``POST /api/chat`` with ``stream: true``; CPU microseconds per NDJSON chunk
  (llmkit's ``generate_stream`` yields text, ``chat_stream`` typed ``StreamChunk`` objects);
* chat: ``POST /api/chat`` with ``stream: false``; CPU microseconds per request
  (``--concurrency`` requests in flight).

Usage::

    python benchmarks/bench_ollama.py            # full run
    python benchmarks/bench_ollama.py --quick    # < 60 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "llama3.2"
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


# --------------------------------------------------------------------------- server process


def _serve(words: int, port_queue: Any, stop_event: Any) -> None:
    from tests.servers import ServerState, make_ollama_app, run_server

    async def main() -> None:
        state = ServerState(record_requests=False, validate_spec=False)  # timing, not conformance
        state.reply = " ".join(f"w{i}" for i in range(words))
        async with run_server(make_ollama_app(state)) as url:
            port_queue.put(url)
            await asyncio.get_running_loop().run_in_executor(None, stop_event.wait)

    asyncio.run(main())


# --------------------------------------------------------------------------- clients


class Floor:
    """Minimal aiohttp + orjson code doing the same requests: the stream splits each read
    into lines, decodes every line and reads its content, nothing more."""

    name = "raw aiohttp (floor)"

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Floor:
        import aiohttp

        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.session.close()

    async def stream(self) -> int:
        import orjson

        body = orjson.dumps({"model": MODEL, "messages": MESSAGES, "stream": True})
        n = 0
        buf = b""
        async with self.session.post(
            self.url + "/api/chat", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            async for data in resp.content.iter_any():
                buf = buf + data if buf else data
                lines = buf.split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if line and orjson.loads(line)["message"]["content"]:
                        n += 1
        return n

    async def chat(self) -> str:
        import orjson

        body = orjson.dumps({"model": MODEL, "messages": MESSAGES, "stream": False})
        async with self.session.post(
            self.url + "/api/chat", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            obj = orjson.loads(await resp.read())
        return str(obj["message"]["content"])


class Llmkit:
    name = "llmkit OllamaLLM (generate_stream)"

    def __init__(self, url: str) -> None:
        from llmkit.providers.ollama.client import OllamaLLM

        self.llm = OllamaLLM(model=MODEL, base_url=url)

    async def __aenter__(self) -> Llmkit:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.llm.aclose()

    async def stream(self) -> int:
        n = 0
        async for _ in self.llm.generate_stream(MESSAGES):
            n += 1
        return n

    async def chat(self) -> str:
        return (await self.llm.chat(MESSAGES)).content


class LlmkitChunks(Llmkit):
    name = "llmkit OllamaLLM (chat_stream)"

    async def stream(self) -> int:
        n = 0
        async for chunk in self.llm.chat_stream(MESSAGES):
            if chunk.delta:
                n += 1
        return n


class OllamaPackage:
    name = "ollama AsyncClient"

    def __init__(self, url: str) -> None:
        import ollama

        self.client = ollama.AsyncClient(host=url)

    async def __aenter__(self) -> OllamaPackage:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client._client.aclose()

    async def stream(self) -> int:
        n = 0
        async for part in await self.client.chat(model=MODEL, messages=MESSAGES, stream=True):
            if part.message.content:
                n += 1
        return n

    async def chat(self) -> str:
        resp = await self.client.chat(model=MODEL, messages=MESSAGES, stream=False)
        return str(resp.message.content)


# --------------------------------------------------------------------------- measurement


async def _cpu(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    gc.collect()
    start = time.process_time()
    result = await fn()
    return time.process_time() - start, result


async def bench_client(cls: Any, url: str, args: argparse.Namespace) -> dict[str, float]:
    async with cls(url) as client:
        # warm up: connection pool, imports, caches
        await client.stream()
        for _ in range(5):
            await client.chat()

        stream_samples = []
        for _ in range(args.repeats):
            async def streams() -> int:
                total = 0
                for _ in range(args.streams):
                    total += await client.stream()
                return total

            cpu, chunks = await _cpu(streams)
            stream_samples.append(cpu / chunks * 1e6)

        chat_samples = []
        for _ in range(args.repeats):
            sem = asyncio.Semaphore(args.concurrency)

            async def one(sem: asyncio.Semaphore = sem) -> str:
                async with sem:
                    return str(await client.chat())

            async def chats() -> int:
                replies = await asyncio.gather(*(one() for _ in range(args.requests)))
                assert all(replies)
                return len(replies)

            cpu, count = await _cpu(chats)
            chat_samples.append(cpu / count * 1e6)
    return {
        "stream_us": statistics.median(stream_samples),
        "chat_us": statistics.median(chat_samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    parser.add_argument("--words", type=int, help="NDJSON chunks per streamed reply")
    parser.add_argument("--streams", type=int, help="streamed requests per sample")
    parser.add_argument("--requests", type=int, help="non-streamed requests per sample")
    parser.add_argument("--repeats", type=int, help="samples per measurement (median kept)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    defaults = (500, 4, 200, 3) if args.quick else (2000, 10, 1000, 5)
    for key, value in zip(("words", "streams", "requests", "repeats"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, value)

    ctx = mp.get_context("spawn")
    port_queue = ctx.Queue()
    stop_event = ctx.Event()
    server = ctx.Process(target=_serve, args=(args.words, port_queue, stop_event), daemon=True)
    server.start()
    try:
        url = port_queue.get(timeout=30)
        results: dict[str, dict[str, float]] = {}
        for cls in (Floor, Llmkit, LlmkitChunks, OllamaPackage):
            results[cls.name] = asyncio.run(bench_client(cls, url, args))
    finally:
        stop_event.set()
        server.join(timeout=5)
        if server.is_alive():
            server.terminate()

    floor = results[Floor.name]
    print(
        f"\nClient CPU per operation (median of {args.repeats}); server in a separate process.\n"
        f"stream: {args.streams} x {args.words}-chunk NDJSON replies per sample; "
        f"chat: {args.requests} non-streamed requests, concurrency {args.concurrency}.\n"
        f"Python {platform.python_version()} on {platform.machine()}\n"
    )
    print("| client | CPU µs / streamed chunk | vs floor | CPU µs / chat request | vs floor |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['stream_us']:.1f} | {r['stream_us'] / floor['stream_us']:.2f}x "
            f"| {r['chat_us']:.0f} | {r['chat_us'] / floor['chat_us']:.2f}x |"
        )


if __name__ == "__main__":
    main()
