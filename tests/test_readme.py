"""README.md stays true: its snippets run, its commands agree with CI, its tables with the code.

How the ```python blocks run (in README order, one test each):

* each in a fresh namespace (``__name__ == "__main__"``) with the working directory a
  temporary folder holding every ```yaml / ```json block whose first line is ``# <file>``;
* with ``OPENAI_BASE_URL``, ``OLLAMA_BASE_URL`` and ``HF_ENDPOINT`` pointing at the local test
  servers (tests/servers) and a test ``OPENAI_API_KEY``: a snippet written for the real
  service (``LLMConfig.from_env("openai", ...)``) talks to the local one unchanged;
* a block that uses ``llm`` without creating it gets the instance README describes ("any
  instance, such as the one above"): ``create_llm(LLMConfig.from_env("openai",
  model="gpt-4o-mini"))``;
* top-level ``await`` is allowed (as README says: a notebook or ``python -m asyncio``);
* the ``test_*`` functions a block defines (README's examples of users' own tests) are
  called, and awaited when async.

The Command line block's ``llmkit`` lines run as subprocesses against the same servers.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmkit import BaseLLM, LLMConfig, create_llm
from tests.servers import BatchState, FastClock, serve_hf, serve_ollama, serve_openai_batch

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (dev extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # README line of the block's first code line
    heading: str


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.startswith("#"):
            heading = text.lstrip("#").strip()
        elif text.startswith("```") and text.strip() != "```":
            lang, start, body = text[3:].strip(), i + 1, []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, heading))
        i += 1
    return blocks


BLOCKS = readme_blocks()
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def server_urls() -> Iterator[dict[str, str]]:
    """The OpenAI, Ollama and Hugging Face test servers on a loop of their own thread, so
    that snippets may run ``asyncio.run`` themselves."""
    ready = threading.Event()
    shared: dict[str, Any] = {}

    async def serve() -> None:
        # the OpenAI server with its Batch API (a fast clock: batches finish in milliseconds)
        batches = BatchState(clock=FastClock(speed=1000))
        async with serve_openai_batch(batch=batches) as openai, serve_ollama() as ollama, serve_hf() as hf:
            shared["urls"] = {"openai": openai.url, "ollama": ollama.url, "hf": hf.url}
            shared["stop"] = asyncio.Event()
            shared["loop"] = asyncio.get_running_loop()
            ready.set()
            await shared["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "test servers did not start"
    yield shared["urls"]
    shared["loop"].call_soon_threadsafe(shared["stop"].set)
    thread.join(30)


def readme_env(urls: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OLLAMA_", "HUGGINGFACE_", "HF_TOKEN", "LLMKIT_"))
    }
    env.update(
        OPENAI_BASE_URL=urls["openai"],
        OPENAI_API_KEY="sk-readme-test-key",
        OLLAMA_BASE_URL=urls["ollama"],
        HF_ENDPOINT=urls["hf"],
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


@pytest.fixture
def readme_dir(
    server_urls: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A working directory with README's named files, and the environment pointing at the
    test servers."""
    env = readme_env(server_urls)
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for block in BLOCKS:
        first = block.code.splitlines()[0] if block.code.strip() else ""
        if block.lang in ("yaml", "json") and first.startswith("# "):
            (tmp_path / first[2:].strip()).write_text(block.code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- python blocks


async def _close_instances(namespace: dict[str, Any]) -> None:
    for value in list(namespace.values()):
        if isinstance(value, BaseLLM):
            await value.close()


async def _call_tests(namespace: dict[str, Any]) -> int:
    called = 0
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(value):
            result = value()
            if inspect.isawaitable(result):
                await result
            called += 1
    return called


def run_block(block: Block) -> int:
    """Run one README block; returns how many ``test_*`` functions it defined and ran."""
    source = "\n" * (block.line - 1) + block.code  # tracebacks point at README lines
    code = compile(
        source, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    default_llm = create_llm(LLMConfig.from_env("openai", model="gpt-4o-mini"))
    namespace: dict[str, Any] = {"__name__": "__main__", "llm": default_llm}

    async def run_async() -> int:
        try:
            result = eval(code, namespace)
            if inspect.isawaitable(result):
                await result
            return await _call_tests(namespace)
        finally:
            await default_llm.close()
            await _close_instances(namespace)

    if code.co_flags & inspect.CO_COROUTINE:
        return asyncio.run(run_async())
    try:
        exec(code, namespace)  # may call asyncio.run itself
    except BaseException:
        asyncio.run(default_llm.close())
        raise

    async def after() -> int:
        try:
            return await _call_tests(namespace)
        finally:
            await default_llm.close()
            await _close_instances(namespace)

    return asyncio.run(after())


def test_readme_has_python_snippets() -> None:
    headings = {b.heading for b in PYTHON_BLOCKS}
    assert len(PYTHON_BLOCKS) >= 6
    assert {"Quick tour", "Errors", "Testing your code with the mock provider"} <= headings
    assert set(PRINTED_LINES) <= headings


# Lines that snippets under these headings print, as their comments show them.
PRINTED_LINES = {
    "Rate limits": ["5 5"],
    "Fallback across providers": ["Echo: Hi", "[{'connection': 1}, {}]"],
    "Reply cache": ["True 1"],
    "OpenAI's Responses API": ["True True"],
    "Hooks": ["request 0 None", "response 0 None"],
    "Batch jobs": ["openai gpt-4o-mini: 2 answered, 0 failed, 0 already done (2 prompts)", "1 provider"],
    "Running a batch on a Ray cluster": [
        "mock demo: 2 answered, 0 failed, 0 already done (2 prompts)"
    ],
}


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=[f"L{b.line}-{_slug(b.heading)}" for b in PYTHON_BLOCKS]
)
def test_python_snippet_runs(block: Block, readme_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran_tests = run_block(block)
    out = capsys.readouterr().out
    if "def test_" in block.code:
        assert ran_tests == block.code.count("\ndef test_") + block.code.count("\nasync def test_")
    if "print(" in block.code:
        assert out.strip(), "a snippet that prints printed nothing"
    for line in PRINTED_LINES.get(block.heading, []):
        assert line in out.splitlines(), (line, out)


def test_quick_tour_talks_to_the_server_it_is_pointed_at(
    readme_dir: Path, server_urls: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    tour = next(b for b in PYTHON_BLOCKS if b.heading == "Quick tour")
    run_block(tour)
    out = capsys.readouterr().out
    assert out.startswith("Echo: Say hello in French\n")  # the OpenAI test server's reply
    assert "Echo: Count to five" in out


def test_factory_snippet_prints_what_its_comment_says(
    readme_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = next(b for b in PYTHON_BLOCKS if b.heading == "Factory and registry")
    run_block(block)
    comment = block.code.split("print(await factory.health_check())")[1].split("#")[1]
    assert capsys.readouterr().out.strip() == comment.split("(")[0].strip()


def test_concurrency_snippet_limits_and_closes(
    readme_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = next(b for b in PYTHON_BLOCKS if b.heading == "Concurrency, rate limits and lifecycle")
    run_block(block)
    elapsed, closed = capsys.readouterr().out.splitlines()
    assert 0.29 <= float(elapsed.removesuffix(" s")) < 1.0  # three rounds of 0.1 s, not one
    assert closed == "instance is closed"


def test_errors_snippet_prints_what_its_comments_say(
    readme_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = next(b for b in PYTHON_BLOCKS if b.heading == "Errors")
    run_block(block)
    assert capsys.readouterr().out.splitlines() == [
        "('temperature',)",
        *["InvalidRequestError invalid_request"] * 3,
    ]


def test_error_table_lists_every_error_class_with_its_type() -> None:
    import llmkit

    section = README.read_text().split("## Errors")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", section, flags=re.M)
    exported = {
        name: getattr(llmkit, name).type
        for name in llmkit.__all__
        if name != "LLMError"
        and isinstance(getattr(llmkit, name), type)
        and issubclass(getattr(llmkit, name), llmkit.LLMError)
    }
    assert dict(rows) == exported


# --------------------------------------------------------------------------- commands


def _command_lines(heading: str) -> list[str]:
    """The commands of the bash blocks under ``heading`` (comments dropped)."""
    code = "".join(b.code for b in BLOCKS if b.heading == heading and b.lang == "bash")
    return [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]


def _normalise(command: str) -> str:
    command = re.sub(r"^python -m (pip|pytest)\b", r"\1", command.split("#")[0].strip())
    return " ".join(part for part in command.split() if part != "--quiet")


def test_readme_test_command_is_what_ci_runs() -> None:
    """README's test command, step by step, is in .ci/run (which may do more after it)."""
    (command,) = [
        line for line in _command_lines("Two commands on a fresh machine") if "pytest" in line
    ]
    ci_lines = {
        _normalise(line)
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    steps = [_normalise(step) for step in command.split(" && ")]
    assert [s for s in steps if s not in ci_lines] == [], sorted(ci_lines)
    assert any("TRANSFORMERS_OFFLINE=1" in s and "HF_HUB_OFFLINE=1" in s for s in steps)


def test_extras_table_matches_pyproject() -> None:
    """README names exactly the core dependencies, and every extra with exactly its
    packages (and no extra that does not exist)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    section = README.read_text().split("## Install")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if re.match(r"\| `[a-z]+` \|", line)]
    def requirement(text: str) -> str:  # "ray[data]>=2.9; ..." -> "ray[data]"
        return re.split(r"[<>=!~; ]", text, maxsplit=1)[0]

    listed = {}
    for row in rows:
        name_cell, packages_cell = row.split("|")[1:3]
        listed[name_cell.strip(" `")] = set(re.findall(r"`([^`]+)`", packages_cell))
    declared = {name: {requirement(req) for req in reqs} for name, reqs in extras.items()}
    assert listed == declared
    core = re.search(r"The core install \(([^)]*)\)", section)
    assert core is not None
    listed_core = {name.strip().lower() for name in core.group(1).split(",")}
    assert listed_core == {requirement(r).lower() for r in pyproject["project"]["dependencies"]}


def test_cli_lines_run_against_the_test_servers(server_urls: dict[str, str], tmp_path: Path) -> None:
    lines = [line for line in _command_lines("Command line") if line.startswith("llmkit ")]
    assert len(lines) >= 4
    (tmp_path / "prompts.txt").write_text("What is 2+2?\nName a colour.\n")
    env = readme_env(server_urls)
    env["PYTHONPATH"] = str(ROOT)
    for line in lines:
        args = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', line)[1:]]
        proc = subprocess.run(
            [sys.executable, "-m", "llmkit", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    answers = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 2 and all("Echo: " in row for row in answers)
