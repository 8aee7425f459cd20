"""What requests and responses say about rate limits: OpenAI's ``x-ratelimit-*`` and
Retry-After headers (:class:`Feedback`), a request's token estimate before it is sent and
the usage its reply reports. Used by :mod:`llmkit.http.ratelimit`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmkit.http.retry import parse_retry_after

__all__ = ["Feedback", "Limits", "estimate_tokens", "parse_reset", "usage_tokens"]

_RESET = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DIMENSIONS = ("requests", "tokens")


def parse_reset(value: str | None) -> float | None:
    """Seconds from OpenAI's reset format (``"6m0s"``, ``"1s"``, ``"20ms"``) or a number."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _RESET.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Limits:
    """One dimension of a server's rate-limit headers."""

    limit: float | None
    remaining: float | None
    reset: float | None


@dataclass(frozen=True)
class Feedback:
    """What a response says about the server's limits (plain data: it may cross processes)."""

    status: int | None
    retry_after: float | None
    requests: Limits | None
    tokens: Limits | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None, status: int | None) -> Feedback:
        dims: dict[str, Limits | None] = {}
        for dim in _DIMENSIONS:
            limits = None
            if headers is not None:
                remaining = _number(headers.get(f"x-ratelimit-remaining-{dim}"))
                if remaining is not None:
                    limits = Limits(
                        _number(headers.get(f"x-ratelimit-limit-{dim}")),
                        remaining,
                        parse_reset(headers.get(f"x-ratelimit-reset-{dim}")),
                    )
            dims[dim] = limits
        retry_after = parse_retry_after(headers) if status == 429 else None
        return cls(status, retry_after, dims["requests"], dims["tokens"])


# --------------------------------------------------------------------------- token costs


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image", "image"):
            return 0
        return sum(_text_chars(v) for k, v in value.items() if k in ("content", "text", "role", "name"))
    return 0


def estimate_tokens(body: Any) -> float:
    """A request's token cost before it is sent: about four characters of prompt text per
    token, plus the most it may generate (``max_tokens`` in any of its wire names)."""
    if not isinstance(body, dict):
        return 0.0
    chars = 0
    for key in ("messages", "prompt", "input", "inputs"):
        if key in body:
            chars += _text_chars(body[key])
    completion = 0
    options = body.get("options")
    parameters = body.get("parameters")
    for source, key in (
        (body, "max_completion_tokens"),
        (body, "max_tokens"),
        (options, "num_predict"),
        (parameters, "max_new_tokens"),
    ):
        value = source.get(key) if isinstance(source, dict) else None
        if isinstance(value, int) and value > 0:
            completion = value
            break
    return float(chars // 4 + completion)


def usage_tokens(usage: Any) -> float | None:
    """Total tokens from a :class:`~llmkit.core.types.Usage`, an OpenAI ``usage`` dict, an
    Ollama reply (``prompt_eval_count`` + ``eval_count``) or a body holding ``usage``."""
    if usage is None:
        return None
    if isinstance(usage, dict):
        if isinstance(usage.get("usage"), dict):
            return usage_tokens(usage["usage"])
        total = usage.get("total_tokens")
        if isinstance(total, int | float) and total > 0:
            return float(total)
        parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "prompt_eval_count", "eval_count")]
        numbers = [p for p in parts if isinstance(p, int | float)]
        return float(sum(numbers)) if numbers else None
    total = getattr(usage, "total_tokens", None)
    if isinstance(total, int) and total > 0:
        return float(total)
    nested = getattr(usage, "usage", None)
    return usage_tokens(nested) if nested is not None and nested is not usage else None
