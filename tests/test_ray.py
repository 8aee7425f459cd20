"""llmkit.ray.run_batch on a local Ray cluster (started once for the module) against the
test servers, which run in their own thread here because run_batch blocks the caller."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import ray  # the [ray] extra (also in [dev]): a missing install fails, it does not skip
import ray.data

from llmkit import ProviderNotFoundError
from llmkit.jobs import JobFileError
from llmkit.ray import run_batch
from tests.servers import ServerState, assert_spec_conformant
from tests.servers.base import run_server
from tests.servers.ratelimit_server import RateLimits, make_ratelimited_openai_app
from tests.test_ratelimit import most_in_window

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@contextmanager
def serve(limits: RateLimits, state: ServerState | None = None) -> Iterator[str]:
    """The (rate-limited) OpenAI test server on its own thread; yields its ``/v1`` URL."""
    ready = threading.Event()
    box: dict[str, Any] = {}
    state = state or ServerState(record_requests=False)

    async def main() -> None:
        app = make_ratelimited_openai_app(limits, state)
        async with run_server(app) as base:
            box["url"], box["loop"], box["stop"] = base + "/v1", asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
    assert_spec_conformant(state)


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": url, "model": "gpt-4o-mini", **extra}


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(p + "\n" for p in prompts))
    return path


def test_order_per_row_errors_and_resume(tmp_path: Path) -> None:
    long = " ".join(["word"] * 30)
    texts = [long if i % 7 == 3 else f"prompt {i}" for i in range(40)]
    prompts = write_prompts(tmp_path / "p.txt", texts)
    out = tmp_path / "o.jsonl"
    limits = RateLimits()
    state = ServerState(context_length=10, record_requests=False)  # the long ones fail
    with serve(limits, state) as url:
        result = run_batch(prompts, config(url, max_retries=0), output=out, actors=2,
                           concurrency_per_actor=4, progress=False)
        assert (result.answered, result.failed, result.already_done) == (34, 6, 0)
        assert result.summary() == "openai gpt-4o-mini: 34 answered, 6 failed, 0 already done (40 prompts)"
        records = rows(out)
        assert [r["index"] for r in records] == list(range(40))
        for i, rec in enumerate(records):
            assert (rec["provider"], rec["model"], rec["prompt"]) == ("openai", "gpt-4o-mini", texts[i])
            if i % 7 == 3:
                assert rec["error"]["type"] == "context_length_exceeded" and "output" not in rec
            else:
                assert rec["output"] == f"Echo: prompt {i}"
                assert rec["usage"]["total_tokens"] == 5
        # rerun: only the failed rows are sent again
        state.context_length = 1000
        before = limits.admitted
        result = run_batch(prompts, config(url), output=out, actors=2, concurrency_per_actor=4,
                           progress=False)
        assert (result.answered, result.failed, result.already_done) == (6, 0, 34)
        assert limits.admitted - before == 6
        assert [r["output"] for r in rows(out)] == [f"Echo: {t}" for t in texts]
        # the same output with another model is refused before anything is sent
        with pytest.raises(JobFileError, match="not 'openai' 'gpt-4o'"):
            run_batch(prompts, config(url, model="gpt-4o"), output=out, actors=1,
                      concurrency_per_actor=1, progress=False)
        assert limits.admitted - before == 6


def test_line_separators_in_replies_and_prompts_lose_no_row(tmp_path: Path) -> None:
    """The job file format: replies and prompts holding U+2028, U+2029 or U+0085 are one
    row each, read back whole (no reader splits them), and a rerun finds them all done."""
    src = tmp_path / "p.jsonl"
    prompts = [f"row {i}\u2028second line" for i in range(12)]
    src.write_bytes(b"".join(json.dumps({"prompt": p}, ensure_ascii=False).encode() + b"\n" for p in prompts))
    replies = ["a\u2028b", "c\u0085d", "e\u2029f"]
    mock = {"provider": "mock", "model": "m", "extra": {"responses": replies}}
    out = tmp_path / "o.jsonl"
    result = run_batch(src, mock, output=out, actors=1, concurrency_per_actor=4, progress=False)
    assert (result.answered, result.failed, result.total) == (12, 0, 12)
    got = rows(out)
    assert [r["prompt"] for r in got] == prompts and {r["output"] for r in got} <= set(replies)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 12
    again = run_batch(src, mock, output=out, actors=1, concurrency_per_actor=4, progress=False)
    assert again.already_done == 12 and again.answered == 0


def test_dataset_in_dataset_out() -> None:
    items = [{"prompt": f"q{i}"} for i in range(9)]
    items.append({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "last"}]})
    with serve(RateLimits()) as url:
        result = run_batch(ray.data.from_items(items), config(url), output=None, actors=2,
                           concurrency_per_actor=3, progress=False)
    out = result.dataset.take_all()
    assert [r["index"] for r in out] == list(range(10))
    assert [r["output"] for r in out] == [f"Echo: q{i}" for i in range(9)] + ["Echo: last"]
    assert out[9]["prompt"] == "last"


def test_one_rate_limit_for_the_whole_cluster(tmp_path: Path) -> None:
    """4 actors against a server that allows 40 requests/s (burst 10), default settings."""
    n, rate, burst = 200, 40.0, 10
    prompts = write_prompts(tmp_path / "p.txt", [f"p{i}" for i in range(n)])
    limits = RateLimits(requests_per_second=rate, request_burst=burst)
    with serve(limits) as url:
        result = run_batch(prompts, config(url), output=tmp_path / "o.jsonl", actors=4,
                           concurrency_per_actor=16, progress=False)
    assert (result.answered, result.failed) == (n, 0)
    assert limits.rejected <= 0.10 * (limits.admitted + limits.rejected)
    # the cluster never ran above the server's rate (a lower bound: a slow machine only
    # stretches it); how close to the ideal time it finishes is benchmarks/bench_ray.py's
    span = max(limits.admitted_at) - min(limits.admitted_at)
    assert span >= (n - burst) / rate * 0.9, span


def test_configured_limit_binds_the_cluster_not_each_actor(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", [f"p{i}" for i in range(40)])
    limits = RateLimits()  # unlimited; notes each admission
    with serve(limits) as url:
        result = run_batch(prompts, config(url), output=tmp_path / "o.jsonl", actors=4,
                           concurrency_per_actor=8, requests_per_minute=1200, progress=False)
    assert result.failed == 0 and limits.admitted == 40
    # 20/s for all four actors together (four limits of their own would allow 80/s); an
    # actor that wakes late can bunch a turn or two with the next ones
    assert most_in_window(limits.admitted_at, 1.0) <= 25
    assert max(limits.admitted_at) - min(limits.admitted_at) >= 39 / 20 * 0.95


def test_unknown_provider_and_empty_input_fail_before_any_actor(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", ["x"])
    with pytest.raises(ProviderNotFoundError, match="nosuch"):
        run_batch(prompts, {"provider": "nosuch", "model": "m"}, output=None, progress=False)
    empty = write_prompts(tmp_path / "empty.txt", [])
    with pytest.raises(JobFileError, match="holds no prompts"):
        run_batch(empty, {"provider": "mock"}, output=None, progress=False)


def test_import_llmkit_imports_no_ray() -> None:
    code = (
        "import sys, llmkit; llmkit.OpenAILLM; llmkit.LLMConfig; import llmkit.cli; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


async def test_cli_batch_on_ray(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", [f"c{i}" for i in range(12)])
    out = tmp_path / "o.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMKIT_", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    limits = RateLimits()
    with serve(limits) as url:
        flags = ["--provider", "openai", "--base-url", url, "--model", "gpt-4o-mini"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmkit", *flags, "batch", str(prompts), "-o", str(out),
            "--ray", "--actors", "2", "--concurrency", "4",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT),
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    err = stderr.decode()
    assert proc.returncode == 0, err
    assert "openai gpt-4o-mini: 12 answered, 0 failed, 0 already done (12 prompts)" in err
    assert [r["output"] for r in rows(out)] == [f"Echo: c{i}" for i in range(12)]
    assert limits.admitted == 12
