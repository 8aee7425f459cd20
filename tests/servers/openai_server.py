"""OpenAI-compatible test server (routes under ``/v1``).

Behaviour (all deterministic):

* ``POST /v1/chat/completions``: reply text is ``state.reply`` or ``"Echo: "`` + the
  content of the last ``user`` (or, after a tool result, ``tool``) message. With
  ``tools`` and ``tool_choice`` other than ``"none"`` the reply is a tool call to the
  named tool (``{"type": "function", "function": {"name": ...}}``) or the first tool;
  when the last message is a tool result and ``tool_choice`` is ``"auto"``/absent the
  model answers with text instead, so tool loops terminate. Arguments are
  ``state.tool_arguments`` (dict, or str sent verbatim) or a minimal instance of the
  tool's parameter schema. ``response_format`` ``json_schema`` / ``json_object`` yield a
  minimal schema instance / ``{}``-like object. ``max_tokens`` / ``max_completion_tokens``
  truncate to that many words (``finish_reason: "length"``). ``n`` choices are supported.
  Usage: prompt_tokens = words in all messages, completion_tokens = words in the reply.
  ``stream: true`` sends SSE chunks (role chunk, one chunk per word-ish piece, a final
  chunk with finish_reason, the usage chunk with ``stream_options.include_usage``,
  ``data: [DONE]``). Reasoning, refusals, logprobs, interleaved ``n`` choices, prompt
  caching and custom tool calls: see :mod:`tests.servers.openai_chat`.
* Model ``missing-model`` -> 404 ``model_not_found``; more than ``state.context_length``
  prompt words -> 400 ``context_length_exceeded``.
* ``POST /v1/responses``, ``GET /v1/responses/{id}`` (the Responses API): see
  :mod:`tests.servers.openai_responses`.
* ``POST /v1/embeddings``, ``POST /v1/completions``, ``GET /v1/models``,
  ``GET /v1/models/{id}`` (a model id starting with ``vllm/`` has vLLM's
  ``max_model_len`` = ``state.context_length``).
* Every response carries ``x-request-id``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    EventWriter,
    ProviderSpec,
    ServerState,
    count_words,
    embed_base64,
    embed_text,
    get_json,
    install_middleware,
    json_ok,
    json_response,
    new_application,
    openai_error_body,
    split_pieces,
    truncate_words,
)
from .openai_chat import (
    MISSING_MODEL,
    OPENAI_DIALECT,
    ChatDialect,
    ChatErrors,
    choose_tool,
    default_reply,
    structured_reply,
)
from .openai_chat_handler import make_chat_handler
from .openai_responses import add_responses_routes
from .openai_vllm import (
    OLLAMA_OPENAI_DIALECT,
    VLLM_CHAT_ERRORS,
    VLLM_DIALECT,
    vllm_auth_error,
    vllm_embedding_too_long,
    vllm_model_card,
    vllm_status_body,
)

# the chat planning helpers the other servers use
__all__ = [
    "DEFAULT_OPENAI_MODELS",
    "MISSING_MODEL",
    "OLLAMA_OPENAI_DIALECT",
    "VLLM_DIALECT",
    "ChatErrors",
    "choose_tool",
    "default_reply",
    "make_chat_handler",
    "make_openai_app",
    "make_vllm_app",
    "structured_reply",
]

DEFAULT_OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
INVALID_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)
STREAM_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


# --------------------------------------------------------------------------- errors


def openai_error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(openai_error_body(message, type, param, code), status, headers)


def openai_status_body(status: int, message: str | None) -> JSON:
    """OpenAI's error body for a bare status code."""
    if status == 401:
        return openai_error_body(
            message or "Invalid authentication", "invalid_request_error", None, "invalid_api_key"
        )
    if status == 403:
        return openai_error_body(
            message or "Permission denied",
            "invalid_request_error",
            None,
            "unsupported_country_region_territory",
        )
    if status == 404:
        return openai_error_body(message or "Not found", "invalid_request_error", None, None)
    if status == 429:
        return openai_error_body(
            message
            or "Rate limit reached for requests. Limit: 3, Used: 3, Requested: 1. Please try again in 20s.",
            "requests",
            None,
            "rate_limit_exceeded",
        )
    if status == 503:
        return openai_error_body(
            message or "The engine is currently overloaded, please try again later",
            "server_error",
            None,
            None,
        )
    if status >= 500:
        return openai_error_body(message or STREAM_ERROR_MESSAGE, "server_error", None, None)
    return openai_error_body(message or "Bad request", "invalid_request_error", None, None)


