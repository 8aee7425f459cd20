"""``llmkit.jobs.run`` in live mode: the output rows, input rules (prompts, JSONL, OpenAI's
batch input format, malformed lines), resuming from the output and the journal (a torn
last line), every row exactly once and byte-exact whatever the replies hold, and the
fan-out cleaning up when the reader dies."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import llmkit.sync
from llmkit import jobs
from llmkit.calls.fanout import fan_out_iter
from llmkit.providers.mock import MockLLM
from tests.servers import ServerState, serve_openai


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "gpt-4o-mini", "base_url": url, "api_key": "k", **extra}


async def test_live_rows_fields_order_and_summary(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [{"prompt": f"question {i}", "id": f"q{i}"} for i in range(12)]
    lines[3] = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "m3"}],
                "options": {"temperature": 0.5, "max_tokens": 7}, "id": 33}
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    async with serve_openai() as srv:
        summary = await jobs.run(src, config(srv.url), output=out, concurrency=4, progress=False)
        assert srv.state.request_count == 12
        sent = [r.json for r in srv.state.requests if r.json["messages"][-1]["content"] == "m3"]
        assert len(sent) == 1 and sent[0]["temperature"] == 0.5 and sent[0]["max_tokens"] == 7
    got = rows(out)
    assert [r["index"] for r in got] == list(range(12))
    assert got[0] == {
        "index": 0, "id": "q0", "prompt": "question 0", "prompt_hash": got[0]["prompt_hash"],
        "provider": "openai", "model": "gpt-4o-mini", "mode": "live", "output": "Echo: question 0",
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                  "cached_tokens": 0, "reasoning_tokens": 0},
    }
    assert got[3]["id"] == 33 and got[3]["prompt"] == "m3" and got[3]["output"] == "Echo: m3"
    assert (summary.rows, summary.answered, summary.failed, summary.already_done) == (12, 12, 0, 0)
    assert summary.mode == "live" and summary.batch_ids == [] and summary.pending == 0
    assert summary.usage.completion_tokens == sum(r["usage"]["completion_tokens"] for r in got)
    assert not (tmp_path / "out.jsonl.journal").exists()


async def test_openai_batch_input_format_is_read_as_such(tmp_path: Path) -> None:
    src = tmp_path / "batch.jsonl"
    src.write_text("".join(json.dumps({
        "custom_id": f"task-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"t{i}"}],
                 "max_completion_tokens": 1, "seed": i},
    }) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    async with serve_openai() as srv:
        await jobs.run(src, config(srv.url), output=out, progress=False)
        bodies = sorted((r.json for r in srv.state.requests), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [0, 1, 2]
    assert all(b["max_completion_tokens"] == 1 and b["model"] == "gpt-4o-mini" for b in bodies)
    got = rows(out)
    assert [r["id"] for r in got] == ["task-0", "task-1", "task-2"]
    assert [r["output"] for r in got] == ["Echo:"] * 3  # one word: max_completion_tokens=1


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ('{"prompt": "ok"}\n{"prompt": "broken\n', 2, "not valid JSON"),
        ('{"prompt": "ok"}\n42\n', 2, "must be a JSON object, not a number"),
        ('{"prompt": "ok"}\n\n["a","b"]\n', 3, "not an array"),
        ('{"prompt": 5}\n', 1, "'prompt' must be a non-empty string"),
        ('{"prompt": "a", "temperature": 0}\n', 1, "unknown keys temperature"),
        ('{"messages": []}\n', 1, "'messages' must be a non-empty list"),
        ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}\n', 1, "exactly one of"),
        ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', 2, "also the id of line 1"),
        ('{"prompt": "a", "options": [1]}\n', 1, "'options' must be a JSON object"),
        ('{"prompt": "a", "options": {"model": "x"}}\n', 1, "cannot choose its model"),
        ('plain prompt\n{"prompt": "json"}\n', 2, "plain prompts"),
        ('{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n', 1,
         "only /v1/chat/completions"),
        ('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}\n', 1, "lacks body"),
    ],
)
async def test_a_malformed_line_is_an_error_naming_file_and_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    src = tmp_path / "in.txt"
    src.write_text(text)
    async with serve_openai() as srv:
        with pytest.raises(jobs.SourceError) as info:
            await jobs.run(src, config(srv.url), output=tmp_path / "o.jsonl", progress=False)
        assert srv.state.request_count == 0
    assert f"{src} line {line}: " in info.value.message and says in info.value.message
    assert not (tmp_path / "o.jsonl").exists()


async def test_line_separators_in_input_are_not_line_breaks(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    prompts = [f"row {i} \u2028 with \u0085 breaks \u2029 inside" for i in range(25)]
    src.write_bytes(b"".join(json.dumps({"prompt": p}, ensure_ascii=False).encode() + b"\n" for p in prompts))
    out = tmp_path / "o.jsonl"
    summary = await jobs.run(src, {"provider": "mock", "model": "mock"}, output=out, progress=False)
    assert summary.rows == 25 and summary.answered == 25
    assert [r["prompt"] for r in rows(out)] == prompts
    # escaped: even a reader that splits on every Unicode line break sees 25 lines
    assert len(out.read_text(encoding="utf-8").splitlines()) == 25


async def test_resume_from_output_and_a_torn_journal(tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_text("".join(f"prompt {i}\n" for i in range(10)))
    out = tmp_path / "o.jsonl"
    async with serve_openai() as srv:
        await jobs.run(src, config(srv.url), output=out, progress=False)
        full = out.read_bytes().split(b"\n")
        # as a crash leaves it: the output of an earlier run (rows 0, 1), and a journal
        # with rows 5 and 8 and a torn line
        out.write_bytes(full[0] + b"\n" + full[1] + b"\n")
        (tmp_path / "o.jsonl.journal").write_bytes(full[5] + b"\n" + full[8] + b"\n" + full[3][:25])
        srv.state.reset()
        summary = await jobs.run(src, config(srv.url), output=out, progress=False)
        sent = sorted(r.json["messages"][-1]["content"] for r in srv.state.requests)
    assert sent == [f"prompt {i}" for i in (2, 3, 4, 6, 7, 9)]
    assert summary.already_done == 4 and summary.answered == 6
    assert out.read_bytes() == b"\n".join(full)
    assert not (tmp_path / "o.jsonl.journal").exists()


async def test_failed_rows_are_retried_on_a_rerun(tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_text("short\n" + " ".join(["word"] * 30) + "\nalso short\n")
    out = tmp_path / "o.jsonl"
    async with serve_openai(ServerState(context_length=10)) as srv:
        summary = await jobs.run(src, config(srv.url, max_retries=0), output=out, progress=False)
        assert (summary.answered, summary.failed) == (2, 1)
        assert rows(out)[1]["error"]["type"] == "context_length_exceeded"
        srv.state.context_length = 100
        srv.state.reset()
        summary = await jobs.run(src, config(srv.url), output=out, progress=False)
        assert srv.state.request_count == 1 and summary.already_done == 2
    assert [("output" in r) for r in rows(out)] == [True, True, True]


async def test_output_in_a_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_text("a\nb\n")
    mock = {"provider": "mock", "model": "mock"}
    ro = tmp_path / "ro"
    ro.mkdir()
    await jobs.run(src, mock, output=ro / "o.jsonl", progress=False)
    before = (ro / "o.jsonl").read_bytes()
    src.write_text("a\nb\nc\n")
    ro.chmod(0o500)
    # root may write anywhere but in sysfs: there the directory is read-only for everyone
    where = ro if os.geteuid() != 0 else Path("/sys/kernel")
    try:
        with pytest.raises(jobs.JobWriteError, match=r"cannot write .*o\.jsonl\.journal.*not writable"):
            await jobs.run(src, mock, output=where / "o.jsonl", progress=False)
    finally:
        ro.chmod(0o700)
    assert (ro / "o.jsonl").read_bytes() == before
    assert not (where / "o.jsonl").exists() or where == ro


# every code point, lone surrogates included (a custom provider may return them)
_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(replies=["a\u2028b\u0085c\u2029", "\ud800 lone", "\r", "\x00\n{"], prompts=["\u2028", "x\udfff"])
@given(replies=st.lists(_TEXT, min_size=1, max_size=8), prompts=st.lists(_TEXT, min_size=1, max_size=8))
def test_any_unicode_reply_round_trips_byte_exact(replies: list[str], prompts: list[str]) -> None:
    """Every row present once, each reply exactly what the provider said, whatever it holds
    (NUL, U+2028, U+0085, a lone CR, a lone surrogate, ...), through the sync twin."""
    texts = [f"p{i} {p}" for i, p in enumerate(prompts)]
    table = {t: replies[i % len(replies)] for i, t in enumerate(texts)}
    llm = MockLLM(responses=lambda messages: table[messages[-1].content])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.jsonl"
        src = [{"prompt": t} for t in texts]
        summary = llmkit.sync.run_job(src, llm, output=out, progress=False, concurrency=3)
        assert summary.answered == len(texts)
        got = rows(out)
        assert [r["index"] for r in got] == list(range(len(texts)))
        assert [r["prompt"] for r in got] == texts
        assert [r["output"] for r in got] == [table[t] for t in texts]
        # a rerun finds everything done
        again = llmkit.sync.run_job(src, llm, output=out, progress=False)
        assert again.already_done == len(texts) and again.answered == 0


async def test_a_reader_that_dies_leaves_no_worker_stuck() -> None:
    """The reader raises in the loop body without closing the iterator (as ``llmkit batch``
    did on a full disk); cancelling what is left, as ``asyncio.run`` does, must end."""
    async def answer(x: int) -> int:
        await asyncio.sleep(0.001)
        return x

    it = fan_out_iter(answer, range(10_000), concurrency=4)
    with pytest.raises(OSError):
        async for _ in it:
            await asyncio.sleep(0.05)  # the workers fill what may wait
            raise OSError(27, "File too large")
    left = [t for t in asyncio.all_tasks()
            if "fan_out_iter" in getattr(t.get_coro(), "__qualname__", "")]
    assert left  # the workers are still there: nobody closed the iterator
    for task in left:
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*left, return_exceptions=True), 5)
    await it.aclose()
