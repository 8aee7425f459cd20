"""Fixtures for the conformance tests against a real llama.cpp ``llama-server``.

The shared chat and embedding servers are session-scoped (started once); tests that
kill or freeze a server take ``own_llama_chat``, a server of their own. Where the binary
or models are missing, the tests skip with the reason, except on CI (``CI=true``), where
a missing server is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conformance.llama_server import LlamaServer, chat_args, embed_args, missing_reason


def require_llama_server() -> None:
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(
            f"conformance tests need llama.cpp's llama-server on CI: {reason}", pytrace=False
        )
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.conformance)


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
