"""What requests and responses say about rate limits: OpenAI's ``x-ratelimit-*`` and
Retry-After headers and what an answer means for pacing (:class:`Feedback`), a request's
token estimate before it is sent and the usage its reply reports. Used by
:mod:`llmkit.http.ratelimit_state`.

Header values that are not finite, negative or absurd (beyond :data:`MAX_WAIT`) are
ignored, as if absent: nothing divides by them and nothing sleeps on them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llmkit.http.retry import MAX_WAIT, retry_after_detail

__all__ = [
    "MAX_WAIT",
    "Feedback",
    "Limits",
    "classify",
    "estimate_tokens",
    "parse_reset",
    "reset_detail",
    "usage_tokens",
]

_RESET = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DIMENSIONS = ("requests", "tokens")
# a reset given as a moment: a unix timestamp in milliseconds or in seconds
_UNIX_MS = 1e11
_UNIX_S = 1e9

Kind = Literal["ok", "rate", "overload", "other"]

# what servers answer when they are full (TGI, Ollama, vLLM / OpenAI 503s, Anthropic 529)
_OVERLOAD_WORDS = ("overloaded", "maximum pending requests", "server busy")
_QUOTA_WORDS = ("insufficient_quota", "exceeded your current quota")


def parse_reset(value: str | None, *, wall: float | None = None) -> float | None:
    """Seconds until a reset: OpenAI's durations (``"6m0s"``, ``"1s"``, ``"20ms"``), a
    number of seconds, or a unix timestamp (in milliseconds or seconds) of the moment;
    ``None`` for what is none of these, not finite, negative or absurd."""
    return reset_detail(value, wall=wall)[0]


def reset_detail(value: str | None, *, wall: float | None = None) -> tuple[float | None, bool]:
    """``(seconds, precise)`` as :func:`parse_reset`; ``precise`` is false for a unix
    timestamp in whole seconds (up to a second early: no refill rate can be read from it)."""
    precise = True
    if not value:
        return None, precise
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        parts = _RESET.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None, precise
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    else:
        if not math.isfinite(number) or number < 0:
            return None, precise
        now = time.time() if wall is None else wall
        if number >= _UNIX_MS:
            seconds = max(0.0, number / 1000.0 - now)
        elif number >= _UNIX_S:
            seconds, precise = max(0.0, number - now), False
        else:
            seconds = number
    return (seconds if seconds <= MAX_WAIT else None), precise


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and 0 <= number < 1e15 else None


def classify(status: int | None, detail: str | bytes | None = None) -> Kind:
    """What an answer means for pacing: ``"rate"`` (a 429: too many requests per time),
    ``"overload"`` (too many at once: a 503 or 529, TGI's ``Model is overloaded`` 429,
    Ollama's ``server busy`` 503), ``"ok"`` (below 400) or ``"other"`` (no signal: other
    errors, quota exhausted, no answer)."""
    if status is None:
        return "other"
    if status < 400:
        return "ok"
    if status not in (429, 503, 529):
        return "other"
    text = detail[:4096].decode("utf-8", "replace") if isinstance(detail, bytes) else (detail or "")[:4096]
    text = text.lower()
    if any(word in text for word in _QUOTA_WORDS):
        return "other"  # waiting does not bring a quota back
    if status != 429 or any(word in text for word in _OVERLOAD_WORDS):
        return "overload"
    return "rate"


@dataclass(frozen=True)
class Limits:
    """One dimension of a server's rate-limit headers."""

    limit: float | None
    remaining: float | None
    reset: float | None
    reset_precise: bool = True


@dataclass(frozen=True)
class Feedback:
    """What a response says about the server's limits (plain data: it may cross
    processes). ``retry_after_precise``: given in milliseconds or fractions of a second
    (a whole-second Retry-After of 1 may mean any wait below a second)."""

    status: int | None
    retry_after: float | None
    requests: Limits | None
    tokens: Limits | None
    kind: Kind = "other"
    retry_after_precise: bool = True

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str] | None, status: int | None, detail: str | bytes | None = None
    ) -> Feedback:
        dims: dict[str, Limits | None] = {}
        for dim in _DIMENSIONS:
            limits = None
            if headers is not None:
                remaining = _number(headers.get(f"x-ratelimit-remaining-{dim}"))
                if remaining is not None:
                    reset, precise = reset_detail(headers.get(f"x-ratelimit-reset-{dim}"))
                    limit = _number(headers.get(f"x-ratelimit-limit-{dim}"))
                    limits = Limits(limit, remaining, reset, precise)
            dims[dim] = limits
        kind = classify(status, detail)
        retry_after, precise = None, True
        if kind in ("rate", "overload"):
            found = retry_after_detail(headers)
            if found is not None:
                retry_after, precise = found
        return cls(status, retry_after, dims["requests"], dims["tokens"], kind, precise)


# --------------------------------------------------------------------------- token costs


# the text of a message, or of a Responses API input item (a call's arguments, its output)
_TEXT_KEYS = frozenset({"content", "text", "role", "name", "arguments", "output"})


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image", "image"):
            return 0
        return sum(_text_chars(v) for k, v in value.items() if k in _TEXT_KEYS)
    return 0


def estimate_tokens(body: Any) -> float:
    """A request's token cost before it is sent: about four characters of prompt text per
    token, plus the most it may generate (``max_tokens`` in any of its wire names, the
    Responses API's ``max_output_tokens`` included)."""
    if not isinstance(body, dict):
        return 0.0
    chars = 0
    for key in ("messages", "prompt", "input", "inputs", "instructions"):
        if key in body:
            chars += _text_chars(body[key])
    completion = 0
    options = body.get("options")
    parameters = body.get("parameters")
    for source, key in (
        (body, "max_completion_tokens"),
        (body, "max_tokens"),
        (body, "max_output_tokens"),
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
