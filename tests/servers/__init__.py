"""Local HTTP servers that speak the provider wire formats, for tests and benchmarks.

Quick use::

    async with serve_openai() as srv:        # srv.url == "http://127.0.0.1:<port>/v1"
        srv.state.add_fault("status", status=429, headers={"Retry-After": "0"})
        ...

See ``base`` for the fault kinds. ``serve_openai_batch()`` adds OpenAI's Files and Batch API
to the OpenAI server (``openai_batch_server``; ``srv.batch`` holds its files, batches and
clock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from . import spec_validation
from .base import (
    BODY_KINDS,
    FAULT_KINDS,
    STREAM_ONLY_KINDS,
    EventWriter,
    Fault,
    RecordedRequest,
    ServerState,
    embed_base64,
    embed_text,
    ollama_error_body,
    openai_error_body,
    quota_body,
    rate_limit_fault,
    run_server,
    schema_instance,
    status_fault,
    tgi_error_body,
)
from .hf_server import DEFAULT_HF_MODELS, default_hub_models, make_hf_app, make_tgi_app
from .ollama_server import DEFAULT_OLLAMA_MODELS, make_ollama_app, normalize_model
from .openai_batch_server import (
    BatchServerHandle,
    BatchState,
    FastClock,
    make_openai_batch_app,
    serve_openai_batch,
)
from .openai_chat import ChatDialect
from .openai_server import (
    DEFAULT_OPENAI_MODELS,
    OLLAMA_OPENAI_DIALECT,
    VLLM_DIALECT,
    make_openai_app,
    make_vllm_app,
)


@dataclass
class ServerHandle:
    """A running server: ``url`` is what a client is configured with (``/v1`` for OpenAI),
    ``base_url`` is the bare ``http://127.0.0.1:<port>``."""

    url: str
    base_url: str
    state: ServerState


@asynccontextmanager
async def serve(
    factory: Callable[[ServerState], web.Application],
    state: ServerState | None = None,
    suffix: str = "",
) -> AsyncIterator[ServerHandle]:
    state = state if state is not None else ServerState()
    if state.validate_spec:
        spec_validation.require_specs()
    async with run_server(factory(state)) as base:
        yield ServerHandle(url=base + suffix, base_url=base, state=state)
    assert_spec_conformant(state)


def assert_spec_conformant(state: ServerState) -> None:
    """Fail when the server received or sent a body its provider's spec does not allow."""
    if state.spec_violations:
        raise AssertionError(
            "wire bodies violate the provider specification:\n  "
            + "\n  ".join(state.spec_violations)
        )


def serve_openai(
    state: ServerState | None = None, dialect: ChatDialect | None = None
) -> AbstractAsyncContextManager[ServerHandle]:
    if dialect is None:
        return serve(make_openai_app, state, "/v1")
    return serve(lambda st: make_openai_app(st, dialect), state, "/v1")


def serve_vllm(state: ServerState | None = None) -> AbstractAsyncContextManager[ServerHandle]:
    """vLLM 0.32's OpenAI-compatible server (``.url`` ends in ``/v1``)."""
    return serve(make_vllm_app, state, "/v1")


def serve_ollama(state: ServerState | None = None) -> AbstractAsyncContextManager[ServerHandle]:
    return serve(make_ollama_app, state)


def serve_hf(state: ServerState | None = None) -> AbstractAsyncContextManager[ServerHandle]:
    return serve(make_hf_app, state)


def serve_tgi(state: ServerState | None = None) -> AbstractAsyncContextManager[ServerHandle]:
    return serve(make_tgi_app, state)


__all__ = [
    "BODY_KINDS",
    "DEFAULT_HF_MODELS",
    "DEFAULT_OLLAMA_MODELS",
    "DEFAULT_OPENAI_MODELS",
    "FAULT_KINDS",
    "OLLAMA_OPENAI_DIALECT",
    "STREAM_ONLY_KINDS",
    "VLLM_DIALECT",
    "BatchServerHandle",
    "BatchState",
    "ChatDialect",
    "EventWriter",
    "FastClock",
    "Fault",
    "RecordedRequest",
    "ServerHandle",
    "ServerState",
    "assert_spec_conformant",
    "default_hub_models",
    "embed_base64",
    "embed_text",
    "make_hf_app",
    "make_ollama_app",
    "make_openai_app",
    "make_openai_batch_app",
    "make_tgi_app",
    "make_vllm_app",
    "normalize_model",
    "ollama_error_body",
    "openai_error_body",
    "quota_body",
    "rate_limit_fault",
    "run_server",
    "schema_instance",
    "serve",
    "serve_hf",
    "serve_ollama",
    "serve_openai",
    "serve_openai_batch",
    "serve_tgi",
    "serve_vllm",
    "status_fault",
    "tgi_error_body",
]
