"""Pieces shared by the Ollama test server's modules: model names, error bodies, the
registry of models the server knows, request parsing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .base import JSON, get_json, json_ok, json_response, ollama_error_body

DEFAULT_OLLAMA_MODELS = ["llama3.2:latest", "nomic-embed-text:latest"]
STREAM_ERROR_MESSAGE = "an error was encountered while running the model"


def normalize_model(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest`` (tags default to ``latest``)."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def ollama_error(status: int, message: str) -> web.Response:
    return json_response(ollama_error_body(message), status)


def not_found_pull(model: str) -> web.Response:
    return ollama_error(404, f'model "{model}" not found, try pulling it first')


def not_found_plain(model: str) -> web.Response:
    return ollama_error(404, f"model '{model}' not found")


def ollama_status_body(status: int, message: str | None) -> JSON:
    defaults = {
        400: "invalid request",
        401: "unauthorized",
        404: "not found",
        429: "too many requests",
        500: STREAM_ERROR_MESSAGE,
        502: "bad gateway",
        503: "server busy, please try again.  maximum pending requests exceeded",
    }
    return ollama_error_body(message or defaults.get(status, f"error {status}"))


def name_digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def model_details(name: str) -> dict[str, Any]:
    embed = "embed" in name
    family = "nomic-bert" if embed else "llama"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "137M" if embed else "3.2B",
        "quantization_level": "F16" if embed else "Q4_K_M",
    }




@dataclass
class ModelRegistry:
    """What the server holds: its models (``state.models``), the ones loaded in memory and
    the uploaded blobs (digest -> size)."""

    models: list[str]
    loaded: dict[str, None] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)

    def known(self, name: str) -> bool:
        norm = normalize_model(name)
        return any(normalize_model(m) == norm for m in self.models)

    def track(self, model: str, keep_alive: JSON) -> None:
        norm = normalize_model(model)
        if keep_alive in (0, "0", "0s", "0m"):
            self.loaded.pop(norm, None)
        else:
            self.loaded[norm] = None


def parse_body(request: web.Request) -> dict[str, Any] | web.Response:
    body = get_json(request)
    if body is None:
        return ollama_error(400, "missing request body")
    if not json_ok(body):
        return ollama_error(400, "invalid character looking for beginning of value")
    if not isinstance(body, dict):
        return ollama_error(400, "json: cannot unmarshal array into Go value of type api.Request")
    return body


def model_of(body: dict[str, Any], allow_name: bool = False) -> str | web.Response:
    model = body.get("model")
    if allow_name and not model:
        model = body.get("name")
    if not isinstance(model, str) or not model:
        return ollama_error(400, "model is required")
    return model
