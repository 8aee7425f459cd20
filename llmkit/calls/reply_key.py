"""The reply cache's key: the SHA-256 of a canonical JSON document of everything that goes on
the wire or changes the answer (see :mod:`llmkit.calls.reply_cache` for what it covers),
with secrets left out: fields and headers named like a credential, registered secrets and
URL passwords in any text."""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from llmkit.core.errors import LLMError, redact
from llmkit.core.types import Message, normalize_messages

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallTarget

__all__ = ["UNKEYED_EXTRAS", "UNKEYED_OPTIONS", "request_key"]

log = logging.getLogger("llmkit.calls.reply_cache")

FORMAT_VERSION = 2
# Call options that change how a request is sent, not what comes back.
UNKEYED_OPTIONS = frozenset({"timeout", "max_retries"})
# Config extras that change how requests are sent or batched, not what comes back.
UNKEYED_EXTRAS = frozenset({
    "retry_initial_delay", "retry_max_delay", "retry_max_after", "max_response_bytes",
    "max_event_bytes", "connection_limit", "verify_ssl", "trust_env", "embedding_batch_size",
    "embedding_batch_chars", "max_batch_size", "embed_batch_size", "latency", "chunk_size",
})
# Fields and headers that carry credentials: the last word of the name (lower case, split
# at "-" and "_"), so that "x-api-key", "hf_token" and "Authorization" are, "max_tokens" not.
_SECRET_WORDS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials",
    "authorization", "cookie", "signature",
})
MESSAGE_OPERATIONS = frozenset({"generate", "chat", "generate_stream", "chat_stream"})

class _Unstable(TypeError):
    """An option value with no stable JSON form."""


def _canonical(value: Any) -> Any:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"pydantic_schema": value.model_json_schema()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise _Unstable(type(value).__name__)


def _is_secret_name(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    return name.lower().replace("-", "_").rsplit("_", 1)[-1] in _SECRET_WORDS


def _public(value: Any) -> Any:
    """``value`` without credentials: fields and headers named like one are left out, and
    a text holding a registered secret (or a URL's password) has it replaced."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _public(v) for k, v in value.items() if not _is_secret_name(k)}
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    if hasattr(value, "get_secret_value"):  # a pydantic SecretStr
        return None
    if hasattr(value, "config") and callable(getattr(value, "get_model_info", None)):
        return _scope(value)  # a provider instance (a fallback chain's member)
    if isinstance(value, BaseModel):
        return _public(value.model_dump(mode="json", exclude_none=True))
    return value


def _scope(llm: Any) -> dict[str, Any]:
    """What of the instance, beyond its call options, goes on the wire or changes the
    answer."""
    cfg = llm.config
    extra = {k: v for k, v in cfg.extra.items() if k not in UNKEYED_EXTRAS}
    scope: dict[str, Any] = {
        "provider": llm.provider,
        "base_url": redact(cfg.base_url) if cfg.base_url else None,
        "model": llm.model,
        "extra": _public(extra),
    }
    # what the config does not say: Hugging Face's local mode, a fallback chain's members
    where = getattr(llm, "_reply_scope", None)
    if callable(where):
        scope["runs"] = _public(where())
    return scope


def request_key(llm: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The cache key of a call, or None when the call cannot be cached."""
    if not args:
        return None
    subject = args[0]
    options = {k: v for k, v in kwargs.items() if v is not None and k not in UNKEYED_OPTIONS}
    for name in ("extra_headers", "extra_query", "extra_body"):
        if name in options:
            options[name] = _public(options[name])
    if operation in MESSAGE_OPERATIONS:
        if not isinstance(subject, (str, Message, Mapping, list, tuple)):
            return None  # a one-shot iterable: reading it here would consume the caller's
        try:
            subject = [m.model_dump(mode="json", exclude_none=True) for m in normalize_messages(subject)]
        except LLMError:
            return None  # the provider reports bad messages itself
        if options.get("tools"):
            from llmkit.core.tools import to_openai_tools

            try:
                options["tools"] = to_openai_tools(options["tools"])
            except LLMError:
                return None
        cfg = llm.config
        sampling = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p}
        options = {**{k: v for k, v in sampling.items() if v is not None}, **options}
    elif not isinstance(subject, (str, list, tuple)):
        return None
    document = {
        "v": FORMAT_VERSION,
        "operation": operation,
        **_scope(llm),
        "input": subject,
        "options": options,
    }
    try:
        blob = orjson.dumps(
            document, default=_canonical, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
    except (orjson.JSONEncodeError, _Unstable) as exc:
        log.debug("%s call not cached: option without a stable form (%s)", operation, exc)
        return None
    return hashlib.sha256(blob).hexdigest()
