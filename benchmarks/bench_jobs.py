"""What the job's journal costs: rows/s of ``llmkit.jobs.run`` (live mode, every row
journaled, the output replaced atomically) and of ``llmkit batch`` (the CLI, a fresh
process) vs ``batch_generate`` on the same prompts, against the same local test server.

Usage::

    python benchmarks/bench_jobs.py              # 10,000 rows, best of 3
    python benchmarks/bench_jobs.py --rows 2000 --repeat 1   # quick

The server (benchmarks/_server.py, 20-word replies) runs in its own process. Each case
runs in a fresh subprocess at concurrency 256 (``max_concurrency`` 256); its wall time
counts from the first request to the last row on disk (``batch_generate`` keeps its
replies in memory and writes nothing). The CLI case is the whole ``llmkit batch``
command, interpreter start and imports included. Client CPU: the client process's CPU
time over the same span (the server's is not counted; for the CLI, the whole process). A markdown table goes to stdout, JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
CONCURRENCY = 256

CLIENT = r"""
import asyncio, json, sys, time
from pathlib import Path
import llmkit
from llmkit import jobs

case, url, src, out = sys.argv[1:5]
prompts = [line for line in Path(src).read_text().split("\n") if line]
config = llmkit.LLMConfig(provider="openai", model="gpt-4o-mini", base_url=url, api_key="k",
                          max_concurrency={C})

async def main():
    llm = llmkit.create_llm(config)
    await llm.batch_generate(prompts[:200], concurrency={C})  # warm the pool
    start, cpu = time.perf_counter(), time.process_time()
    if case == "batch_generate":
        replies = await llm.batch_generate(prompts, concurrency={C})
        assert len(replies) == len(prompts)
    else:
        summary = await jobs.run(src, llm, output=out, concurrency={C}, progress=False)
        assert summary.answered == len(prompts), summary
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    await llm.aclose()
    print(json.dumps({"wall": wall, "cpu": cpu}))

asyncio.run(main())
""".replace("{C}", str(CONCURRENCY))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMKIT_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_server.py"), "--reply-words", "20"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(),
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _case(case: str, url: str, src: Path, tmp: Path) -> dict[str, float]:
    out = tmp / f"{case}.jsonl"
    out.unlink(missing_ok=True)
    if case == "llmkit batch (CLI)":
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "llmkit", "--provider", "openai", "--base-url", url,
             "--model", "gpt-4o-mini", "batch", str(src), "-o", str(out),
             "--concurrency", str(CONCURRENCY), "--no-progress"],
            check=True, env={**_env(), "OPENAI_API_KEY": "k"}, capture_output=True,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert len(out.read_bytes().split(b"\n")) - 1 == len(src.read_text().split("\n")) - 1
        return {"wall": wall, "cpu": cpu}
    r = subprocess.run([sys.executable, "-c", CLIENT, case, url, str(src), str(out)],
                       check=True, env=_env(), capture_output=True, text=True)
    result: dict[str, float] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cases = ["batch_generate", "jobs.run (live)", "llmkit batch (CLI)"]
    best: dict[str, dict[str, float]] = {}
    server, url = _server()
    try:
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)
            src = tmp / "prompts.txt"
            src.write_text("".join(f"Question number {i}: say something.\n" for i in range(args.rows)))
            for _ in range(args.repeat):
                for case in cases:  # interleaved, so load changes hit every case alike
                    got = _case(case, url, src, tmp)
                    if case not in best or got["wall"] < best[case]["wall"]:
                        best[case] = got
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    base = args.rows / best["batch_generate"]["wall"]
    print(f"\n{args.rows} rows, concurrency {CONCURRENCY}, best of {args.repeat} "
          f"(Python {platform.python_version()}, {os.cpu_count()} CPUs)\n")
    base_cpu = best["batch_generate"]["cpu"]
    print("| case | wall s | rows/s | rows/s vs batch_generate | client CPU s | CPU vs batch_generate |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case in cases:
        wall, cpu = best[case]["wall"], best[case]["cpu"]
        rate = args.rows / wall
        print(f"| {case} | {wall:.2f} | {rate:,.0f} | {rate / base - 1:+.1%} | {cpu:.2f} | "
              f"{cpu / base_cpu - 1:+.1%} |")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"jobs-{stamp}.json").write_text(json.dumps(
        {"rows": args.rows, "repeat": args.repeat, "best": best}, indent=2))


if __name__ == "__main__":
    main()
