"""The command line, run as a subprocess (``python -m llmkit``) against the mock provider
and against local OpenAI / Ollama test servers running in the test's event loop. The
``batch`` command is tested in test_cli_batch.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ServerState, serve_ollama, serve_openai

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-SECRETKEY-0123456789abcdefXYZ"


@dataclass
class Result:
    rc: int
    out: str
    err: str


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OLLAMA_", "HF_", "HUGGINGFACE_", "LLMKIT_"))
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "0"
    env.update(extra)
    return env


async def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run the CLI without blocking the loop, so in-loop test servers keep answering."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmkit",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or _env(),
        cwd=str(ROOT),
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), 60
    )
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def openai_flags(url: str, *extra: str) -> list[str]:
    return ["--provider", "openai", "--base-url", url, "--model", "gpt-4o-mini", *extra]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- basics


async def test_providers_lists_builtins_and_marks_mock_default() -> None:
    r = await cli("providers")
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"openai", "ollama", "huggingface", "mock"} <= set(names)
    assert "mock  (default)" in lines


async def test_default_provider_is_mock_and_env_overrides_it() -> None:
    r = await cli("generate", "hello there")
    assert r.rc == 0, r.err
    assert r.out == "mock response to: hello there\n"
    assert "no provider given" in r.err and "mock provider" in r.err  # said on stderr
    # LLMKIT_PROVIDER picks the default; an unknown name is a configuration error (2)
    r = await cli("generate", "x", env=_env(LLMKIT_PROVIDER="nosuch"))
    assert r.rc == 2
    line = one_error_line(r.err)
    assert line.startswith("error: provider_not_found: ") and "openai" in line


async def test_generate_reads_stdin_and_global_flags_work_after_the_subcommand() -> None:
    r = await cli(
        "generate", "-", "--max-tokens", "3", stdin="one two three four five\n",
        env=_env(LLMKIT_PROVIDER="mock"),
    )
    assert r.rc == 0, r.err
    assert r.out == "mock response to:\n"  # mock truncates to max_tokens words


async def test_generate_against_openai_server_sends_flags() -> None:
    async with serve_openai() as srv:
        r = await cli(
            *openai_flags(srv.url, "--max-tokens", "50", "--temperature", "0.25"),
            "generate",
            "hi there",
            "--system",
            "be brief",
        )
        assert r.rc == 0, r.err
        assert r.out == "Echo: hi there\n"
        body = srv.state.last_request.json
        assert body["model"] == "gpt-4o-mini"
        assert body["temperature"] == 0.25
        assert body.get("max_tokens", body.get("max_completion_tokens")) == 50
        assert body["messages"][0] == {"role": "system", "content": "be brief"}


async def test_config_file_with_env_key_and_flag_override(tmp_path: Path) -> None:
    async with serve_openai(ServerState(api_key=SECRET)) as srv:
        cfg = tmp_path / "llm.yaml"
        cfg.write_text(
            "llm:\n"
            "  provider: openai\n"
            "  model: gpt-4o\n"
            f"  base_url: {srv.url}\n"
            "  api_key: ${OPENAI_API_KEY}\n"
            "  max_retries: 0\n"
        )
        r = await cli(
            "--config", str(cfg), "--model", "gpt-4o-mini", "generate", "ping",
            env=_env(OPENAI_API_KEY=SECRET),
        )
        assert r.rc == 0, r.err
        assert r.out == "Echo: ping\n"
        req = srv.state.last_request
        assert req.authorization == f"Bearer {SECRET}"
        assert req.json["model"] == "gpt-4o-mini"
        assert SECRET not in r.out + r.err


async def test_stream_prints_text_as_it_arrives() -> None:
    state = ServerState(reply="alpha beta gamma delta epsilon", chunk_delay=0.15)
    async with serve_openai(state) as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmkit", *openai_flags(srv.url), "stream", "go",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_env(), cwd=str(ROOT),
        )
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.read(5), 30)
        # text is on our side of the pipe while the server is still sending the rest
        assert first == b"alpha"
        assert proc.returncode is None
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert (first + rest).decode() == "alpha beta gamma delta epsilon\n"
        assert srv.state.last_request.json["stream"] is True


async def test_embed_prints_json_vectors() -> None:
    async with serve_openai(ServerState(embedding_dim=8)) as srv:
        flags = ["--provider", "openai", "--base-url", srv.url, "--model", "text-embedding-3-small"]
        r = await cli(*flags, "embed", "hello")
        assert r.rc == 0, r.err
        vec = json.loads(r.out)
        assert len(vec) == 8 and all(isinstance(v, float) for v in vec)
        r = await cli(*flags, "embed", "hello", "world")
        assert r.rc == 0, r.err
        vecs = json.loads(r.out)
        assert len(vecs) == 2 and vecs[0] == vec and vecs[1] != vec
    r = await cli("embed", "hello")  # mock: deterministic 16-dim vector
    assert r.rc == 0 and len(json.loads(r.out)) == 16


async def test_models_lists_server_models_and_mock_is_not_supported() -> None:
    async with serve_openai() as srv:
        r = await cli(*openai_flags(srv.url), "models")
        assert r.rc == 0, r.err
        assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= set(r.out.split())
    r = await cli("models", "--provider", "mock")
    assert r.rc == 1
    assert one_error_line(r.err).startswith("error: not_supported: ")


# --------------------------------------------------------------------------- errors


async def test_health_ok_and_failing(refused_url: str, tmp_path: Path) -> None:
    async with serve_openai() as srv:
        r = await cli(*openai_flags(srv.url), "health")
        assert r.rc == 0, r.err
        assert r.out.startswith("ok: openai")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"provider": "openai", "base_url": refused_url, "max_retries": 0}))
    r = await cli("--config", str(cfg), "health")
    assert r.rc == 1
    assert one_error_line(r.err).startswith("error: connection: ")
    assert r.out == ""


async def test_health_server_error_is_one_line(tmp_path: Path) -> None:
    async with serve_openai() as srv:
        srv.state.add_fault("status", status=503, times=5)
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"provider: openai\nbase_url: {srv.url}\nmax_retries: 0\n")
        r = await cli("--config", str(cfg), "health")
        assert r.rc == 1
        assert one_error_line(r.err).startswith("error: server_error: ")


async def test_bad_flags_and_bad_config_exit_2(tmp_path: Path) -> None:
    r = await cli("generate", "--bogus", "x")
    assert r.rc == 2
    assert one_error_line(r.err).startswith("error: usage: ")
    r = await cli("frobnicate")
    assert r.rc == 2 and one_error_line(r.err).startswith("error: usage: ")
    r = await cli("--provider", "mock", "--temperature", "5", "generate", "x")
    assert r.rc == 2
    line = one_error_line(r.err)
    assert line.startswith("error: configuration: ") and "temperature" in line
    r = await cli("--config", str(tmp_path / "missing.yaml"), "generate", "x")
    assert r.rc == 2 and one_error_line(r.err).startswith("error: configuration: ")


async def test_key_is_never_printed_on_auth_failure() -> None:
    async with serve_openai(ServerState(api_key="the-right-key")) as srv:
        r = await cli(*openai_flags(srv.url), "generate", "hi", env=_env(OPENAI_API_KEY=SECRET))
        assert r.rc == 1
        assert one_error_line(r.err).startswith("error: authentication: ")
        assert srv.state.last_request.authorization == f"Bearer {SECRET}"  # it was sent
        assert SECRET not in r.out + r.err
        assert SECRET[-12:] not in r.out + r.err


# --------------------------------------------------------------------------- pull


async def test_pull_shows_progress_against_ollama_server() -> None:
    async with serve_ollama() as srv:
        flags = ["--provider", "ollama", "--base-url", srv.url]
        r = await cli(*flags, "pull", "llama3.2")
        assert r.rc == 0, r.err
        assert r.out == "pulled llama3.2\n"
        assert "pulling manifest" in r.err
        assert "success" in r.err.splitlines()
        assert "%|" not in r.err  # stderr is no terminal: status lines, no progress bars
        assert srv.state.requests_to("/api/pull")
        r = await cli(*flags, "pull", "missing-model")
        assert r.rc == 1
        last = r.err.strip().splitlines()[-1]
        assert last == "error: stream_error: pull model manifest: file does not exist"
    r = await cli("pull", "llama3.2", "--provider", "mock")
    assert r.rc == 1 and one_error_line(r.err).startswith("error: not_supported: ")
