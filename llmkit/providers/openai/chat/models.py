"""What OpenAI-compatible servers say about a model: the context length in ``/v1/models``
(vLLM's ``max_model_len``, llama.cpp's ``meta.n_ctx_train``) and llama.cpp's ``/props``
(``n_ctx`` of the running server), and the known windows of OpenAI's own models."""

from __future__ import annotations

from typing import Any

__all__ = ["context_from_models", "context_from_props", "known_context_length", "looks_like_llama_cpp"]

# Known context windows (prefix match on the model id).
_CONTEXT = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo", 16_385),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gpt-5", 400_000),
    ("text-embedding-3", 8_191),
)


def known_context_length(model: str) -> int | None:
    return next((n for prefix, n in _CONTEXT if model.startswith(prefix)), None)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _entry(models: Any, model: str) -> dict[str, Any] | None:
    items = models.get("data") if isinstance(models, dict) else models
    if not isinstance(items, list):
        return None
    entries = [m for m in items if isinstance(m, dict)]
    for m in entries:
        if m.get("id") == model:
            return m
    # llama.cpp serves its one model under any name: its single entry is the one.
    if len(entries) == 1 and _is_llama_cpp(entries[0]):
        return entries[0]
    return None


def _is_llama_cpp(entry: dict[str, Any]) -> bool:
    return entry.get("owned_by") == "llamacpp" or isinstance(entry.get("meta"), dict)


def context_from_models(models: Any, model: str) -> int | None:
    """The context length a ``GET /v1/models`` answer states for ``model``: vLLM's
    ``max_model_len``, or llama.cpp's ``meta.n_ctx`` (the running context of one slot,
    newer servers) or ``meta.n_ctx_train``."""
    entry = _entry(models, model)
    if entry is None:
        return None
    found = _positive_int(entry.get("max_model_len"))
    meta = entry.get("meta")
    if found is None and isinstance(meta, dict):
        found = _positive_int(meta.get("n_ctx")) or _positive_int(meta.get("n_ctx_train"))
    return found


def looks_like_llama_cpp(models: Any, model: str) -> bool:
    entry = _entry(models, model)
    return entry is not None and _is_llama_cpp(entry)


def context_from_props(props: Any) -> int | None:
    """The context of one request on a llama.cpp server, from ``GET /props``: the slot's
    ``n_ctx`` (``default_generation_settings.n_ctx``), else the top-level ``n_ctx``."""
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    if isinstance(settings, dict):
        found = _positive_int(settings.get("n_ctx"))
        if found is not None:
            return found
    return _positive_int(props.get("n_ctx"))
