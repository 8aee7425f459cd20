"""The typed error tree (every error a call raises) and the redaction of secrets from
anything an error, a repr or a log line can show. The mapping of HTTP answers to these
errors is :mod:`llmkit.http.error_mapping`."""

from __future__ import annotations

import re
import threading
from typing import Any

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
    "ReplyTruncatedError",
    "ReplyValidationError",
    "ServerError",
    "StreamError",
    "StreamTimeoutError",
    "instance_closed",
    "redact",
]

# --------------------------------------------------------------------------- redaction

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
# Bearer tokens and the common key shapes, for text that carries a key we were never told of.
_KEY_PATTERNS = re.compile(
    r"(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}|\b(sk-[A-Za-z0-9_-]{8,}|hf_[A-Za-z0-9]{8,})"
)
# The password of a URL's userinfo: scheme://user:PASSWORD@host
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#\s:@]*:)[^/?#\s@]*@")


def register_secret(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it from any text."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)


def instance_closed(provider: str | None, *, streaming: bool = False) -> LLMError:
    """What a call or stream of a closed instance raises: ``ConfigError("instance is
    closed")``; a stream: :class:`StreamError` saying the instance was closed."""
    if streaming:
        return StreamError("stream ended: the instance was closed", provider=provider)
    return ConfigError("instance is closed", provider=provider)


def without_registered_secrets(data: bytes) -> bytes:
    """``data`` with every registered secret (as UTF-8) replaced by ``***``; nothing else
    changes (for stored replies, where a key-shaped text of the reply itself stays)."""
    for secret in tuple(_secrets):
        needle = secret.encode()
        if needle in data:
            data = data.replace(needle, b"***")
    return data


def redact(text: str) -> str:
    """Remove every registered secret and anything shaped like an API key from ``text``."""
    if not text:
        return text
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, "***")
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
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
        param: str | None = None,
    ) -> None:
        self.message = redact(str(message))
        self.code = code
        self.status = status
        self.provider = provider
        self.retry_after = retry_after
        self.request_id = request_id
        self.param = param
        """The request field the server blamed (the error body's ``param``)."""
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
        if self.param:
            details.append(f"param={self.param}")
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
                    "param": self.param,
                    **self._extra_state(),
                },
            ),
        )


    def _extra_state(self) -> dict[str, Any]:
        return {}


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


class ReplyValidationError(LLMError):
    """The model's reply does not match the requested ``response_format``. The request was
    fine: ``response`` is the whole :class:`~llmkit.ChatResponse` (content, usage,
    finish_reason, raw), and its usage is counted in the instance's totals."""

    type = "reply_invalid"

    def __init__(self, message: str, *, response: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.response = response

    def _extra_state(self) -> dict[str, Any]:
        return {"response": self.response}


class ReplyTruncatedError(ReplyValidationError):
    """The token limit cut the structured reply (``finish_reason == "length"``) before it
    was complete; raise ``max_tokens``."""

    type = "reply_truncated"


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
