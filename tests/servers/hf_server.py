"""Hugging Face test server: Inference Providers router, TGI and the Hub API.

``make_hf_app(state)`` serves everything on one port:

* router: ``POST /v1/chat/completions`` (same logic as the OpenAI server, HF/TGI error
  bodies, SSE framed as ``data:{...}`` without a space and ended by ``data:[DONE]``, as
  TGI's axum server does; a ``model:<suffix>`` must name a known provider or a policy,
  ``fastest`` / ``cheapest`` / ``preferred``, else 400), ``GET /v1/models``,
  ``POST /hf-inference/models/{model}/pipeline/feature-extraction``
  (``{"inputs": str | list[str], "normalize", "truncate", ...}`` -> ``list[float]`` for a
  str, ``list[list[float]]`` for a list), and the OpenAI-shaped embeddings of other
  providers: ``POST /together/v1/embeddings``, ``/scaleway/v1/embeddings``,
  ``/deepinfra/v1/openai/embeddings``;
* TGI: ``GET /info``, ``GET /health``, ``POST /generate``, ``POST /generate_stream``;
* Hub: ``GET /api/models`` (``search``, ``author``, ``filter``, ``pipeline_tag``,
  ``library``, ``sort``, ``direction``, ``limit``, ``full``, ``cursor``; a ``Link: <...>;
  rel="next"`` header when more results remain), ``GET /api/models/{repo_id}`` (and
  ``.../revision/{rev}``; with ``expand[]=inferenceProviderMapping`` only that attribute,
  from ``hub_server.PROVIDER_MAPPINGS``), 404 ``{"error": "Repository not found"}``.

``make_tgi_app(state)`` is a TGI-only variant (``/info``, ``/health``, ``/generate``,
``/generate_stream``, ``/v1/chat/completions``, ``/v1/models``) whose messages API takes
``response_format`` in TGI's GrammarType shape (``{"type": "json", "value": schema}``; the
OpenAI shape is a 422 "missing field `value`", as TGI answers), like ``parameters.grammar``
of ``/generate``. ``best_of`` above ``max_best_of`` is a 422.

TGI's routes are in ``tgi_routes``, shared errors and limits in ``hf_common``, the Hub
routes in ``hub_server``; ``tei_server.make_tei_app(state)`` is a Text
Embeddings Inference server (``/info``, ``/health``, ``/embed``).

Errors: TGI shape ``{"error": "...", "error_type": "..."}`` (422 validation, 424
generation, 429 overloaded, 500 incomplete_generation, 503 unhealthy); 401 is
``{"error": "Invalid credentials in Authorization header"}``; model ``missing-model`` ->
404 ``{"error": "Model missing-model does not exist", "error_type": "not_found"}``;
``state.loading`` (or a ``loading`` fault) -> 503 ``{"error": "Model <m> is currently
loading", "estimated_time": state.loading_estimated_time}``. The mid-stream error event is
``data:{"error": "...", "error_type": "generation"}``.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    SPEC_FLAVOUR_KEY,
    ProviderSpec,
    ServerState,
    count_words,
    embed_text,
    get_json,
    install_middleware,
    json_ok,
    json_response,
    new_application,
)
from .hf_common import (
    DEFAULT_HF_MODELS,
    MISSING_MODEL,
    hf_auth_error,
    hf_status_body,
    loading_response,
    tgi_error,
)
from .hub_server import add_hub_routes, default_hub_models
from .tgi_routes import TGI_CHAT_ERRORS, add_tgi_routes

EMBEDDING_ROUTES = {
    "together": "/together/v1/embeddings",
    "scaleway": "/scaleway/v1/embeddings",
    "deepinfra": "/deepinfra/v1/openai/embeddings",
}

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

    async def provider_embeddings(request: web.Request) -> web.Response:
        """OpenAI-shaped embeddings of the other providers behind the router."""
        body = get_json(request)
        if not json_ok(body) or not isinstance(body, dict):
            return json_response({"error": "Malformed JSON body"}, 400)
        model, raw = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            return json_response({"error": "model is required"}, 400)
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return json_response({"error": "input must be a string or a list of strings"}, 400)
        dim = body.get("dimensions") if isinstance(body.get("dimensions"), int) else state.embedding_dim
        tokens = sum(count_words(t) for t in texts)
        return json_response(
            {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": embed_text(t, dim)}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    app.router.add_post(
        "/hf-inference/models/{model:.+}/pipeline/feature-extraction", feature_extraction
    )
    for route in EMBEDDING_ROUTES.values():
        app.router.add_post(route, provider_embeddings)


def make_hf_app(state: ServerState | None = None) -> web.Application:
    """Router + TGI + Hub on one app."""
    state = _prepare_state(state)
    app = _new_app(state)
    add_tgi_routes(app, state, tgi_grammar=False)
    _add_router_routes(app, state)
    add_hub_routes(app, state)
    return app


def make_tgi_app(state: ServerState | None = None) -> web.Application:
    """TGI-only variant (no router feature-extraction, no Hub)."""
    state = _prepare_state(state)
    app = _new_app(state)
    app[SPEC_FLAVOUR_KEY] = "tgi"  # its /v1/chat/completions is TGI's, not the router's
    add_tgi_routes(app, state, TGI_CHAT_ERRORS, tgi_grammar=True)
    return app
