"""The examples run as scripts (subprocesses) with no API key and no network."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

from tests.servers import serve_openai

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OLLAMA_", "HUGGINGFACE_", "LLMKIT_", "HF_TOKEN"))
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.update(extra)
    return env


async def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or _env(),
        cwd=str(ROOT),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    return out.decode()


async def test_quickstart_runs_offline() -> None:
    out = await run_example("quickstart.py")
    lines = out.splitlines()
    assert "[generate] mock response to: What is llmkit?" in lines
    assert any(line.startswith("[stream]") and "|" in line for line in lines)
    assert "[batch]    5 replies, first: 'mock response to: question 0'" in lines
    local = importlib.util.find_spec("sentence_transformers") is not None
    if local:
        assert "[embed]    all-MiniLM-L6-v2 (local), dim=384" in lines
        sims = next(line for line in lines if "similarity" in line)
        related = float(sims.split("cat/kitten=")[1].split()[0])
        unrelated = float(sims.split("cat/car=")[1])
        assert related > unrelated + 0.3
    else:
        assert any(line.startswith("[embed]    skipped") for line in lines)
    assert lines[-1] == "done"


async def test_custom_provider() -> None:
    out = await run_example("custom_provider.py")
    lines = out.splitlines()
    assert "reverse" in lines[0].split(": ")[1].split(", ")
    assert "generate: DLROW OLLEH" in lines
    assert "chat: CBA" in lines
    assert "stream: SKROW GNIMAERTS" in lines
    assert "batch: ['ENO', 'OWT', 'EERHT']" in lines
    assert "embed: not_supported" in lines
    assert "max_tokens=2: OWT TSAL" in lines


async def test_streaming_defaults_to_mock() -> None:
    out = await run_example("streaming.py", "tell me about streams")
    lines = out.splitlines()
    assert lines[0] == "provider=mock model=mock"
    assert lines[1] == "mock response to: tell me about streams"
    assert lines[2].endswith("prompt=4 completion=7") and " chunks, first after " in lines[2]


async def test_streaming_and_tools_against_an_openai_compatible_server() -> None:
    async with serve_openai() as srv:
        env = _env(OPENAI_BASE_URL=srv.url)
        out = await run_example("streaming.py", "hello stream", env=env)
        assert out.splitlines()[:2] == ["provider=openai model=gpt-4o-mini", "Echo: hello stream"]
        assert srv.state.last_request.json["stream"] is True

        out = await run_example("tools_structured.py", env=env)
        assert "provider=openai" in out
        assert "tool call: get_weather(" in out
        assert "answer: Echo: " in out


async def test_tools_structured_and_batch_fanout_on_mock() -> None:
    out = await run_example("tools_structured.py")
    assert "structured: City(name='Lisbon', country='Portugal', population_millions=0.55)" in out
    assert '"name": "get_weather"' in out
    out = await run_example("batch_fanout.py", "--n", "40", "--concurrency", "8")
    assert "mock: 40 prompts in" in out and "1 failed" in out
    assert "prompt 0: RateLimitError" in out
    assert "streamed 50 results" in out
