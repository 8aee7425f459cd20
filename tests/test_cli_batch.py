"""``llmkit batch`` as a subprocess: records, order, per-row errors, resume by prompt hash,
refusing to mix providers, models or prompts files (and ``--force``), the provider
announcement, progress bars only on a terminal, empty input, ``-v`` retries."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import resource
import signal
import struct
import sys
import termios
from pathlib import Path
from typing import Any

from tests.servers import BatchState, FastClock, ServerState, serve_openai, serve_openai_batch
from tests.test_cli import ROOT, _env, cli, one_error_line, openai_flags


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


async def test_batch_records_order_errors_and_resume(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    long = " ".join(["word"] * 30)
    prompts.write_text(  # JSONL throughout (the first line says so)
        '{"prompt": "first"}\n'
        '{"prompt": "second"}\n'
        "\n"  # blank lines are skipped
        f'{{"prompt": "{long}"}}\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "fourth"}]}\n'
        '{"prompt": "fifth"}\n'
        '{"prompt": "sixth"}\n'
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
        assert first["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                                  "cached_tokens": 0, "reasoning_tokens": 0}
        assert first["mode"] == "live"
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


# --------------------------------------------------------------------------- losing nothing


async def _start(*args: str, **kw: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmkit", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(), cwd=str(ROOT), **kw,
    )


def _journal_rows(out: Path) -> int:
    journal = out.with_name(out.name + ".journal")
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


async def _until(check: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def test_sigkill_mid_run_then_resume_answers_each_row_once(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    n = 120
    prompts.write_text("".join(f"prompt {i}\n" for i in range(n)))
    out = tmp_path / "o.jsonl"
    async with serve_openai(ServerState(delay=0.01)) as srv:
        proc = await _start(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out),
                            "--concurrency", "4")
        await _until(lambda: _journal_rows(out) >= 30)
        proc.kill()
        await proc.wait()
        kept = _journal_rows(out)
        assert 30 <= kept < n and not out.exists()
        srv.state.delay = 0
        srv.state.reset()
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        assert srv.state.request_count == n - kept  # nothing journaled is asked again
        assert f"{n - kept} answered, 0 failed, {kept} already done" in r.err
    got = rows(out)
    assert [rec["index"] for rec in got] == list(range(n))
    assert all(rec["output"] == f"Echo: prompt {rec['index']}" for rec in got)
    assert not out.with_name("o.jsonl.journal").exists()


async def test_ctrl_c_says_what_is_done_and_how_to_resume(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(200)))
    out = tmp_path / "o.jsonl"
    async with serve_openai(ServerState(delay=0.02)) as srv:
        args = [*openai_flags(srv.url), "batch", str(prompts), "-o", str(out), "--concurrency", "2"]
        proc = await _start(*args)
        await _until(lambda: _journal_rows(out) >= 10)
        proc.send_signal(signal.SIGINT)
        _, err_b = await asyncio.wait_for(proc.communicate(), 30)
        err = err_b.decode()
        assert proc.returncode == 130, err
        done = len(rows(out))
        assert 10 <= done < 200 and [r["index"] for r in rows(out)] == sorted(r["index"] for r in rows(out))
        assert f"interrupted: {done} of 200 rows done" in err
        assert "resume with: llmkit " + " ".join(args) in err
        assert not out.with_name("o.jsonl.journal").exists()
        srv.state.delay = 0
        srv.state.reset()
        r = await cli(*args)
        assert r.rc == 0 and srv.state.request_count == 200 - done
    assert [rec["index"] for rec in rows(out)] == list(range(200))


async def test_full_disk_keeps_the_previous_output_and_exits(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(20)))
    out = tmp_path / "o.jsonl"
    async with serve_openai() as srv:
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        before = out.read_bytes()
        prompts.write_text("".join(f"prompt {i}\n" for i in range(400)))
        limit = len(before)

        def small_files() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        proc = await _start(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out),
                            "--concurrency", "4", preexec_fn=small_files)
        _, err_b = await asyncio.wait_for(proc.communicate(), 60)  # no hang
        line = one_error_line(err_b.decode())
        assert proc.returncode != 0
        assert "cannot write" in line and "o.jsonl.journal" in line
        assert "the disk is full or a file size limit was reached" in line
        assert out.read_bytes() == before
        # with room again, a rerun finishes the job from the journal
        srv.state.reset()
        r = await cli(*openai_flags(srv.url), "batch", str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        assert srv.state.request_count < 380
    assert [rec["index"] for rec in rows(out)] == list(range(400))


async def test_flags_are_never_prefix_guesses(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("x\n")
    out = tmp_path / "o.jsonl"
    # --mode provider is the mode, never --model: the mock has no Batch API
    r = await cli("--provider", "mock", "batch", str(prompts), "-o", str(out), "--mode", "provider")
    assert r.rc == 1 and "not_supported" in one_error_line(r.err) and not out.exists()
    for abbreviated in (["--mod", "provider"], ["--conc", "3"], ["--out", str(out)]):
        r = await cli("--provider", "mock", "batch", str(prompts), *abbreviated)
        assert r.rc == 2 and "unrecognized arguments" in one_error_line(r.err), abbreviated
    r = await cli("--prov", "mock", "batch", str(prompts))  # not --provider
    assert r.rc == 2 and r.out == "" and one_error_line(r.err).startswith("error: usage: ")


async def test_malformed_lines_are_usage_errors_naming_the_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    for text, lineno in (('{"prompt": "a"}\n{"prompt": "broken\n', 2), ('{"prompt": "a"}\n42\n', 2),
                         ('["a","b"]\n', 1), ('{"prompt": 5}\n', 1)):
        src.write_text(text)
        r = await cli("--provider", "mock", "batch", str(src), "-o", str(tmp_path / "o.jsonl"))
        assert r.rc == 2 and f"{src} line {lineno}: " in one_error_line(r.err), r.err
    assert not (tmp_path / "o.jsonl").exists()


# --------------------------------------------------------------------------- provider mode


def _batch_flags(url: str) -> list[str]:
    return [*openai_flags(url), "batch", "--mode", "provider", "--poll-interval", "0.02"]


async def test_sigkill_while_polling_then_rerun_reattaches(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(12)))
    out = tmp_path / "o.jsonl"
    state = tmp_path / "o.jsonl.state.json"
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=1, seconds_per_request=1)
    async with serve_openai_batch(batch=bs) as srv:
        proc = await _start(*_batch_flags(srv.url), str(prompts), "-o", str(out))
        await _until(lambda: state.exists() and json.loads(state.read_text())["batches"][0]["id"])
        await _until(lambda: len(srv.state.requests_to(f"/v1/batches/{next(iter(bs.batches))}")) >= 2)
        proc.kill()
        await proc.wait()
        assert not out.exists() and len(bs.batches) == 1
        bs.clock.advance(100)  # meanwhile the batch finished
        r = await cli(*_batch_flags(srv.url), str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        assert len(bs.batches) == 1 and len(srv.state.requests_to("/v1/batches", "POST")) == 1
        assert len(srv.state.requests_to("/v1/files", "POST")) == 1
    assert [rec["output"] for rec in rows(out)] == [f"Echo: prompt {i}" for i in range(12)]
    assert not state.exists()


async def test_expired_batch_then_rerun_sends_exactly_the_missing_rows(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(30)))
    out = tmp_path / "o.jsonl"
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=3600,
                    finalizing_seconds=0)
    async with serve_openai_batch(batch=bs) as srv:
        proc = await _start(*_batch_flags(srv.url), str(prompts), "-o", str(out))
        await _until(lambda: bool(bs.batches))
        bs.clock.advance(86400)  # the window closes with 24 of 30 done
        _, err_b = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1, err_b.decode()
        assert "24 answered, 6 failed" in err_b.decode()
        missing = sorted(rec["index"] for rec in rows(out) if "error" in rec)
        assert len(missing) == 6
        bs.seconds_per_request = 0
        r = await cli(*_batch_flags(srv.url), str(prompts), "-o", str(out))
        assert r.rc == 0, r.err
        assert "6 answered, 0 failed, 24 already done" in r.err
        assert len(bs.batches) == 2
        second = list(bs.batches.values())[1]
        sent = [json.loads(x)["body"]["messages"][0]["content"]
                for x in bs.files[second.input_file_id].data.split(b"\n") if x]
        assert sorted(sent) == sorted(f"prompt {i}" for i in missing)
    assert [rec["output"] for rec in rows(out)] == [f"Echo: prompt {i}" for i in range(30)]


async def test_ctrl_c_while_polling_keeps_the_batches_for_the_rerun(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(8)))
    out = tmp_path / "o.jsonl"
    state = tmp_path / "o.jsonl.state.json"
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=1, seconds_per_request=1)
    async with serve_openai_batch(batch=bs) as srv:
        args = [*_batch_flags(srv.url), str(prompts), "-o", str(out)]
        proc = await _start(*args)
        await _until(lambda: state.exists() and json.loads(state.read_text())["batches"][0]["id"])
        proc.send_signal(signal.SIGINT)
        _, err_b = await asyncio.wait_for(proc.communicate(), 30)
        err = err_b.decode()
        assert proc.returncode == 130, err
        assert "0 of 8 rows done (the provider's batches keep running" in err
        assert "resume with: llmkit " + " ".join(args) in err
        assert state.exists() and len(bs.batches) == 1
        bs.clock.advance(100)
        r = await cli(*args)
        assert r.rc == 0, r.err
        assert len(bs.batches) == 1 and "8 answered" in r.err
    assert [rec["output"] for rec in rows(out)] == [f"Echo: prompt {i}" for i in range(8)]
