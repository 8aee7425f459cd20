"""Hugging Face test server: Inference Providers router, TGI and the Hub API.

``make_hf_app(state)`` serves everything on one port:

* router: ``POST /v1/chat/completions`` (same logic as the OpenAI server, HF/TGI error
  bodies, SSE framed as ``data:{...}`` without a space and ended by ``data:[DONE]``, as
  TGI's axum server does), ``GET /v1/models``,
  ``POST /hf-inference/models/{model}/pipeline/feature-extraction``
  (``{"inputs": str | list[str], "normalize", "truncate", ...}`` -> ``list[float]`` for a
  str, ``list[list[float]]`` for a list);
* TGI: ``GET /info``, ``GET /health``, ``POST /generate``, ``POST /generate_stream``;
* Hub: ``GET /api/models`` (``search``, ``author``, ``filter``, ``pipeline_tag``,
  ``library``, ``sort``, ``direction``, ``limit``, ``full``, ``cursor``; a ``Link: <...>;
  rel="next"`` header when more results remain), ``GET /api/models/{repo_id}`` (and
  ``.../revision/{rev}``), 404 ``{"error": "Repository not found"}``.

``make_tgi_app(state)`` is a TGI-only variant (``/info``, ``/health``, ``/generate``,
``/generate_stream``, ``/v1/chat/completions``, ``/v1/models``).

Errors: TGI shape ``{"error": "...", "error_type": "..."}`` (422 validation, 424
generation, 429 overloaded, 500 incomplete_generation, 503 unhealthy); 401 is
``{"error": "Invalid credentials in Authorization header"}``; model ``missing-model`` ->
404 ``{"error": "Model missing-model does not exist", "error_type": "not_found"}``;
``state.loading`` (or a ``loading`` fault) -> 503 ``{"error": "Model <m> is currently
loading", "estimated_time": state.loading_estimated_time}``. The mid-stream error event is
``data:{"error": "...", "error_type": "generation"}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    SPEC_FLAVOUR_KEY,
    EventWriter,
    ProviderSpec,
    ServerState,
    count_words,
    embed_text,
    get_json,
    install_middleware,
    json_ok,
    json_response,
    new_application,
    split_pieces,
    tgi_error_body,
)
from .openai_server import ChatErrors, make_chat_handler, structured_reply

DEFAULT_HF_MODELS = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "sentence-transformers/all-MiniLM-L6-v2",
]
MISSING_MODEL = "missing-model"
TGI_VERSION = "3.3.4"
AUTH_MESSAGE = "Invalid credentials in Authorization header"
GENERATION_ERROR = "Request failed during generation"
EOS_TOKEN = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}


def tgi_error(status: int, message: str, error_type: str = "validation") -> web.Response:
    return json_response(tgi_error_body(message, error_type), status)


def hf_status_body(status: int, message: str | None) -> JSON:
    defaults: dict[int, tuple[str, str]] = {
        401: (AUTH_MESSAGE, "authentication"),
        404: ("Not Found", "not_found"),
        422: ("Input validation error", "validation"),
        424: (GENERATION_ERROR, "generation"),
        429: ("Model is overloaded", "overloaded"),
        500: ("Incomplete generation", "incomplete_generation"),
        503: ("Service Unavailable", "unavailable"),
    }
    text, kind = defaults.get(status, ("Error", "error"))
    return tgi_error_body(message or text, kind)


def hf_auth_error(provided: str | None) -> web.Response:
    return json_response({"error": AUTH_MESSAGE}, 401)


def model_not_found(model: str) -> web.Response:
    return tgi_error(404, f"Model {model} does not exist", "not_found")


def loading_response(state: ServerState, model: str) -> web.Response:
    return json_response(
        {
            "error": f"Model {model} is currently loading",
            "estimated_time": state.loading_estimated_time,
        },
        503,
    )


def _length_message(limit: int, got: int, new_tokens: int = 0) -> str:
    return (
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {limit}. "
        f"Given: {got} `inputs` tokens and {new_tokens} `max_new_tokens`"
    )


HF_CHAT_ERRORS = ChatErrors(
    invalid_json=lambda: tgi_error(
        422, "Failed to deserialize the JSON body into the target type", "validation"
    ),
    bad_request=lambda msg, param, code: tgi_error(422, f"Input validation error: {msg}"),
    model_not_found=model_not_found,
    context_length=lambda limit, got: tgi_error(422, _length_message(limit, got)),
    stream_error=lambda msg: tgi_error_body(msg or GENERATION_ERROR, "generation"),
    sse_prefix=b"data:",
)


def tgi_chat_shape(obj: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion or chunk in the shape of TGI's messages API
    (tgi-openapi.json ChatCompletion / ChatCompletionChunk): no ``object``/``service_tier``,
    a message is text or tool calls, every delta carries ``role`` and ``content`` (or
    complete ``tool_calls`` entries), usage has the three counts only."""
    out = {k: v for k, v in obj.items() if k not in ("object", "service_tier")}
    choices = []
    for choice in obj.get("choices") or []:
        choice = dict(choice)
        if "message" in choice:
            choice["message"] = _tgi_message(choice["message"], delta=False)
        if "delta" in choice:
            choice["delta"] = _tgi_message(choice["delta"], delta=True)
        choices.append(choice)
    out["choices"] = choices
    usage = obj.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return out


