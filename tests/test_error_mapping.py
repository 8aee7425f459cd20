"""HTTP errors of every server llmkit speaks to, mapped to API.md's error classes: the
bodies below are the ones those servers send (llama.cpp, vLLM, TGI, Ollama, OpenAI)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmkit import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    LLMConfig,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    OpenAILLM,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamError,
)
from llmkit.http.error_mapping import error_from_response
from tests.servers import ServerHandle

TABLE_TYPES = {
    "authentication", "permission_denied", "rate_limit", "model_not_found", "invalid_request",
    "context_length_exceeded", "timeout", "connection", "server_error", "stream_error",
    "configuration", "provider_not_found", "not_supported",
}

CONTEXT_OVERFLOWS: list[tuple[str, int, Any]] = [
    ("llama.cpp", 400, {"error": {"code": 400, "type": "exceed_context_size_error",
                                  "message": "request (6009 tokens) exceeds the available context size (2048 tokens), try increasing it",
                                  "n_prompt_tokens": 6009, "n_ctx": 2048}}),
    ("llama.cpp embeddings", 400, {"error": {"code": 400, "type": "invalid_request_error",
                                             "message": "input (3000 tokens) is larger than the max context size (2048 tokens). skipping"}}),
    ("vLLM", 400, {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                   "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4900 in the messages, 100 in the completion)."}),
    ("TGI", 422, {"error": "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000",
                  "error_type": "validation"}),
    ("TGI total", 422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
                        "error_type": "validation"}),
    ("Ollama", 400, {"error": "the input length exceeds the context length"}),
    ("Ollama prompt", 400, {"error": "prompt too long; exceeded max context length by 12 tokens"}),
    ("OpenAI", 400, {"error": {"message": "This model's maximum context length is 128000 tokens.",
                               "type": "invalid_request_error", "param": "messages",
                               "code": "context_length_exceeded"}}),
]


@pytest.mark.parametrize(("server", "status", "body"), CONTEXT_OVERFLOWS, ids=[c[0] for c in CONTEXT_OVERFLOWS])
def test_context_overflow_of_every_server(server: str, status: int, body: Any) -> None:
    err = error_from_response(status, orjson.dumps(body), provider="p")
    assert isinstance(err, ContextLengthError), (server, err)
    assert err.type == "context_length_exceeded" and err.status == status


def test_tgi_max_new_tokens_limit_is_a_bad_request() -> None:
    body = {"error": "Input validation error: `max_new_tokens` must be <= 2048. Given: 5000",
            "error_type": "validation"}
    err = error_from_response(422, orjson.dumps(body), provider="huggingface")
    assert type(err) is InvalidRequestError


def test_json_404_invalid_url_is_a_bad_request_not_a_missing_model() -> None:
    body = {"error": {"message": "Invalid URL (POST /v1/chat/completion)",
                      "type": "invalid_request_error", "param": None, "code": None}}
    err = error_from_response(404, orjson.dumps(body), provider="openai", model="gpt-4o")
    assert type(err) is InvalidRequestError and "check base_url" in err.message
    llama = {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
    assert type(error_from_response(404, orjson.dumps(llama))) is InvalidRequestError
    for body in ({"error": "model 'llama9' not found"},  # Ollama
                 {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404},
                 {"error": "Repository not found"}):  # the Hub
        assert isinstance(error_from_response(404, orjson.dumps(body)), ModelNotFoundError), body


def test_tgi_424_is_a_server_error() -> None:
    body = {"error": "Request failed during generation: Server error: CUDA out of memory",
            "error_type": "generation"}
    err = error_from_response(424, orjson.dumps(body), provider="huggingface")
    assert isinstance(err, ServerError) and not err.retryable


EXPECTED = {401: AuthenticationError, 402: RateLimitError, 403: PermissionDeniedError,
            408: LLMTimeoutError, 409: ServerError, 410: InvalidRequestError,
            413: InvalidRequestError, 422: InvalidRequestError, 429: RateLimitError,
            451: PermissionDeniedError, 500: ServerError, 503: ServerError}


@pytest.mark.parametrize("status", [*range(100, 104), *range(200, 209), *range(300, 309),
                                    *range(400, 452), *range(500, 512), 599])
@pytest.mark.parametrize("body", [b"", b"<html>oops</html>", b'{"error": {"message": "no"}}',
                                  b'{"error": "plain"}', b'{"detail": "x"}'])
def test_every_status_maps_to_a_table_class(status: int, body: bytes) -> None:
    err = error_from_response(status, body, provider="p")
    assert type(err) is not LLMError and err.type in TABLE_TYPES, (status, body, err)
    if status in EXPECTED and b"plain" in body:
        assert isinstance(err, EXPECTED[status])
    if status < 400:
        assert isinstance(err, ServerError) and not err.retryable


def test_mid_stream_error_event_is_a_stream_error() -> None:
    from llmkit.http.error_mapping import error_from_payload

    err = error_from_payload({"error": {"message": "overloaded"}}, status=None)
    assert isinstance(err, StreamError)


async def test_context_overflow_from_the_server(openai_server: ServerHandle) -> None:
    body = CONTEXT_OVERFLOWS[0][2]
    openai_server.state.add_fault("status", status=400, body=body, path="/v1/chat")
    async with OpenAILLM(LLMConfig(provider="openai", model="m", base_url=openai_server.url,
                                   api_key="sk-test-mapping-0123456789")) as llm:
        with pytest.raises(ContextLengthError, match="available context size"):
            await llm.generate("hi")
        openai_server.state.add_fault("status", status=404, path="/v1/chat",
                                      body={"error": {"message": "Invalid URL (POST /v1/chat/completions)",
                                                      "type": "invalid_request_error"}})
        with pytest.raises(InvalidRequestError) as info:
            await llm.generate("hi")
        assert not isinstance(info.value, ModelNotFoundError)
