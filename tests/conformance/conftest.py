"""Fixtures for the conformance tests against a real llama.cpp ``llama-server``.

The shared chat and embedding servers are session-scoped (started once); tests that
kill or freeze a server take ``own_llama_chat``, a server of their own. Where the binary
or models are missing, the tests that need a server are not run (deselected at collection)
and the session ends with ONE line saying how many and why; on CI (``CI=true``) they run
and a missing server fails each of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conformance.llama_server import LlamaServer, chat_args, embed_args, missing_reason

# The fixtures that start a llama-server (a test needs the binary when it uses one of them).
LLAMA_FIXTURES = frozenset({"llama_chat", "llama_embed", "own_llama_chat", "brace_token"})
_NOT_RUN = pytest.StashKey[tuple[int, str]]()


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def require_llama_server() -> None:
    """Fail (on CI) or skip (a test reached here without the collection-time check)."""
    reason = missing_reason()
    if reason is None:
        return
    if on_ci():
        pytest.fail(
            f"conformance tests need llama.cpp's llama-server on CI: {reason}", pytrace=False
        )
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.conformance)
    reason = missing_reason()
    if reason is None or on_ci():
        return
    needs = [item for item in items if LLAMA_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if needs:
        deselected = set(needs)
        config.hook.pytest_deselected(items=needs)
        items[:] = [item for item in items if item not in deselected]
        config.stash[_NOT_RUN] = (len(needs), reason)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    not_run = config.stash.get(_NOT_RUN, None)
    if not_run is not None:
        count, reason = not_run
        tests = "test" if count == 1 else "tests"
        terminalreporter.write_line(
            f"llama.cpp conformance: {count} {tests} not run (deselected): {reason}; "
            "on CI (CI=true) they run and fail without it"
        )


def _running(args: list[str]) -> Iterator[LlamaServer]:
    """A started llama-server for the fixture's lifetime, stopped by PID afterwards."""
    require_llama_server()
    server = LlamaServer(args).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llama_chat() -> Iterator[LlamaServer]:
    """The shared chat server (tiny-chat, 2048 tokens per request)."""
    yield from _running(chat_args())


@pytest.fixture(scope="session")
def llama_embed() -> Iterator[LlamaServer]:
    """The shared embedding server (all-MiniLM-L6-v2, 384 dimensions)."""
    yield from _running(embed_args())


@pytest.fixture
def own_llama_chat() -> Iterator[LlamaServer]:
    """A chat server for this test alone (fault tests kill or freeze it)."""
    yield from _running(chat_args())


@pytest.fixture(scope="session")
def brace_token(llama_chat: LlamaServer) -> int:
    """The token id of ``{"`` (one token in tiny-chat's vocabulary): a logit bias on it makes
    the random model start the JSON object of a tool call."""
    tokens = llama_chat.post_json("/tokenize", {"content": '{"'})
    assert isinstance(tokens, dict)
    ids = tokens["tokens"]
    assert len(ids) == 1, ids
    return int(ids[0])