def mask_key(key: str) -> str:
    if len(key) <= 8:
        return key[:3] + "***"
    return f"{key[:3]}***{'*' * 8}{key[-4:]}"


def openai_auth_error(provided: str | None) -> web.Response:
    if not provided:
        return openai_error(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
            "or as the password field (with blank username) if you're accessing the API from "
            "your browser and are prompted for a username and password. You can obtain an API "
            "key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            None,
        )
    return openai_error(
        401,
        f"Incorrect API key provided: {mask_key(provided)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


OPENAI_CHAT_ERRORS = ChatErrors(
    invalid_json=lambda: openai_error(400, INVALID_JSON_MESSAGE),
    bad_request=lambda msg, param, code: openai_error(
        400, msg, "invalid_request_error", param, code
    ),
    model_not_found=lambda model: openai_error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        None,
        "model_not_found",
    ),
    context_length=lambda limit, got: openai_error(
        400,
        f"This model's maximum context length is {limit} tokens. However, your messages "
        f"resulted in {got} tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
    stream_error=lambda message: openai_error_body(
        message or STREAM_ERROR_MESSAGE, "server_error", None, None
    ),
)


# --------------------------------------------------------------------------- other endpoints


def _inputs(raw: JSON) -> list[str] | None:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, int) for x in raw):
            return [" ".join(str(x) for x in raw)]
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return [" ".join(str(t) for t in x) for x in raw]
    return None


def make_openai_app(
    state: ServerState | None = None, dialect: ChatDialect = OPENAI_DIALECT
) -> web.Application:
    """Build the OpenAI-compatible app (routes under ``/v1``); ``dialect`` says how its chat
    endpoint differs from OpenAI's (e.g. :data:`OLLAMA_OPENAI_DIALECT`)."""
    state = state if state is not None else ServerState()
    if state.models is None:
        state.models = list(DEFAULT_OPENAI_MODELS)
    app = new_application()
    install_middleware(app, state, _openai_spec(state))
    add_openai_routes(app, state, prefix="/v1", dialect=dialect)
    return app


def make_vllm_app(state: ServerState | None = None) -> web.Application:
    """vLLM's OpenAI-compatible server (see :mod:`tests.servers.openai_vllm`)."""
    state = state if state is not None else ServerState()
    if state.models is None:
        state.models = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-0.6B"]
    app = new_application()
    install_middleware(app, state, _vllm_spec())
    add_openai_routes(app, state, prefix="/v1", dialect=VLLM_DIALECT, errors=VLLM_CHAT_ERRORS)
    return app


