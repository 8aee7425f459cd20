"""The Hugging Face Inference Providers router: which inference provider serves a call,
and the feature-extraction (embeddings) routes of each provider.

Chat goes to the router's OpenAI-compatible ``/v1/chat/completions`` with the provider or
selection policy as the model id's suffix (``model:together``, ``model:cheapest``); the
router picks the provider itself. Embeddings have no router-side selection: the provider
is named (``extra["inference_provider"]`` or the suffix), or picked from the model's
provider mapping on the Hub, and each provider has its own route and body:

============  =====================================================  ===================
provider      route (under the router)                               body
============  =====================================================  ===================
hf-inference  ``/hf-inference/models/{model}/pipeline/feature-extraction``  ``{"inputs": [...]}``
together      ``/together/v1/embeddings``                            OpenAI embeddings
scaleway      ``/scaleway/v1/embeddings``                            OpenAI embeddings
deepinfra     ``/deepinfra/v1/openai/embeddings``                    OpenAI embeddings
============  =====================================================  ===================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from llmkit.core.errors import ConfigError, ModelNotFoundError, NotSupportedError, StreamError

__all__ = [
    "EMBEDDING_PROVIDERS",
    "POLICIES",
    "chat_model",
    "check_choice",
    "embedding_request",
    "embedding_vectors",
    "needs_mapping",
    "pick_embedding_provider",
    "split_model",
]

POLICIES = ("auto", "fastest", "cheapest", "preferred")
"""Selection policies: ``auto`` is the router's default (the fastest provider), ``fastest``
the highest throughput, ``cheapest`` the lowest price per output token, ``preferred`` the
order of the account's Inference Provider settings."""

HF_INFERENCE = "hf-inference"
_OPENAI_ROUTES = {
    "together": "together/v1/embeddings",
    "scaleway": "scaleway/v1/embeddings",
    "deepinfra": "deepinfra/v1/openai/embeddings",
}
EMBEDDING_PROVIDERS = (HF_INFERENCE, *_OPENAI_ROUTES)


def split_model(model: str) -> tuple[str, str | None]:
    """``"org/model:provider"`` -> ``("org/model", "provider")``; no suffix -> ``None``."""
    repo, sep, suffix = model.rpartition(":")
    if sep and "/" not in suffix and suffix:
        return repo, suffix
    return model, None


