"""Sessions: tests, tests_lowest, lint, typecheck, bench. `nox -s tests` is the CI test
command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[local,dev]")
    session.run("pytest", *session.posargs, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})


def lowest_pins() -> list[str]:
    """``name==floor`` for every runtime dependency (and the ``otel`` extra's) that
    pyproject declares as ``name>=floor``. The ``local`` extra keeps the CPU torch build
    the other sessions use."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["otel"]]:
        requirement = requirement.split("#")[0]
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)\s*", requirement)
        if match is None:
            raise ValueError(f"dependency without a plain >= floor: {requirement!r}")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


# Test tools that need newer runtime dependencies than llmkit does (ollama-python needs
# pydantic>=2.9), with the tests that use them: left out of tests_lowest.
NEEDS_NEWER = {"ollama": "tests/test_ollama_vs_official.py"}


@nox.session
def tests_lowest(session: nox.Session) -> None:
    """The suite on the lowest versions of the runtime dependencies that pyproject allows."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    dev = [
        r for r in project["optional-dependencies"]["dev"]
        if re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] not in NEEDS_NEWER
    ]
    session.install(TORCH)
    session.install("-e", ".[local]", *dev, *lowest_pins())
    session.run("pip", "list")
    ignored = [f"--ignore={path}" for path in NEEDS_NEWER.values()]
    session.run(
        "pytest", *ignored, *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "llmkit", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "llmkit")


@nox.session
def bench(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[local,dev,bench]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
