"""``llmkit batch`` as a subprocess: records, order, per-row errors, resume by prompt hash,
refusing to mix providers, models or prompts files (and ``--force``), the provider
announcement, progress bars only on a terminal, empty input, ``-v`` retries."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import struct
import sys
import termios
from pathlib import Path
from typing import Any

from tests.servers import ServerState, serve_openai
from tests.test_cli import ROOT, _env, cli, one_error_line, openai_flags


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_batch_records_order_errors_and_resume(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    long = " ".join(["word"] * 30)
    prompts.write_text(
        "first\n"
        '{"prompt": "second"}\n'
        "\n"  # blank lines are skipped
        f"{long}\n"
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "fourth"}]}\n'
        "fifth\n"
        "sixth\n"
    )
    out = tmp_path / "out.jsonl"
    # prompts longer than 10 words fail with context_length_exceeded
    async with serve_openai(ServerState(context_length=10)) as srv:
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out), "--concurrency", "4")
        assert r.rc == 1
        assert "error: batch: 1 of 6 prompts failed" in r.err
        assert "openai gpt-4o-mini: 5 answered, 1 failed" in r.err  # names provider and model
        assert "%|" not in r.err  # no progress bar: stderr is not a terminal
        assert srv.state.request_count == 6
        records = rows(out)
        assert [rec["index"] for rec in records] == list(range(6))
        first = records[0]
        assert first["prompt"] == "first" and first["output"] == "Echo: first"
        assert (first["provider"], first["model"]) == ("openai", "gpt-4o-mini")
        assert first["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        assert len({rec["prompt_hash"] for rec in records}) == 6
        assert records[2]["error"]["type"] == "context_length_exceeded"
        assert "output" not in records[2] and records[2]["error"]["message"]
        assert records[3]["prompt"] == "fourth" and records[3]["output"] == "Echo: fourth"

        # resume: only the failed prompt is sent again
        srv.state.context_length = 1000
        srv.state.reset()
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out), "--no-progress")
        assert r.rc == 0, r.err
        assert srv.state.request_count == 1
        assert srv.state.last_request.json["messages"][-1]["content"] == long
        assert "openai gpt-4o-mini: 1 answered, 0 failed, 5 already done (6 prompts)" in r.err
        records = rows(out)
        assert [rec["index"] for rec in records] == list(range(6))
        assert records[2]["output"] == "Echo: " + long

        srv.state.reset()  # everything done: nothing is sent
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 0 and srv.state.request_count == 0


async def test_batch_resumes_after_a_killed_run(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(10)))
    out = tmp_path / "o.jsonl"
    async with serve_openai() as srv:
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        kept = out.read_text().splitlines()
        # as if the run had been killed: two answers, then a torn line
        out.write_text(kept[7] + "\n" + kept[2] + "\n" + kept[4][:20])
        srv.state.reset()
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        sent = sorted(req.json["messages"][-1]["content"] for req in srv.state.requests)
        assert sent == sorted(f"prompt {i}" for i in range(10) if i not in (2, 7))
    assert [rec["index"] for rec in rows(out)] == list(range(10))
    assert [line for line in out.read_text().splitlines()] == kept


async def test_batch_refuses_another_prompts_file_unless_forced(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha\nbeta\ngamma\n")
    out = tmp_path / "o.jsonl"
    async with serve_openai() as srv:
        assert (await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))).rc == 0
        before = out.read_text()
        prompts.write_text("alpha\nBETA CHANGED\ngamma\n")
        srv.state.reset()
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 2
        line = one_error_line(r.err)
        assert line.startswith("error: usage: ") and "another prompts file" in line
        assert "row 1" in line and "--force" in line
        assert srv.state.request_count == 0 and out.read_text() == before  # nothing touched
        # --force: the changed prompt is answered again, the others are kept
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out), "--force")
        assert r.rc == 0, r.err
        assert [req.json["messages"][-1]["content"] for req in srv.state.requests] == ["BETA CHANGED"]
    assert [rec["output"] for rec in rows(out)] == ["Echo: alpha", "Echo: BETA CHANGED", "Echo: gamma"]
    # fewer prompts than rows: also another file
    prompts.write_text("alpha\n")
    r = await cli("--provider", "openai", "--model", "gpt-4o-mini", "batch", str(prompts), "-o", str(out))
    assert r.rc == 2 and "beyond the 1 prompts" in one_error_line(r.err)


async def test_batch_refuses_to_mix_providers_or_models_unless_forced(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    out = tmp_path / "o.jsonl"
    r = await cli("--provider", "mock", "batch", str(prompts), "-o", str(out))
    assert r.rc == 0 and "mock mock: 2 answered" in r.err
    async with serve_openai() as srv:
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 2
        line = one_error_line(r.err)
        assert "answers from provider 'mock' model 'mock', not 'openai' 'gpt-4o-mini'" in line
        assert srv.state.request_count == 0
        r = await cli(
            "--provider", "openai", "--base-url", srv.url, "--model", "gpt-4o",
            "batch", str(prompts), "-o", str(out),
        )
        assert r.rc == 2 and "not 'openai' 'gpt-4o'" in one_error_line(r.err)
        # --force keeps the mock answers (already done) and adds nothing else
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out), "--force")
        assert r.rc == 0 and "2 already done" in r.err and srv.state.request_count == 0


async def test_mock_only_when_chosen_or_announced(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("x\n")
    r = await cli("batch", str(prompts))  # nothing chosen: mock, and stderr says so
    assert r.rc == 0 and json.loads(r.out)["provider"] == "mock"
    assert "no provider given" in r.err
    for chosen in (["--provider", "mock"], []):
        env = None if chosen else _env(LLMKIT_PROVIDER="mock")
        r = await cli(*chosen, "batch", str(prompts), env=env)
        assert r.rc == 0 and "no provider given" not in r.err
    # a real model or endpoint without a provider is an error, not a silent mock run
    for flags in (["--model", "gpt-4o-mini"], ["--base-url", "http://127.0.0.1:9/v1"]):
        r = await cli(*flags, "batch", str(prompts))
        assert r.rc == 2 and r.out == ""
        line = one_error_line(r.err)
        assert "no provider" in line and "--provider" in line


async def test_empty_prompts_file_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    r = await cli("--provider", "mock", "batch", str(empty), "-o", str(tmp_path / "o.jsonl"))
    assert r.rc == 2
    assert one_error_line(r.err) == f"error: usage: {empty} holds no prompts"
    assert not (tmp_path / "o.jsonl").exists()


async def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt key"}\n')
    r = await cli("--provider", "mock", "batch", str(bad))
    assert r.rc == 2 and f"{bad} line 1" in one_error_line(r.err)
    r = await cli("--provider", "mock", "batch", str(tmp_path / "absent.txt"))
    assert r.rc == 2 and one_error_line(r.err).startswith("error: usage: cannot read")


async def test_batch_to_stdout_in_order() -> None:
    prompts = "".join(f"p{i}\n" for i in range(20))
    r = await cli("--provider", "mock", "batch", "-", "--concurrency", "5", stdin=prompts)
    assert r.rc == 0, r.err
    records = [json.loads(line) for line in r.out.splitlines()]
    assert [rec["index"] for rec in records] == list(range(20))
    assert records[13]["prompt"] == "p13" and records[13]["output"] == "mock response to: p13"


async def test_verbose_shows_retries(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n")
    async with serve_openai() as srv:
        srv.state.add_fault("status", status=503, path="/v1/chat/completions")
        r = await cli(*openai_flags(srv.url), "batch", str(prompts))
        assert r.rc == 0 and "retry" not in r.err
        srv.state.add_fault("status", status=503, path="/v1/chat/completions")
        r = await cli(*openai_flags(srv.url), "-v", "batch", str(prompts))
        assert r.rc == 0, r.err
        retry_lines = [line for line in r.err.splitlines() if "retry 1" in line]
        assert len(retry_lines) == 1 and "server_error" in retry_lines[0]


async def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"q{i}\n" for i in range(7)))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmkit", "--provider", "mock", "batch", str(prompts),
            "-o", str(tmp_path / "o.jsonl"),
            stdout=asyncio.subprocess.DEVNULL, stderr=terminal, env=_env(), cwd=str(ROOT),
        )
        os.close(terminal)
        terminal = -1
        await asyncio.wait_for(proc.wait(), 60)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert proc.returncode == 0
    assert b"7/7" in drawn and b"100%" in drawn
