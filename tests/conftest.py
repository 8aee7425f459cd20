"""Shared pytest fixtures."""

from __future__ import annotations

# --- local provider test servers (tests/servers) -----------------------------------------
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # plain `pytest` invocation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import (
    BatchServerHandle,
    ServerHandle,
    ServerState,
    serve_hf,
    serve_ollama,
    serve_openai,
    serve_openai_batch,
    serve_tgi,
    spec_validation,
)
from tests.servers.schemas import generate as schema_generator

# --- tests that read the providers' official spec files ----------------------------------
# `@pytest.mark.official_specs`: the test reads the official OpenAPI files ($LLMKIT_SPECS or
# ../shared/specs), e.g. to regenerate tests/servers/schemas and compare. Where they are
# absent the tests are not run (deselected) and the session ends with one line saying so;
# on CI (CI=true) they run, and fail without the files.
_SPECS_NOT_RUN = pytest.StashKey[tuple[int, str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "official_specs: reads the providers' official spec files (tests/conftest.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = schema_generator.missing_sources(spec_validation.specs_dir())
    if reason is None or os.environ.get("CI", "").lower() in ("true", "1"):
        return
    needs = [item for item in items if item.get_closest_marker("official_specs")]
    if needs:
        deselected = set(needs)
        config.hook.pytest_deselected(items=needs)
        items[:] = [item for item in items if item not in deselected]
        config.stash[_SPECS_NOT_RUN] = (len(needs), reason)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    not_run = config.stash.get(_SPECS_NOT_RUN, None)
    if not_run is not None:
        count, reason = not_run
        tests = "test" if count == 1 else "tests"
        terminalreporter.write_line(
            f"official specs: {count} {tests} comparing tests/servers/schemas with them not "
            f"run (deselected): {reason}"
        )


@pytest.fixture
async def openai_server() -> AsyncIterator[ServerHandle]:
    """OpenAI-compatible server; ``.url`` ends in ``/v1``."""
    async with serve_openai(ServerState()) as handle:
        yield handle


@pytest.fixture
async def openai_batch_server() -> AsyncIterator[BatchServerHandle]:
    """The OpenAI server with OpenAI's Files and Batch API; ``.batch`` holds its files,
    batches and clock (``tests/servers/openai_batch_server.py``)."""
    async with serve_openai_batch() as handle:
        yield handle


@pytest.fixture
async def ollama_server() -> AsyncIterator[ServerHandle]:
    """Ollama server; ``.url`` is the bare base URL (paths start with ``/api``)."""
    async with serve_ollama(ServerState()) as handle:
        yield handle


@pytest.fixture
async def hf_server() -> AsyncIterator[ServerHandle]:
    """Hugging Face router + TGI + Hub server; ``.url`` is the bare base URL."""
    async with serve_hf(ServerState()) as handle:
        yield handle


@pytest.fixture
async def tgi_server() -> AsyncIterator[ServerHandle]:
    """TGI-only server; ``.url`` is the bare base URL."""
    async with serve_tgi(ServerState()) as handle:
        yield handle


@pytest.fixture
def refused_url() -> str:
    """``http://127.0.0.1:<port>`` with nothing listening on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- end of local provider test servers -------------------------------------------------


@pytest.fixture
def openai_server_thread() -> object:
    """An OpenAI server running in its own thread and loop; yields its URL (for tests that
    drive the client from several threads, each with its own loop)."""
    import asyncio
    import threading

    ready = threading.Event()
    stop: dict[str, object] = {}

    def run() -> None:
        async def main() -> None:
            async with serve_openai(ServerState()) as handle:
                stop["url"] = handle.url
                stop["event"] = asyncio.Event()
                stop["loop"] = asyncio.get_running_loop()
                ready.set()
                await stop["event"].wait()  # type: ignore[attr-defined]

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    yield stop["url"]
    loop = stop["loop"]
    loop.call_soon_threadsafe(stop["event"].set)  # type: ignore[attr-defined]
    thread.join(10)


@pytest.fixture(autouse=True)
def _spec_exemption(request: pytest.FixtureRequest) -> object:
    """``@pytest.mark.spec_exempt("why")``: this test sends request bodies the provider's
    spec does not allow ON PURPOSE (e.g. to check a test server's own 400s), so the test
    servers skip request validation for it. Responses are still validated. This marker is the
    only opt-out from tests/servers/spec_validation.py."""
    marker = request.node.get_closest_marker("spec_exempt")
    reason = str(marker.args[0]) if marker and marker.args else None
    if marker is not None and not reason:
        raise pytest.UsageError("spec_exempt needs a reason")
    spec_validation.set_exemption(reason)
    yield
    spec_validation.set_exemption(None)
