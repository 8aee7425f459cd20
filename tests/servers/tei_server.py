"""A Text Embeddings Inference test server (``make_tei_app``): the ``embedding_base_url``
that a TGI-backed ``HuggingFaceLLM`` sends embeddings to."""

from __future__ import annotations

from aiohttp import web

from .base import (
    SPEC_FLAVOUR_KEY,
    ServerState,
    count_words,
    embed_text,
    get_json,
    json_ok,
    json_response,
)
from .hf_server import _new_app, _prepare_state

TEI_MAX_CLIENT_BATCH_SIZE = 32


def make_tei_app(state: ServerState | None = None) -> web.Application:
    """A Text Embeddings Inference server: ``GET /info``, ``GET /health``, ``POST /embed``
    (``{"inputs": str | list[str], "normalize", "truncate", "truncation_direction",
    "prompt_name"}`` -> one vector per input, always a list of lists); more than
    ``max_client_batch_size`` inputs -> 413, an input over ``state.context_length`` words with
    ``truncate: false`` -> 413, as TEI answers."""
    state = _prepare_state(state)
    app = _new_app(state)
    # No TEI specification in the specs folder: its bodies are not schema-checked (the
    # "tei" flavour has no endpoints in spec_validation), only by the handlers below.
    app[SPEC_FLAVOUR_KEY] = "tei"
    model_id = "sentence-transformers/all-MiniLM-L6-v2"

    def tei_error(status: int, message: str, kind: str = "Validation") -> web.Response:
        return json_response({"error": message, "error_type": kind}, status)

    async def info(request: web.Request) -> web.Response:
        return json_response(
            {
                "model_id": model_id,
                "model_sha": None,
                "model_dtype": "float32",
                "model_type": {"embedding": {"pooling": "mean"}},
                "max_concurrent_requests": 512,
                "max_input_length": state.context_length,
                "max_batch_tokens": 16384,
                "max_batch_requests": None,
                "max_client_batch_size": TEI_MAX_CLIENT_BATCH_SIZE,
                "tokenization_workers": 2,
                "version": "1.8.0",
            }
        )

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def embed(request: web.Request) -> web.Response:
        body = get_json(request)
        if not json_ok(body) or not isinstance(body, dict):
            return tei_error(422, "Failed to deserialize the JSON body into the target type")
        raw = body.get("inputs")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return tei_error(422, "Failed to deserialize the JSON body into the target type: inputs")
        if body.get("truncation_direction") not in (None, "Left", "Right", "left", "right"):
            return tei_error(422, "Failed to deserialize the JSON body into the target type: truncation_direction")
        if len(texts) > TEI_MAX_CLIENT_BATCH_SIZE:
            return tei_error(
                413, f"batch size {len(texts)} > maximum allowed batch size {TEI_MAX_CLIENT_BATCH_SIZE}"
            )
        if body.get("truncate") is False:
            for t in texts:
                if count_words(t) > state.context_length:
                    return tei_error(
                        413,
                        f"Input validation error: `inputs` must have less than "
                        f"{state.context_length} tokens. Given: {count_words(t)}",
                    )
        return json_response([embed_text(t, state.embedding_dim) for t in texts])

    app.router.add_get("/info", info)
    app.router.add_get("/health", health)
    app.router.add_post("/embed", embed)
    return app