def _tgi_message(message: dict[str, Any], delta: bool) -> dict[str, Any]:
    role = message.get("role") or "assistant"
    calls = message.get("tool_calls")
    if not calls:
        return {"role": role, "content": message.get("content") or ""}
    shaped = []
    for call in calls:
        fn = call.get("function") or {}
        entry: dict[str, Any] = {"id": call.get("id") or "", "type": "function"}
        if delta:
            entry["index"] = call.get("index", 0)
            entry["function"] = {"name": fn.get("name"), "arguments": fn.get("arguments") or ""}
        else:
            entry["function"] = {"name": fn.get("name") or "", "arguments": fn.get("arguments")}
        shaped.append(entry)
    return {"role": role, "tool_calls": shaped}


TGI_CHAT_ERRORS = dataclasses.replace(HF_CHAT_ERRORS, reshape=tgi_chat_shape)


def _hf_huge(path: str, body: JSON) -> tuple[bytes, bytes]:
    if path.startswith("/generate"):
        return b'{"generated_text":"', b'"}'
    if "feature-extraction" in path:
        return b'{"padding":"', b'"}'
    model = body.get("model", "tgi") if isinstance(body, dict) else "tgi"
    head = orjson.dumps(
        {"id": "chatcmpl-huge", "object": "chat.completion", "created": CREATED_TS, "model": model}
    )[:-1]
    return (
        head + b',"choices":[{"index":0,"message":{"role":"assistant","content":"',
        b'"},"logprobs":null,"finish_reason":"stop"}]}',
    )


def _is_stream(path: str, body: JSON) -> bool:
    if path == "/generate_stream":
        return True
    return isinstance(body, dict) and body.get("stream") is True


def _token(piece: str, index: int) -> dict[str, Any]:
    digest = hashlib.blake2b(piece.encode(), digest_size=4).digest()
    return {
        "id": 3 + int.from_bytes(digest, "little") % 32000,
        "text": piece,
        "logprob": round(-0.1 - 0.01 * index, 4),
        "special": False,
    }


def default_hub_models() -> list[dict[str, Any]]:
    """Hub model records (the same fields the Hub returns with ``full=true``)."""

    def record(
        repo_id: str,
        pipeline_tag: str,
        library: str,
        downloads: int,
        likes: int,
        tags: list[str],
        created: str,
        files: list[str],
        gated: bool | str = False,
    ) -> dict[str, Any]:
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        return {
            "_id": sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": created.replace("T00", "T12"),
            "createdAt": created,
            "private": False,
            "disabled": False,
            "gated": gated,
            "downloads": downloads,
            "likes": likes,
            "trendingScore": likes // 10,
            "tags": [*tags, library, pipeline_tag],
            "pipeline_tag": pipeline_tag,
            "library_name": library,
            "siblings": [{"rfilename": f} for f in files],
            "cardData": {"license": "apache-2.0", "language": ["en"], "tags": tags},
        }

    return [
        record(
            "meta-llama/Llama-3.1-8B-Instruct",
            "text-generation",
            "transformers",
            5_000_000,
            4000,
            ["safetensors", "llama", "conversational", "text-generation-inference"],
            "2024-07-18T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors", "tokenizer.json"],
            gated="manual",
        ),
        record(
            "sentence-transformers/all-MiniLM-L6-v2",
            "sentence-similarity",
            "sentence-transformers",
            90_000_000,
            3000,
            ["pytorch", "safetensors", "bert", "feature-extraction"],
            "2022-03-02T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors", "modules.json"],
        ),
        record(
            "BAAI/bge-small-en-v1.5",
            "feature-extraction",
            "sentence-transformers",
            3_000_000,
            300,
            ["pytorch", "onnx", "bert", "mteb"],
            "2023-09-12T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors"],
        ),
        record(
            "Qwen/Qwen2.5-0.5B-Instruct",
            "text-generation",
            "transformers",
            1_500_000,
            400,
            ["safetensors", "qwen2", "conversational", "text-generation-inference"],
            "2024-09-16T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors", "tokenizer.json"],
        ),
        record(
            "openai-community/gpt2",
            "text-generation",
            "transformers",
            10_000_000,
            2500,
            ["pytorch", "tf", "jax", "gpt2"],
            "2022-03-02T00:00:00.000Z",
            ["README.md", "config.json", "pytorch_model.bin"],
        ),
    ]


