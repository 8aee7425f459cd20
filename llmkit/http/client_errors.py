"""The typed error for each aiohttp / asyncio / OS failure of an HTTP request."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from llmkit.core.errors import (
    ConfigError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    StreamError,
    redact,
)

__all__ = ["map_client_error"]


def map_client_error(exc: BaseException, provider: str, url: str, *, stream: bool) -> LLMError:
    """Translate aiohttp / asyncio / OS errors into the typed errors."""
    where = redact(url)
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        what = "read" if isinstance(exc, aiohttp.SocketTimeoutError) else "request"
        return LLMTimeoutError(f"{what} timed out: {where}", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return LLMConnectionError(
            f"TLS certificate verification failed for {where}: {exc.certificate_error}",
            provider=provider,
            retryable=False,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return LLMConnectionError(f"cannot connect to {where}: {exc.os_error}", provider=provider)
    if isinstance(exc, aiohttp.ClientPayloadError):
        if stream:
            return StreamError(f"stream broken: {exc}", provider=provider)
        return LLMConnectionError(f"response body incomplete from {where}: {exc}", provider=provider)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return LLMConnectionError(f"server disconnected: {where}", provider=provider)
    if isinstance(exc, (aiohttp.InvalidURL, ValueError)) and not isinstance(exc, ssl.SSLError):
        return ConfigError(f"invalid URL {where}: {exc}", provider=provider)
    if isinstance(exc, (aiohttp.ClientOSError, OSError)):
        return LLMConnectionError(f"connection error with {where}: {exc}", provider=provider)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return LLMConnectionError(f"too many redirects: {where}", provider=provider, retryable=False)
    return LLMConnectionError(f"HTTP client error with {where}: {exc!r}", provider=provider)
