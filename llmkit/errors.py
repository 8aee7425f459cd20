"""The typed error tree, and the mapping from HTTP responses to it."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ContextLengthError",
    "InvalidRequestError",
    "LLMConnectionError",
    "LLMError",
    "LLMTimeoutError",
    "ModelNotFoundError",
    "NotSupportedError",
    "PermissionDeniedError",
    "ProviderNotFoundError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "StreamTimeoutError",
    "error_from_response",
    "redact",
]

# --------------------------------------------------------------------------- redaction

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
# Bearer tokens and the common key shapes, for text that carries a key we were never told of.
_KEY_PATTERNS = re.compile(
    r"(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}|\b(sk-[A-Za-z0-9_-]{8,}|hf_[A-Za-z0-9]{8,})"
)


def register_secret(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it from any text."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """Remove every registered secret and anything shaped like an API key from ``text``."""
    if not text:
        return text
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_PATTERNS.sub(lambda m: (m.group(1) or "") + "***", text)


# --------------------------------------------------------------------------- errors


class LLMError(Exception):
    """Base class of every error llmkit raises."""

    type: str = "llm_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        provider: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.message = redact(str(message))
        self.code = code
        self.status = status
        self.provider = provider
        self.retry_after = retry_after
        self.request_id = request_id
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [self.message]
        details = []
        if self.provider:
            details.append(f"provider={self.provider}")
        if self.status is not None:
            details.append(f"status={self.status}")
        if self.code:
            details.append(f"code={self.code}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(type={self.type!r}, message={self.message!r}, "
            f"status={self.status!r}, code={self.code!r}, provider={self.provider!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "code": self.code,
                    "status": self.status,
                    "provider": self.provider,
                    "retry_after": self.retry_after,
                    "request_id": self.request_id,
                    "retryable": self.retryable,
                },
            ),
        )


def _rebuild(cls: type[LLMError], message: str, kwargs: dict[str, Any]) -> LLMError:
    return cls(message, **kwargs)


class AuthenticationError(LLMError):
    type = "authentication"


class PermissionDeniedError(LLMError):
    type = "permission_denied"


class RateLimitError(LLMError):
    type = "rate_limit"
    retryable = True


class ModelNotFoundError(LLMError):
    type = "model_not_found"


class InvalidRequestError(LLMError):
    type = "invalid_request"


class ContextLengthError(InvalidRequestError):
    type = "context_length_exceeded"


class LLMTimeoutError(LLMError, TimeoutError):
    type = "timeout"
    retryable = True


class LLMConnectionError(LLMError, ConnectionError):
    type = "connection"
    retryable = True


class ServerError(LLMError):
    type = "server_error"
    retryable = True


class StreamError(LLMError):
    type = "stream_error"


class StreamTimeoutError(StreamError, LLMTimeoutError):
    """A read timed out after part of a stream was delivered: a :class:`StreamError`
    (the output is incomplete, not retried) that is also an :class:`LLMTimeoutError`."""

    type = "stream_error"
    retryable = False


class ConfigError(LLMError):
    type = "configuration"


class ProviderNotFoundError(LLMError):
    type = "provider_not_found"


class NotSupportedError(LLMError):
    type = "not_supported"


# --------------------------------------------------------------------------- mapping

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


def _error_fields(payload: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from the error bodies of OpenAI, Ollama, HF and TGI."""
    if not isinstance(payload, dict):
        return None, None, None
    err = payload.get("error", payload.get("detail"))
    if isinstance(err, dict):
        msg = err.get("message")
        etype = err.get("type")
        code = err.get("code")
        return (
            str(msg) if msg is not None else None,
            str(etype) if etype is not None else None,
            str(code) if code is not None else None,
        )
    if isinstance(err, list):
        msg = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        return msg, None, None
    if err is not None:
        etype = payload.get("error_type") or payload.get("type")
        code = payload.get("code")
        return str(err), (str(etype) if etype else None), (str(code) if code else None)
    msg = payload.get("message")
    return (str(msg) if msg is not None else None), None, None


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
    from llmkit.retry import parse_retry_after  # local: retry imports errors

    message, etype, code = _error_fields(payload)
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
