"""The mapping of HTTP answers (status, body, headers) and of error payloads inside streams
to the typed error tree of :mod:`llmkit.core.errors`: context overflow, quota, model not
found, overload, each as the servers llmkit talks to word them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from llmkit.core.errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamError,
)
from llmkit.http.retry import parse_retry_after

__all__ = ["error_from_payload", "error_from_response"]


# Context overflow as each server words it: OpenAI / vLLM ("maximum context length"),
# llama.cpp ("exceeds the available context size", "larger than the max context size"),
# TGI ("`inputs` must have less than N tokens", "`inputs` tokens + `max_new_tokens` must
# be <= N"), Ollama ("exceeds the context length", "exceeded max context length"), and
# the common phrasings of hosted APIs.
_CONTEXT_PATTERNS = re.compile(
    r"context[ _]length|maximum context|context window|too many tokens|"
    r"prompt is too long|input is too long|exceeds the available context size|"
    r"larger than the max context size|exceeds? (?:the )?(?:model'?s? )?(?:max(?:imum)? )?context|"
    r"`inputs` must have less than|`inputs` tokens \+ `max_new_tokens` must be <=|"
    r"exceeded max context length",
    re.IGNORECASE,
)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
# llama.cpp answers an input longer than its batch (an embedding of more tokens than -ub)
# with a 500: "input (N tokens) is too large to process. increase the physical batch size".
# The request cannot succeed as it is: a context-length error, not retried.
_CONTEXT_500 = re.compile(r"input \(\d+ tokens\) is too large to process|input is too large to process", re.IGNORECASE)
# TGI's own limit on new tokens is a bad request, not a context overflow.
_NOT_CONTEXT = re.compile(r"^\s*`max_new_tokens` must be <=", re.IGNORECASE)
_QUOTA_CODES = {"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"}


def _parse_body(body: bytes | str | None) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def _error_fields(payload: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, code, param) from the error bodies of OpenAI, vLLM, llama.cpp,
    Ollama, HF and TGI (``param`` where the body names the field it blames)."""
    if not isinstance(payload, dict):
        return None, None, None, None
    err = payload.get("error", payload.get("detail"))
    if isinstance(err, dict):
        param = err.get("param")
        return (
            _text(err.get("message")), _text(err.get("type")), _text(err.get("code")),
            param if isinstance(param, str) and param else None,
        )
    if isinstance(err, list):
        msg = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        return msg, None, None, None
    if err is not None:
        etype = payload.get("error_type") or payload.get("type")
        code = payload.get("code")
        param = payload.get("param")
        return (
            str(err), (str(etype) if etype else None), (str(code) if code else None),
            param if isinstance(param, str) and param else None,
        )
    flat = payload.get("param")  # vLLM's older flat body: {"object": "error", ..., "param"}
    return _text(payload.get("message")), None, None, flat if isinstance(flat, str) and flat else None


def error_from_payload(
    payload: Any,
    *,
    status: int | None = None,
    provider: str | None = None,
    headers: Mapping[str, str] | None = None,
    model: str | None = None,
    default_message: str | None = None,
) -> LLMError:
    """Build the typed error for an error body already decoded from JSON."""

    message, etype, code, param = _error_fields(payload)
    if not message:
        message = default_message or (f"HTTP {status}" if status else "unknown error")
    retry_after = parse_retry_after(headers) if headers is not None else None
    request_id = None
    if headers is not None:
        request_id = headers.get("x-request-id") or headers.get("x-amzn-requestid")
    estimated = payload.get("estimated_time") if isinstance(payload, dict) else None
    if isinstance(estimated, (int, float)) and math.isfinite(estimated):
        # Hugging Face "model is loading": wait the estimated time before retrying.
        retry_after = max(0.0, float(estimated))
    kw: dict[str, Any] = {
        "code": code,
        "status": status,
        "provider": provider,
        "retry_after": retry_after,
        "request_id": request_id,
        "param": param,
    }
    lowered_code = (code or etype or "").lower()
    if lowered_code in _QUOTA_CODES:
        return RateLimitError(message, retryable=False, **kw)
    if (
        lowered_code in _CONTEXT_CODES
        or (etype or "").lower() in _CONTEXT_CODES
        or (
            status in (400, 413, 422, None)
            and _CONTEXT_PATTERNS.search(message)
            and not _NOT_CONTEXT.search(message)
        )
        or (status == 500 and _CONTEXT_500.search(message))
    ):
        return ContextLengthError(message, **kw)
    if lowered_code in ("model_not_found",) and status in (None, 400, 404):
        return ModelNotFoundError(message, **kw)
    if status is None:
        return StreamError(message, **kw)
    return _error_for_status(status, message, payload, model, kw)


def _error_for_status(
    status: int, message: str, payload: Any, model: str | None, kw: dict[str, Any]
) -> LLMError:
    """The class of API.md's table for an HTTP status (every status has one)."""
    if status == 401:
        return AuthenticationError(message, **kw)
    if status in (403, 451):
        return PermissionDeniedError(message, **kw)
    if status in (404, 410):
        if payload is None or not _MODEL_WORD.search(message):
            # Not about a model ("Invalid URL (POST /v1/chat/completion)", a proxy's or
            # web server's page): the endpoint is wrong.
            return InvalidRequestError(f"{message} (endpoint not found: check base_url)", **kw)
        if model and model not in message:
            message = f"{message} (model {model!r})"
        return ModelNotFoundError(message, **kw)
    if status == 408:
        return LLMTimeoutError(message, **kw)
    if status == 402:  # payment required: credits or quota exhausted
        return RateLimitError(message, retryable=False, **kw)
    if status == 429:
        return RateLimitError(message, **kw)
    if status in (409, 423, 425):  # conflict, locked, too early: try again
        return ServerError(message, retryable=True, **kw)
    if status == 424:  # TGI: the request failed during generation
        return ServerError(message, retryable=False, **kw)
    if 400 <= status < 500:
        return InvalidRequestError(message, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    # 1xx-3xx reaching here: a reply that is not what the API answers
    return ServerError(f"unexpected response: {message}", retryable=False, **kw)


_MODEL_WORD = re.compile(r"\b(?:model|repo(?:sitory)?)", re.IGNORECASE)


def error_from_response(
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    *,
    provider: str | None = None,
    model: str | None = None,
    content_type: str | None = None,
) -> LLMError:
    """Build the typed error for an HTTP error response of any supported provider."""
    payload = _parse_body(body)
    default = None
    if payload is None and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text = re.sub(r"<[^>]+>", " ", text)  # HTML error pages from proxies
        text = " ".join(text.split())
        kind = f" ({content_type})" if content_type and "json" not in content_type else ""
        default = f"HTTP {status}{kind}: {text[:300]}" if text else f"HTTP {status}"
    return error_from_payload(
        payload,
        status=status,
        provider=provider,
        headers=headers,
        model=model,
        default_message=default,
    )
