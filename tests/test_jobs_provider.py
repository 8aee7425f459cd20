"""``llmkit.jobs.run(mode="provider")`` against the OpenAI Batch API test server: splitting
within the limits, the request lines, mapping shuffled output and error files back by
``custom_id``, failed / expired / cancelled batches, re-attaching instead of creating a
batch twice, ``jobs.cancel``, and ``NotSupportedError`` before any upload."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from llmkit import NotSupportedError, jobs
from tests.servers import BatchState, FastClock, serve_openai, serve_openai_batch


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "gpt-4o-mini", "base_url": url, "api_key": "k", **extra}


def fast() -> BatchState:
    return BatchState(clock=FastClock(speed=1000), validating_seconds=1, seconds_per_request=0.1,
                      finalizing_seconds=1)


def prompts(path: Path, n: int) -> Path:
    path.write_text("".join(f"prompt {i}\n" for i in range(n)))
    return path


async def until(check: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def batch_lines(srv: Any, batch_id: str) -> list[dict[str, Any]]:
    b = srv.batch.batches[batch_id]
    return [json.loads(x) for x in srv.batch.files[b.input_file_id].data.split(b"\n") if x]


async def test_split_upload_poll_and_map_back(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"prompt {i}", "id": f"p{i}",
                                       **({"options": {"temperature": 0.25}} if i == 4 else {})}) + "\n"
                           for i in range(25)))
    out = tmp_path / "o.jsonl"
    async with serve_openai_batch(batch=fast()) as srv:
        summary = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                                 poll_interval=0.01, max_batch_requests=10)
        assert len(srv.batch.batches) == 3 and summary.batch_ids == list(srv.batch.batches)
        assert len(srv.state.requests_to("/v1/files", "POST")) == 3
        assert len(srv.state.requests_to("/v1/batches", "POST")) == 3
        sizes = [len(batch_lines(srv, b)) for b in summary.batch_ids]
        assert sizes == [10, 10, 5]
        first = batch_lines(srv, summary.batch_ids[0])
        assert first[4]["body"] == {"model": "gpt-4o-mini", "temperature": 0.25,
                                    "messages": [{"role": "user", "content": "prompt 4"}]}
        assert first[0]["url"] == "/v1/chat/completions" and first[0]["method"] == "POST"
        assert srv.state.requests_to("/v1/chat/completions") == []  # nothing went live
    got = rows(out)
    assert [r["index"] for r in got] == list(range(25))
    assert all(r["output"] == f"Echo: prompt {r['index']}" and r["id"] == f"p{r['index']}"
               and r["mode"] == "provider" for r in got)
    assert (summary.answered, summary.failed, summary.mode) == (25, 0, "provider")
    assert summary.usage.prompt_tokens == 50 and summary.usage.completion_tokens == 75
    assert not (tmp_path / "o.jsonl.state.json").exists()  # all downloaded: nothing to re-attach


async def test_failed_lines_and_a_rerun_that_sends_only_them(tmp_path: Path) -> None:
    src = prompts(tmp_path / "p.txt", 6)
    out = tmp_path / "o.jsonl"
    bs = fast()
    async with serve_openai_batch(batch=bs) as srv:
        first = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                               poll_interval=0.01)
        custom = [line["custom_id"] for line in batch_lines(srv, first.batch_ids[0])]
        assert (first.answered, first.failed) == (6, 0)
        bs.line_status[custom[2]] = 400
        bs.line_status[custom[5]] = 503
        out.unlink()
        summary = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                                 poll_interval=0.01)
        assert (summary.answered, summary.failed) == (4, 2)
        got = rows(out)
        assert got[2]["error"]["type"] == "invalid_request" and got[5]["error"]["type"] == "server_error"
        bs.line_status.clear()
        again = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                               poll_interval=0.01)
        assert [line["custom_id"] for line in batch_lines(srv, again.batch_ids[0])] == [custom[2], custom[5]]
    assert all("output" in r for r in rows(out)) and again.already_done == 4


async def test_expired_batch_keeps_what_finished_and_a_rerun_sends_the_rest(tmp_path: Path) -> None:
    src = prompts(tmp_path / "p.txt", 30)
    out = tmp_path / "o.jsonl"
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=3600,
                    finalizing_seconds=0)
    async with serve_openai_batch(batch=bs) as srv:
        task = asyncio.ensure_future(jobs.run(src, config(srv.url), output=out, mode="provider",
                                              progress=False, poll_interval=0.01))
        await until(lambda: bool(bs.batches))
        bs.clock.advance(86400)
        summary = await asyncio.wait_for(task, 30)
        assert (summary.answered, summary.failed) == (24, 6)
        got = rows(out)
        missing = [r["index"] for r in got if "error" in r]
        assert len(got) == 30 and len(missing) == 6
        assert {got[i]["error"]["type"] for i in missing} == {"batch_expired"}
        bs.seconds_per_request = 0
        again = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                               poll_interval=0.01)
        second = batch_lines(srv, again.batch_ids[0])
        assert len(bs.batches) == 2
        assert sorted(line["body"]["messages"][0]["content"] for line in second) == sorted(
            f"prompt {i}" for i in missing)
    assert [r["output"] for r in rows(out)] == [f"Echo: prompt {i}" for i in range(30)]
    assert again.already_done == 24 and again.answered == 6


async def test_cancel_keeps_finished_rows(tmp_path: Path) -> None:
    src = prompts(tmp_path / "p.txt", 10)
    out = tmp_path / "o.jsonl"
    state = tmp_path / "job.state"
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=1,
                    cancelling_seconds=0)
    async with serve_openai_batch(batch=bs) as srv:
        task = asyncio.ensure_future(jobs.run(src, config(srv.url), output=out, mode="provider",
                                              progress=False, poll_interval=0.01, state=state))
        await until(lambda: state.exists() and bool(json.loads(state.read_text())["batches"][0]["id"]))
        bs.clock.advance(3)
        cancelled = await jobs.cancel(state, config(srv.url))
        assert cancelled == list(bs.batches)
        summary = await asyncio.wait_for(task, 30)
    assert (summary.answered, summary.failed) == (3, 7)
    assert sorted(r["error"]["type"] for r in rows(out) if "error" in r) == ["batch_cancelled"] * 7


async def test_a_server_that_fails_the_batch(tmp_path: Path) -> None:
    """A compatible server with a lower limit fails the batch in validation: every row is
    recorded as failed, with the server's reason."""
    src = prompts(tmp_path / "p.txt", 6)
    out = tmp_path / "o.jsonl"
    bs = fast()
    bs.max_requests = 5
    async with serve_openai_batch(batch=bs) as srv:
        summary = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                                 poll_interval=0.01)
    assert summary.failed == 6
    errors = [r["error"] for r in rows(out)]
    assert {e["type"] for e in errors} == {"batch_failed"}
    assert "more than the 5 a batch may hold" in errors[0]["message"]


