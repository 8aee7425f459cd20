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
  ``data: [DONE]``).
* Model ``missing-model`` -> 404 ``model_not_found``; more than ``state.context_length``
  prompt words -> 400 ``context_length_exceeded``.
* ``POST /v1/embeddings``, ``POST /v1/completions``, ``GET /v1/models``,
  ``GET /v1/models/{id}``.
* Every response carries ``x-request-id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    STATE_KEY,
    EventWriter,
    ProviderSpec,
    ServerState,
    content_text,
    count_words,
    embed_base64,
    embed_text,
    get_json,
    install_middleware,
    json_ok,
    json_response,
    messages_words,
    new_application,
    openai_error_body,
    schema_instance,
    split_pieces,
    tool_arguments_for,
    truncate_words,
)

DEFAULT_OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
MISSING_MODEL = "missing-model"
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


@dataclass(frozen=True)
class ChatErrors:
    """How a chat endpoint reports errors (OpenAI vs. TGI/HF shapes)."""

    invalid_json: Callable[[], web.Response]
    bad_request: Callable[[str, str | None, str | None], web.Response]
    model_not_found: Callable[[str], web.Response]
    context_length: Callable[[int, int], web.Response]
    stream_error: Callable[[str | None], JSON]
    sse_prefix: bytes = b"data: "
    # Rewrites each OpenAI-shaped body / chunk into the endpoint's own shape (TGI's).
    reshape: Callable[[dict[str, Any]], dict[str, Any]] | None = None


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


# --------------------------------------------------------------------------- chat planning


@dataclass
class ToolCallPlan:
    id: str
    name: str
    arguments: str


@dataclass
class ChatPlan:
    model: str
    text: str | None
    tool_call: ToolCallPlan | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    n: int


def _forced_tool(tool_choice: JSON) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
        if isinstance(tool_choice.get("name"), str):
            return str(tool_choice["name"])
    return None


def _tool_parts(tool: JSON) -> tuple[str, JSON]:
    if isinstance(tool, dict):
        fn = tool.get("function", tool)
        if isinstance(fn, dict):
            return str(fn.get("name", "tool")), fn.get("parameters") or {}
    return "tool", {}


def default_reply(state: ServerState, messages: list[JSON]) -> str:
    if state.reply is not None:
        return state.reply
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") in ("user", "tool"):
            return "Echo: " + content_text(m.get("content"))
    return "Echo: "


def choose_tool(tools: JSON, tool_choice: JSON, messages: list[JSON]) -> tuple[str, JSON] | None:
    """The (name, parameters) of the tool to call, or None for a text reply."""
    if not isinstance(tools, list) or not tools or tool_choice == "none":
        return None
    forced = _forced_tool(tool_choice)
    if forced is None and tool_choice != "required":
        last = messages[-1] if messages else None
        if isinstance(last, dict) and last.get("role") == "tool":
            return None
    parts = [_tool_parts(t) for t in tools]
    if forced is not None:
        for name, params in parts:
            if name == forced:
                return name, params
        return forced, {}
    return parts[0]


def structured_reply(response_format: JSON) -> str | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
        return orjson.dumps(schema_instance(schema)).decode()
    if kind == "json_object":
        return '{"result": "text"}'
    if kind == "json":  # TGI's messages API: {"type": "json", "value": <schema>}
        value = response_format.get("value")
        return orjson.dumps(schema_instance(value if isinstance(value, dict) else {})).decode()
    return None


def plan_chat(state: ServerState, body: JSON, errors: ChatErrors) -> ChatPlan | web.Response:
    if not json_ok(body) or not isinstance(body, dict):
        return errors.invalid_json()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return errors.bad_request("you must provide a model parameter", None, None)
    messages = body.get("messages")
    if messages is None:
        return errors.bad_request(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        return errors.bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    if model == MISSING_MODEL:
        return errors.model_not_found(model)
    prompt_tokens = messages_words(messages)
    if prompt_tokens > state.context_length:
        return errors.context_length(state.context_length, prompt_tokens)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    limit = limit if isinstance(limit, int) else None
    n_raw = body.get("n")
    n = n_raw if isinstance(n_raw, int) and n_raw > 0 else 1

    tool = choose_tool(body.get("tools"), body.get("tool_choice"), messages)
    if tool is not None:
        name, params = tool
        args, _ = tool_arguments_for(state, params)
        call = ToolCallPlan(f"call_{state.next_id():08d}", name, args)
        return ChatPlan(
            model, None, call, "tool_calls", prompt_tokens, max(1, count_words(args)), n
        )

    text = structured_reply(body.get("response_format"))
    if text is None:
        text = default_reply(state, messages)
    text, truncated = truncate_words(text, limit)
    return ChatPlan(
        model, text, None, "length" if truncated else "stop", prompt_tokens, count_words(text), n
    )


def _usage(plan: ChatPlan) -> dict[str, Any]:
    completion = plan.completion_tokens * plan.n
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion_body(plan: ChatPlan, completion_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": plan.text,
        "refusal": None,
        "annotations": [],
    }
    if plan.tool_call is not None:
        message["tool_calls"] = [
            {
                "id": plan.tool_call.id,
                "type": "function",
                "function": {"name": plan.tool_call.name, "arguments": plan.tool_call.arguments},
            }
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED_TS,
        "model": plan.model,
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
            for i in range(plan.n)
        ],
        "usage": _usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_llmkit_test",
    }