def add_openai_routes(
    app: web.Application,
    state: ServerState,
    prefix: str = "/v1",
    *,
    dialect: ChatDialect = OPENAI_DIALECT,
    errors: ChatErrors = OPENAI_CHAT_ERRORS,
) -> None:
    vllm = dialect is VLLM_DIALECT

    async def embeddings(request: web.Request) -> web.Response:
        body = get_json(request)
        if not json_ok(body) or not isinstance(body, dict):
            return OPENAI_CHAT_ERRORS.invalid_json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter")
        if "input" not in body:
            return openai_error(
                400,
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        if model == MISSING_MODEL:
            return OPENAI_CHAT_ERRORS.model_not_found(model)
        texts = _inputs(body.get("input"))
        if vllm and texts is not None and (too_long := vllm_embedding_too_long(state, texts)):
            return too_long
        if texts is None or any(t == "" for t in texts):
            return openai_error(
                400,
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                param=None,
            )
        dim = body.get("dimensions")
        dim = dim if isinstance(dim, int) and dim > 0 else state.embedding_dim
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for i, text in enumerate(texts):
            vec = embed_text(text, dim)
            tokens += count_words(text)
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": embed_base64(vec) if as_b64 else vec,
                }
            )
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def completions(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        if not json_ok(body) or not isinstance(body, dict):
            return OPENAI_CHAT_ERRORS.invalid_json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter")
        if model == MISSING_MODEL:
            return OPENAI_CHAT_ERRORS.model_not_found(model)
        prompt = body.get("prompt", "")
        prompt_text = (
            prompt
            if isinstance(prompt, str)
            else " ".join(str(p) for p in prompt)
            if isinstance(prompt, list)
            else ""
        )
        text = state.reply if state.reply is not None else "Echo: " + prompt_text
        limit = body.get("max_tokens", 16)
        text, truncated = truncate_words(text, limit if isinstance(limit, int) else None)
        finish = "length" if truncated else "stop"
        cid = f"cmpl-{state.next_id():08d}"
        prompt_tokens = count_words(prompt_text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_words(text),
            "total_tokens": prompt_tokens + count_words(text),
        }

        def obj(piece: str, finish_reason: str | None) -> dict[str, Any]:
            return {
                "id": cid,
                "object": "text_completion",
                "created": CREATED_TS,
                "model": model,
                "system_fingerprint": "fp_llmkit_test",
                "choices": [
                    {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
                ],
            }

        if body.get("stream") is True:
            writer = EventWriter(
                request,
                framing="sse",
                make_error=OPENAI_CHAT_ERRORS.stream_error,
                make_content=lambda t: obj(t, None),
                terminator=b"data: [DONE]\n\n",
            )
            await writer.start()
            for piece in split_pieces(text):
                if not await writer.send(obj(piece, None)):
                    return await writer.finish()
            return await writer.finish(obj("", finish))
        full = obj(text, finish)
        full["usage"] = usage
        return json_response(full)

    def model_obj(model_id: str) -> dict[str, Any]:
        if vllm:
            return vllm_model_card(model_id, state)
        obj: dict[str, Any] = {
            "id": model_id, "object": "model", "created": 1686935002, "owned_by": "system",
        }
        if model_id.startswith("vllm/"):
            obj["max_model_len"] = state.context_length
        return obj

    async def list_models(request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [model_obj(m) for m in state.models or []]})

    async def get_model(request: web.Request) -> web.Response:
        model_id = request.match_info["model"]
        if model_id not in (state.models or []):
            if vllm:
                return VLLM_CHAT_ERRORS.model_not_found(model_id)
            return openai_error(
                404,
                f"The model '{model_id}' does not exist",
                "invalid_request_error",
                "model",
                "model_not_found",
            )
        return json_response(model_obj(model_id))

    app.router.add_post(f"{prefix}/chat/completions", make_chat_handler(state, errors, dialect))
    add_responses_routes(app, state, OPENAI_CHAT_ERRORS, prefix)
    app.router.add_post(f"{prefix}/embeddings", embeddings)
    app.router.add_post(f"{prefix}/completions", completions)
    app.router.add_get(f"{prefix}/models", list_models)
    app.router.add_get(f"{prefix}/models/{{model:.+}}", get_model)


def _openai_huge(path: str, body: JSON) -> tuple[bytes, bytes]:
    model = body.get("model", "gpt-4o-mini") if isinstance(body, dict) else "gpt-4o-mini"
    prefix = (
        orjson.dumps(
            {
                "id": "chatcmpl-huge",
                "object": "chat.completion",
                "created": CREATED_TS,
                "model": model,
            }
        )[:-1]
        + b',"choices":[{"index":0,"message":{"role":"assistant","content":"'
    )
    suffix = b'"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    return prefix, suffix


def _vllm_spec() -> ProviderSpec:
    return ProviderSpec(
        name="vllm",
        error_body=vllm_status_body,
        auth_error=vllm_auth_error,
        is_stream=lambda path, body: isinstance(body, dict) and body.get("stream") is True,
        huge_template=_openai_huge,
        response_headers=lambda st: {"x-request-id": f"{st.total_requests:032x}"},
    )


def _openai_spec(state: ServerState) -> ProviderSpec:
    return ProviderSpec(
        name="openai",
        error_body=openai_status_body,
        auth_error=openai_auth_error,
        is_stream=lambda path, body: isinstance(body, dict) and body.get("stream") is True,
        huge_template=_openai_huge,
        response_headers=lambda st: {
            "x-request-id": f"req_{st.total_requests:016x}",
            "openai-processing-ms": "1",
        },
    )
