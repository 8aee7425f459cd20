"""Pieces shared by the Hugging Face test servers' modules: models, limits, TGI-shaped
error bodies and responses."""

from __future__ import annotations

from aiohttp import web

from .base import JSON, ServerState, json_response, tgi_error_body
from .openai_server import ChatErrors

DEFAULT_HF_MODELS = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "sentence-transformers/all-MiniLM-L6-v2",
]
MISSING_MODEL = "missing-model"
TGI_VERSION = "3.3.4"
AUTH_MESSAGE = "Invalid credentials in Authorization header"
GENERATION_ERROR = "Request failed during generation"
MAX_BEST_OF = 2
ROUTER_PROVIDERS = (
    "cerebras", "cohere", "deepinfra", "fal-ai", "featherless-ai", "fireworks-ai", "groq",
    "hf-inference", "hyperbolic", "nebius", "novita", "nscale", "sambanova", "scaleway",
    "together",
)
ROUTER_POLICIES = ("fastest", "cheapest", "preferred")


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