def _chunk(
    completion_id: str, model: str, choices: list[dict[str, Any]], include_usage: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": CREATED_TS,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_llmkit_test",
        "choices": choices,
    }
    if include_usage:
        out["usage"] = None
    return out


def _split_arguments(args: str, parts: int = 3) -> list[str]:
    if len(args) < parts:
        return [args]
    step = -(-len(args) // parts)
    return [args[i : i + step] for i in range(0, len(args), step)]


async def stream_chat(
    request: web.Request, plan: ChatPlan, body: dict[str, Any], errors: ChatErrors
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    completion_id = f"chatcmpl-{state.next_id():08d}"
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return _chunk(completion_id, plan.model, choices, include_usage)

    def delta(d: dict[str, Any], i: int = 0, finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": d, "logprobs": None, "finish_reason": finish}

    writer = EventWriter(
        request,
        framing="sse",
        make_error=errors.stream_error,
        make_content=lambda text: chunk([delta({"content": text})]),
        terminator=errors.sse_prefix + b"[DONE]\n\n",
        sse_prefix=errors.sse_prefix,
    )
    await writer.start()

    events: list[dict[str, Any]] = []
    for i in range(plan.n):
        if plan.tool_call is not None:
            call = plan.tool_call
            events.append(
                chunk(
                    [
                        delta(
                            {
                                "role": "assistant",
                                "content": None,
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": call.id,
                                        "type": "function",
                                        "function": {"name": call.name, "arguments": ""},
                                    }
                                ],
                                "refusal": None,
                            },
                            i,
                        )
                    ]
                )
            )
            for piece in _split_arguments(call.arguments):
                events.append(
                    chunk(
                        [delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, i)]
                    )
                )
        else:
            events.append(chunk([delta({"role": "assistant", "content": "", "refusal": None}, i)]))
            for piece in split_pieces(plan.text or ""):
                events.append(chunk([delta({"content": piece}, i)]))
        events.append(chunk([delta({}, i, plan.finish_reason)]))
    final = None
    if include_usage:
        final = chunk([])
        final["usage"] = _usage(plan)
    if errors.reshape is not None:
        events = [errors.reshape(event) for event in events]
        final = errors.reshape(final) if final is not None else None
    for event in events:
        if not await writer.send(event):
            return await writer.finish()
    return await writer.finish(final)


def make_chat_handler(state: ServerState, errors: ChatErrors) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        plan = plan_chat(state, body, errors)
        if isinstance(plan, web.Response):
            return plan
        if body.get("stream") is True:
            return await stream_chat(request, plan, body, errors)
        out = chat_completion_body(plan, f"chatcmpl-{state.next_id():08d}")
        return json_response(errors.reshape(out) if errors.reshape is not None else out)

    return handler


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


def make_openai_app(state: ServerState | None = None) -> web.Application:
    """Build the OpenAI-compatible app (routes under ``/v1``)."""
    state = state if state is not None else ServerState()
    if state.models is None:
        state.models = list(DEFAULT_OPENAI_MODELS)
    app = new_application()
    install_middleware(app, state, _openai_spec(state))
    add_openai_routes(app, state, prefix="/v1")
    return app


def add_openai_routes(app: web.Application, state: ServerState, prefix: str = "/v1") -> None:
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
        return {"id": model_id, "object": "model", "created": 1686935002, "owned_by": "system"}

    async def list_models(request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [model_obj(m) for m in state.models or []]})

    async def get_model(request: web.Request) -> web.Response:
        model_id = request.match_info["model"]
        if model_id not in (state.models or []):
            return openai_error(
                404,
                f"The model '{model_id}' does not exist",
                "invalid_request_error",
                "model",
                "model_not_found",
            )
        return json_response(model_obj(model_id))

    app.router.add_post(f"{prefix}/chat/completions", make_chat_handler(state, OPENAI_CHAT_ERRORS))
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