def _checked_choice(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or ":" in value or "/" in value:
        raise ConfigError(
            f"extra['inference_provider'] must be a provider name (e.g. 'together', "
            f"'hf-inference') or one of {', '.join(POLICIES)}, not {value!r:.60}",
            provider="huggingface",
        )
    return value.strip().lower()


def chat_model(model: str, inference_provider: Any) -> str:
    """The router's model id for chat: ``model`` with the provider or policy suffix.
    ``"auto"`` sends the bare id (the router's default selection)."""
    choice = _checked_choice(inference_provider)
    repo, suffix = split_model(model)
    if choice is None:
        return model
    if suffix is not None and suffix.lower() != choice:
        raise ConfigError(
            f"model {model!r} names provider {suffix!r} but extra['inference_provider'] is "
            f"{choice!r}; give one of them",
            provider="huggingface",
        )
    return repo if choice == "auto" else f"{repo}:{choice}"


def pick_embedding_provider(
    model: str, inference_provider: Any, mapping: Mapping[str, Any] | None
) -> tuple[str, str]:
    """``(provider, the provider's model id)`` for a feature-extraction call.

    A named provider is used as given (its model id from the Hub ``mapping`` when it is
    there, else the Hub id). No choice means hf-inference. A policy picks from ``mapping``
    (the Hub's ``inferenceProviderMapping``, in the account's preference order): the first
    live feature-extraction provider this client can call; the router has no server-side
    selection for embeddings, so ``fastest`` and ``cheapest`` choose like ``auto``."""
    choice = _checked_choice(inference_provider)
    repo, suffix = split_model(model)
    if suffix is not None:
        if choice is not None and choice != suffix.lower():
            raise ConfigError(
                f"model {model!r} names provider {suffix!r} but extra['inference_provider'] "
                f"is {choice!r}; give one of them",
                provider="huggingface",
            )
        choice = suffix.lower()
    if choice is None:
        return HF_INFERENCE, repo
    if choice not in POLICIES:
        if choice not in EMBEDDING_PROVIDERS:
            raise NotSupportedError(
                f"embeddings through inference provider {choice!r} are not supported; "
                f"use one of {', '.join(EMBEDDING_PROVIDERS)}",
                provider="huggingface",
            )
        entry = (mapping or {}).get(choice)
        provider_id = entry.get("providerId") if isinstance(entry, Mapping) else None
        return choice, str(provider_id or repo)
    for name, entry in (mapping or {}).items():
        if (
            name in EMBEDDING_PROVIDERS
            and isinstance(entry, Mapping)
            and entry.get("task") == "feature-extraction"
            and entry.get("status", "live") == "live"
        ):
            return name, str(entry.get("providerId") or repo)
    raise ModelNotFoundError(
        f"no inference provider serves {repo!r} for feature-extraction "
        f"(among {', '.join(EMBEDDING_PROVIDERS)})",
        provider="huggingface",
    )


def needs_mapping(model: str, inference_provider: Any) -> bool:
    """Whether :func:`pick_embedding_provider` needs the Hub's provider mapping."""
    choice = _checked_choice(inference_provider) or split_model(model)[1]
    return choice is not None and choice.lower() != HF_INFERENCE


def embedding_request(
    provider: str, provider_model: str, texts: list[str], extra: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The route (relative to the router) and body of one feature-extraction call."""
    if provider == HF_INFERENCE:
        body: dict[str, Any] = {"inputs": texts}
        for key in ("normalize", "truncate", "truncation_direction", "prompt_name"):
            if extra.get(key) is not None:
                body[key] = extra[key]
        if extra.get("normalize_embeddings") is not None and "normalize" not in body:
            body["normalize"] = bool(extra["normalize_embeddings"])
        route = f"hf-inference/models/{quote(provider_model, safe='/:@')}/pipeline/feature-extraction"
        return route, body
    body = {"input": texts, "model": provider_model}
    if extra.get("dimensions"):
        body["dimensions"] = extra["dimensions"]
    return _OPENAI_ROUTES[provider], body


def _pool(value: Any) -> list[float]:
    """One embedding from a feature-extraction item: a vector, or token vectors (mean)."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        if value[0] and isinstance(value[0][0], list):  # [1, tokens, dim]
            if len(value) != 1:
                raise StreamError(f"unexpected embedding shape: {len(value)} sequences for one input")
            value = value[0]
        rows = [[float(x) for x in row] for row in value]
        if not rows:
            raise StreamError("empty token embeddings")
        n = len(rows)
        return [sum(col) / n for col in zip(*rows, strict=True)]
    if isinstance(value, list):
        return [float(x) for x in value]
    raise StreamError(f"unexpected embedding item: {type(value).__name__}")


def _depth(value: Any) -> int:
    d = 0
    while isinstance(value, list) and value:
        d += 1
        value = value[0]
    return d


def embedding_vectors(provider: str, data: Any, texts: list[str]) -> list[list[float]]:
    """One vector per input from a feature-extraction reply."""
    if provider != HF_INFERENCE:
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            got = len(items) if isinstance(items, list) else "no"
            raise StreamError(f"{provider} embeddings: {got} vectors for {len(texts)} inputs")
        items = sorted(items, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
        return [_pool(d.get("embedding") if isinstance(d, dict) else None) for d in items]
    depth = _depth(data)
    if len(texts) == 1 and (depth == 1 or (depth == 2 and len(data) != 1)):
        return [_pool(data)]  # one vector, or one text's token vectors
    if not isinstance(data, list) or depth < 2 or len(data) != len(texts):
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise StreamError(f"feature-extraction returned {got} embeddings for {len(texts)} inputs")
    return [_pool(item) for item in data]


def check_choice(inference_provider: Any) -> None:
    """Validate ``extra["inference_provider"]`` (a clear ConfigError at construction)."""
    _checked_choice(inference_provider)