async def test_a_lost_create_answer_does_not_create_a_second_batch(tmp_path: Path) -> None:
    src = prompts(tmp_path / "p.txt", 4)
    out = tmp_path / "o.jsonl"
    async with serve_openai_batch(batch=fast()) as srv:
        # the server creates the batch, then the connection drops mid-answer
        srv.state.add_fault("reset_mid_body", path="/v1/batches", method="POST")
        summary = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                                 poll_interval=0.01)
        assert len(srv.batch.batches) == 1 and summary.answered == 4
        assert len(srv.state.requests_to("/v1/batches", "POST")) == 1


async def test_no_batch_api_is_not_supported_before_any_upload(tmp_path: Path) -> None:
    src = prompts(tmp_path / "p.txt", 3)
    out = tmp_path / "o.jsonl"
    async with serve_openai() as srv:  # chat only, like a llama.cpp server
        with pytest.raises(NotSupportedError, match="no Batch API"):
            await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False)
        assert [(r.method, r.path) for r in srv.state.requests] == [("GET", "/v1/batches")]
    with pytest.raises(NotSupportedError, match="provider 'mock' has no Batch API"):
        await jobs.run(src, {"provider": "mock", "model": "mock"}, output=out, mode="provider")
    assert not out.exists() and not (tmp_path / "o.jsonl.journal").exists()


async def test_interrupted_while_polling_then_a_changed_input_is_refused(tmp_path: Path) -> None:
    src = prompts(tmp_path / "p.txt", 5)
    out = tmp_path / "o.jsonl"
    state = tmp_path / "o.jsonl.state.json"
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=10, seconds_per_request=0,
                    finalizing_seconds=0)
    async with serve_openai_batch(batch=bs) as srv:
        task = asyncio.ensure_future(jobs.run(src, config(srv.url), output=out, mode="provider",
                                              progress=False, poll_interval=0.01))
        await until(lambda: state.exists() and bool(json.loads(state.read_text())["batches"][0]["id"]))
        task.cancel()  # Ctrl-C while the batch runs
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state.exists() and not out.exists()
        src.write_text("prompt 0\nprompt 1\nCHANGED\nprompt 3\nprompt 4\n")
        with pytest.raises(jobs.JobFileError, match="changed since they were submitted"):
            await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False)
        prompts(src, 5)
        bs.clock.advance(10)
        summary = await jobs.run(src, config(srv.url), output=out, mode="provider", progress=False,
                                 poll_interval=0.01)
        assert summary.answered == 5 and len(bs.batches) == 1
        assert len(srv.state.requests_to("/v1/batches", "POST")) == 1
    assert [r["output"] for r in rows(out)] == [f"Echo: prompt {i}" for i in range(5)]
