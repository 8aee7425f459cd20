"""Response bodies and the base URL of the HTTP transport: bounded reads (the
decompressed size counts), decoding a body into JSON, text or bytes or its typed error,
and ending a stream's body so its connection can go back to the pool."""

from __future__ import annotations

import asyncio
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from llmkit.core.errors import (
    ConfigError,
    InvalidRequestError,
    ServerError,
    redact,
    register_secret,
)
from llmkit.http.error_mapping import error_from_response

__all__ = [
    "await_body_end",
    "checked_base_url",
    "decode_body",
    "encode_json",
    "finish_response",
    "read_bounded",
]

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode_json(body: Any, provider: str | None = None) -> bytes:
    """A request body as JSON. Keys may be ints (``logit_bias={2204: 100}``, as
    openai-python takes it); a value JSON cannot hold is an :class:`InvalidRequestError`
    naming it, before anything is sent."""
    try:
        return orjson.dumps(body, option=_JSON_OPTIONS)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidRequestError(
            f"the request body cannot be encoded as JSON: {exc}", provider=provider
        ) from None


def checked_base_url(base_url: str, provider: str) -> str:
    """The base URL without its trailing slash; one that is not an absolute http(s) URL is
    a configuration error now, not a connection error on every request."""
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"base_url must be an absolute http:// or https:// URL, not {redact(base_url)!r}",
            provider=provider,
        )
    # a password in the URL never shows in an error or log, escaped or not
    register_secret(parts.password)
    register_secret(urllib.parse.unquote(parts.password or ""))
    return base_url.strip().rstrip("/")


def decode_body(
    body: bytes,
    status: int,
    headers: Mapping[str, str],
    ctype: str,
    charset: str | None,
    parse: str,
    *,
    model: str | None,
    provider: str,
) -> Any:
    """The decoded body (JSON, text or bytes), or the typed error its status means."""
    if status >= 400:
        raise error_from_response(
            status, body, headers, provider=provider, model=model, content_type=ctype
        )
    if parse == "bytes":
        return body
    if parse == "text":
        return body.decode(charset or "utf-8", "replace")
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        error = ServerError(
            f"malformed JSON response ({ctype}): {body[:200].decode('utf-8', 'replace')!r}",
            status=status,
            provider=provider,
            retryable=False,
        )
    raise error


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, provider: str) -> bytes:
    """The body, at most ``limit`` bytes of it once decompressed (Content-Length is the
    size on the wire, so it is trusted only for an unencoded body)."""
    length = resp.content_length
    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    if length is not None and not encoded:
        if length <= limit:
            return await resp.read()
        raise _too_large(resp, limit, provider, f"response of {length} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            what = "decompressed response" if encoded else "response"
            raise _too_large(resp, limit, provider, what)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(resp: aiohttp.ClientResponse, limit: int, provider: str, what: str) -> ServerError:
    resp.close()  # the rest is not read: the connection cannot be reused
    return ServerError(
        f"{what} exceeds max_response_bytes={limit}",
        status=resp.status,
        provider=provider,
        retryable=False,
    )


_BODY_END_GRACE = 0.05  # seconds
_BODY_END_MAX = 64 * 1024  # bytes


async def await_body_end(resp: aiohttp.ClientResponse) -> None:
    """After the end marker, give the body a moment to end (the chunked terminator is often
    still in flight), so that the connection can go back to the pool. A server that keeps
    the body open, or sends more, costs at most the grace time: the connection is closed."""
    content = resp.content
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BODY_END_GRACE
    extra = 0
    while not content.at_eof() and extra <= _BODY_END_MAX:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            chunk = await _read_within(content, remaining)
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
            return
        if not chunk:
            return
        extra += len(chunk)


if sys.version_info >= (3, 11):

    async def _read_within(content: aiohttp.StreamReader, seconds: float) -> bytes:
        # not asyncio.wait_for: before Python 3.12 it returns the read's result when the
        # caller is cancelled just as the read completes, and the cancellation is lost (a
        # stream cancelled at its end would then run on as if never cancelled)
        async with asyncio.timeout(seconds):
            return await content.readany()

else:  # pragma: no cover - Python 3.10

    async def _read_within(content: aiohttp.StreamReader, seconds: float) -> bytes:
        return await asyncio.wait_for(content.readany(), seconds)


def finish_response(resp: aiohttp.ClientResponse, *, complete: bool) -> None:
    """Back to the pool when the body was read to its end; otherwise drop the connection
    (a server that keeps the stream open after its end marker gets no more reads)."""
    if complete and resp.content.at_eof():
        resp.release()
    else:
        resp.close()