SUMMARY_FIELDS = (
    "_id",
    "id",
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
)


def _prepare_state(state: ServerState | None) -> ServerState:
    state = state if state is not None else ServerState()
    if state.models is None:
        state.models = list(DEFAULT_HF_MODELS)
    if state.hub_models is None:
        state.hub_models = default_hub_models()
    return state


def _new_app(state: ServerState) -> web.Application:
    app = new_application()
    install_middleware(
        app,
        state,
        ProviderSpec(
            name="huggingface",
            error_body=hf_status_body,
            auth_error=hf_auth_error,
            is_stream=_is_stream,
            huge_template=_hf_huge,
            response_headers=lambda st: {"x-request-id": f"hf-{st.total_requests:016x}"},
        ),
    )
    return app


def _add_tgi_routes(
    app: web.Application, state: ServerState, chat_errors: ChatErrors = HF_CHAT_ERRORS
) -> None:
    chat_handler = make_chat_handler(state, chat_errors)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        if state.loading and isinstance(body, dict):
            return loading_response(state, str(body.get("model", "tgi")))
        response: web.StreamResponse = await chat_handler(request)
        return response

    async def list_models(request: web.Request) -> web.Response:
        return json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": CREATED_TS, "owned_by": m.split("/")[0]}
                    for m in state.models or []
                ],
            }
        )

    async def info(request: web.Request) -> web.Response:
        model_id = (state.models or ["tgi"])[0]
        return json_response(
            {
                "model_id": model_id,
                "model_sha": hashlib.sha1(model_id.encode()).hexdigest(),
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": state.context_length,
                "max_total_tokens": state.context_length + 1024,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": TGI_VERSION,
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(request: web.Request) -> web.Response:
        if not state.healthy:
            return tgi_error(503, "unhealthy", "healthcheck")
        return web.Response(status=200)

    def plan_generate(body: JSON) -> dict[str, Any] | web.Response:
        if not json_ok(body) or not isinstance(body, dict):
            return tgi_error(422, "Failed to deserialize the JSON body into the target type")
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            return tgi_error(
                422,
                "Failed to deserialize the JSON body into the target type: missing field `inputs`",
            )
        if not inputs:
            return tgi_error(422, "Input validation error: `inputs` cannot be empty")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return tgi_error(
                422, "Failed to deserialize the JSON body into the target type: parameters"
            )
        max_new = params.get("max_new_tokens")
        if max_new is not None and (not isinstance(max_new, int) or max_new < 1):
            return tgi_error(
                422, "Input validation error: `max_new_tokens` must be strictly positive"
            )
        temperature = params.get("temperature")
        if isinstance(temperature, int | float) and temperature <= 0:
            return tgi_error(422, "Input validation error: `temperature` must be strictly positive")
        top_p = params.get("top_p")
        if isinstance(top_p, int | float) and not 0 < top_p < 1:
            return tgi_error(422, "Input validation error: `top_p` must be > 0.0 and < 1.0")
        stop = params.get("stop") or []
        if not isinstance(stop, list) or len(stop) > 4:
            return tgi_error(
                422,
                "Input validation error: `stop` supports up to 4 stop sequences. Given: "
                + str(len(stop) if isinstance(stop, list) else 1),
            )
        input_len = count_words(inputs)
        if input_len > state.context_length:
            return tgi_error(422, _length_message(state.context_length, input_len, max_new or 0))
        if state.loading:
            return loading_response(state, (state.models or ["tgi"])[0])
        text = state.reply if state.reply is not None else "Echo: " + inputs
        grammar = params.get("grammar")
        if isinstance(grammar, dict) and grammar.get("type") == "json":
            text = structured_reply(grammar) or text  # same {"type": "json", "value"} shape
        pieces = split_pieces(text)
        finish = "eos_token"
        if isinstance(max_new, int) and len(pieces) > max_new:
            pieces = pieces[:max_new]
            finish = "length"
        joined = ""
        for i, piece in enumerate(pieces):
            joined += piece
            hit = next((s for s in stop if isinstance(s, str) and s and s in joined), None)
            if hit is not None:
                cut = joined.index(hit) + len(hit)
                pieces = pieces[: i + 1]
                extra = len(joined) - cut
                if extra:
                    pieces[-1] = pieces[-1][: len(pieces[-1]) - extra]
                finish = "stop_sequence"
                break
        generated = "".join(pieces)
        if params.get("return_full_text"):
            generated = inputs + generated
        return {
            "inputs": inputs,
            "params": params,
            "pieces": pieces,
            "generated": generated,
            "finish": finish,
            "input_len": input_len,
            "seed": params.get("seed"),
        }

    async def generate(request: web.Request) -> web.Response:
        plan = plan_generate(get_json(request))
        if isinstance(plan, web.Response):
            return plan
        out: dict[str, Any] = {"generated_text": plan["generated"]}
        params = plan["params"]
        if params.get("details"):
            tokens = [_token(p, i) for i, p in enumerate(plan["pieces"])]
            if plan["finish"] == "eos_token":
                tokens.append(dict(EOS_TOKEN))
            out["details"] = {
                "finish_reason": plan["finish"],
                "generated_tokens": len(tokens),
                "seed": plan["seed"],
                "prefill": [
                    {"id": _token(p, 0)["id"], "text": p, "logprob": None}
                    for p in split_pieces(plan["inputs"])
                ]
                if params.get("decoder_input_details")
                else [],
                "tokens": tokens,
                "top_tokens": [],
                "best_of_sequences": None,
            }
        return json_response(out)

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        plan = plan_generate(get_json(request))
        if isinstance(plan, web.Response):
            return plan
        pieces: list[str] = plan["pieces"]
        tokens = [_token(p, i) for i, p in enumerate(pieces)]
        if plan["finish"] == "eos_token" or not tokens:
            tokens.append(dict(EOS_TOKEN))

        def event(i: int, token: dict[str, Any], final: bool) -> dict[str, Any]:
            return {
                "index": i + 1,
                "token": token,
                "generated_text": plan["generated"] if final else None,
                "details": {
                    "finish_reason": plan["finish"],
                    "generated_tokens": len(tokens),
                    "input_length": plan["input_len"],
                    "seed": plan["seed"],
                }
                if final
                else None,
            }

        writer = EventWriter(
            request,
            framing="sse",
            make_error=HF_CHAT_ERRORS.stream_error,
            make_content=lambda t: event(0, _token(t, 0), False),
            sse_prefix=b"data:",
        )
        await writer.start()
        for i, token in enumerate(tokens[:-1]):
            if not await writer.send(event(i, token, False)):
                return await writer.finish()
        return await writer.finish(event(len(tokens) - 1, tokens[-1], True))

    async def compat(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        if isinstance(body, dict) and body.get("stream") is True:
            return await generate_stream(request)
        return await generate(request)

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/info", info)
    app.router.add_get("/health", health)
    app.router.add_post("/generate", generate)
    app.router.add_post("/generate_stream", generate_stream)
    app.router.add_post("/", compat)


def _add_router_routes(app: web.Application, state: ServerState) -> None:
    async def feature_extraction(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        body = get_json(request)
        if not json_ok(body) or not isinstance(body, dict):
            return json_response({"error": "Malformed JSON body"}, 400)
        if model == MISSING_MODEL:
            return json_response({"error": f"Model {model} does not exist"}, 404)
        if state.loading:
            return loading_response(state, model)
        inputs = body.get("inputs")
        if isinstance(inputs, str):
            texts = [inputs]
        elif isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
            texts = list(inputs)
        else:
            return tgi_error(
                422,
                "Input validation error: `inputs` must be a string or a non-empty list of strings",
            )
        if body.get("truncate") is False:
            for t in texts:
                n = count_words(t)
                if n > state.context_length:
                    return tgi_error(
                        413,
                        f"Input validation error: `inputs` must have less than {state.context_length} tokens. Given: {n}",
                    )
        # An array of arrays for a string too (inference-providers-tasks-feature-extraction.md)
        return json_response([embed_text(t, state.embedding_dim) for t in texts])

    app.router.add_post(
        "/hf-inference/models/{model:.+}/pipeline/feature-extraction", feature_extraction
    )


def _add_hub_routes(app: web.Application, state: ServerState) -> None:
    def hub_error(status: int, message: str, code: str) -> web.Response:
        return json_response(
            {"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message}
        )

    async def list_models(request: web.Request) -> web.Response:
        q = request.query
        items = list(state.hub_models or [])
        search = q.get("search")
        if search:
            items = [m for m in items if search.lower() in str(m.get("id", "")).lower()]
        author = q.get("author")
        if author:
            items = [m for m in items if str(m.get("id", "")).split("/")[0] == author]
        filters: list[str] = []
        for value in q.getall("filter", []):
            filters.extend(f for f in value.split(",") if f)
        for f in filters:
            items = [
                m
                for m in items
                if f in (m.get("tags") or []) or f in (m.get("pipeline_tag"), m.get("library_name"))
            ]
        pipeline_tag = q.get("pipeline_tag")
        if pipeline_tag:
            items = [m for m in items if m.get("pipeline_tag") == pipeline_tag]
        library = q.get("library")
        if library:
            items = [m for m in items if m.get("library_name") == library]
        sort = q.get("sort")
        if sort:
            key = "trendingScore" if sort == "trending_score" else sort
            descending = q.get("direction", "-1") == "-1"
            present = [m for m in items if m.get(key) is not None]
            missing = [m for m in items if m.get(key) is None]
            present.sort(key=lambda m: m[key], reverse=descending)
            items = present + missing
        try:
            offset = max(0, int(q.get("cursor", "0")))
        except ValueError:
            return hub_error(400, "Invalid cursor", "InvalidCursor")
        limit_raw = q.get("limit")
        try:
            limit = int(limit_raw) if limit_raw is not None else 1000
        except ValueError:
            return hub_error(400, '"limit" must be a number', "BadRequest")
        page = items[offset : offset + limit] if limit > 0 else items[offset:]
        full = q.get("full", "").lower() in ("1", "true")
        out = [dict(m) if full else {k: m[k] for k in SUMMARY_FIELDS if k in m} for m in page]
        headers: dict[str, str] = {}
        if limit > 0 and offset + limit < len(items):
            params = [(k, v) for k, v in q.items() if k != "cursor"]
            params.append(("cursor", str(offset + limit)))
            url = request.url.with_query(None)
            headers["Link"] = f'<{url}?{urlencode(params)}>; rel="next"'
        return json_response(out, headers=headers)

    async def model_info(request: web.Request) -> web.Response:
        repo_id = request.match_info["repo_id"]
        if "/revision/" in repo_id:
            repo_id = repo_id.split("/revision/", 1)[0]
        for m in state.hub_models or []:
            if m.get("id") == repo_id:
                return json_response(m)
        return hub_error(404, "Repository not found", "RepoNotFound")

    app.router.add_get("/api/models", list_models)
    app.router.add_get("/api/models/{repo_id:.+}", model_info)


def make_hf_app(state: ServerState | None = None) -> web.Application:
    """Router + TGI + Hub on one app."""
    state = _prepare_state(state)
    app = _new_app(state)
    _add_tgi_routes(app, state)
    _add_router_routes(app, state)
    _add_hub_routes(app, state)
    return app


def make_tgi_app(state: ServerState | None = None) -> web.Application:
    """TGI-only variant (no router feature-extraction, no Hub)."""
    state = _prepare_state(state)
    app = _new_app(state)
    app[SPEC_FLAVOUR_KEY] = "tgi"  # its /v1/chat/completions is TGI's, not the router's
    _add_tgi_routes(app, state, TGI_CHAT_ERRORS)
    return app
