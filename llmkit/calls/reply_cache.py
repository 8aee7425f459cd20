"""The reply cache (``LLMConfig.cache``): replies stored in an SQLite file.

A reply is stored under the SHA-256 of a canonical JSON document of everything that goes
on the wire or changes the answer: the operation (``chat``, ``generate_stream``, ``embed``,
...), provider, base URL, model, messages (or texts), tools, tool choice, response format,
the sampling options in effect (the config's, overlaid with the call's), the config's
``extra`` (``dimensions``, ``embedding_model``, Ollama's ``options`` and ``think``, the
router's ``inference_provider``, ``api``, ``headers``, ...), the per-call ``extra_headers``,
``extra_query`` and ``extra_body``, and where the provider runs the call (Hugging Face's
local mode). Left out: what only changes how a request is sent (``timeout``,
``max_retries``, the retry, connection and batching settings in ``extra``) and secrets,
never part of the key nor stored: the API key, headers and fields whose name ends in a
credential word (``Authorization``, ``x-api-key``, ``hf_token``, ``client_secret``,
``password``, ``cookie``, ...) and, in any text, a registered secret or a URL's password. A request with an option that has no
stable JSON form (an arbitrary object) is neither looked up nor stored.

Only complete replies are stored: errors never, streams once they ended normally (a stream
the consumer stopped early is not stored); a stored stream is replayed as a stream.

A cache that cannot be read (a corrupt file, a path that cannot be opened) is refused
before anything is sent: :class:`ConfigError`. A cache that can be read but not written
(a read-only or immutable file, a full disk) degrades to not caching: hits are still
served, replies are returned as they come, and one warning is logged per instance.

The file is opened in WAL mode, so several processes can share it; every read and write
runs in a worker thread with its own short-lived connection, never on the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from llmkit.calls.protocol import NO_ANSWER, LayerCall
from llmkit.core.errors import ConfigError, LLMError, redact
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, Message, StreamChunk, normalize_messages

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallRecord, CallTarget

__all__ = ["ReplyCache", "request_key"]

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llmkit_replies (
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    value BLOB NOT NULL,
    created REAL NOT NULL
)
"""


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


def _encode(operation: str, result: Any) -> bytes:
    if operation == "chat":
        return orjson.dumps(result.model_dump(mode="json", exclude={"parsed"}))
    if operation == "chat_stream":
        return orjson.dumps([c.model_dump(mode="json", exclude_defaults=True) for c in result])
    return orjson.dumps(result)


_BUSY_RETRY_SECONDS = 30.0


def _is_read_only(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "read only" in text


class ReplyCache:
    """Stored replies in one SQLite file (created on first use)."""

    def __init__(self, path: str) -> None:
        if not isinstance(path, str) or not path.strip():
            raise ConfigError("cache must be a file path")
        self.path = path
        self._ready = False
        self._writable = True
        self._init_lock = threading.Lock()
        self._warn_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplyCache({self.path!r})"

    def key(self, llm: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return request_key(llm, operation, args, kwargs)

    # ------------------------------------------------------------------ storage (threads)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        if not self._ready:
            with self._init_lock:
                if not self._ready:
                    try:
                        self._prepare(conn)
                    except BaseException:
                        conn.close()
                        raise
                    self._ready = True
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes of the app
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the table, on first use; a file that can be read but not written
        is used read-only (reads go on, writes are skipped)."""
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
        except sqlite3.OperationalError as exc:
            if not _is_read_only(exc):
                raise
            # readable? (a corrupt file raises here and the cache is refused)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self._read_only(exc)

    def _read_only(self, exc: BaseException) -> None:
        with self._warn_lock:
            if not self._writable:
                return
            self._writable = False
            log.warning(
                "reply cache %r cannot be written (%s): replies are not cached",
                self.path, redact(str(exc)),
            )

    def _read(self, key: str) -> bytes | None:
        with closing(self._connect()) as conn:
            try:
                row = conn.execute(
                    "SELECT value FROM llmkit_replies WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.OperationalError as exc:
                if self._writable or "no such table" not in str(exc):
                    raise
                return None  # a read-only file without the table: an empty cache
        return None if row is None else bytes(row[0])

    def _write(self, key: str, operation: str, value: bytes) -> None:
        with closing(self._connect()) as conn:
            if not self._writable:
                return
            conn.execute(
                "INSERT OR REPLACE INTO llmkit_replies (key, operation, value, created) "
                "VALUES (?, ?, ?, ?)",
                (key, operation, value, time.time()),
            )

    @staticmethod
    def _with_busy_retries(fn: Any, *args: Any) -> Any:
        # SQLite answers "database is locked" without waiting on the busy timeout in a few
        # cases (switching to WAL, WAL recovery while another process opens the file): try
        # again for a while rather than fail a call over a cache.
        delay = 0.01
        deadline = time.monotonic() + _BUSY_RETRY_SECONDS
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(self._with_busy_retries, fn, *args)
        except sqlite3.Error as exc:
            raise ConfigError(f"reply cache {self.path!r} is not usable: {exc}") from None

    # ------------------------------------------------------------------ API

    async def get(self, key: str) -> bytes | None:
        """The stored reply, or None; :class:`ConfigError` when the cache cannot be read
        (before anything is sent)."""
        return await self._run(self._read, key)  # type: ignore[no-any-return]

    async def put(self, key: str, operation: str, result: Any) -> None:
        """Store a reply. Never raises (but ``CancelledError``): the reply is paid for
        and must reach the caller; a cache that cannot be written stops being written,
        with one warning."""
        if not self._writable:
            return
        try:
            value = _encode(operation, result)
            await asyncio.to_thread(self._with_busy_retries, self._write, key, operation, value)
        except (sqlite3.Error, OSError, TypeError, ValueError) as exc:
            self._read_only(exc)

    def decode(self, operation: str, value: bytes, kwargs: dict[str, Any], provider: str) -> Any:
        """The stored reply in the form the operation returns."""
        data = orjson.loads(value)
        if operation == "chat":
            response = ChatResponse.model_validate(data)
            response_format = kwargs.get("response_format")
            if response_format is not None:
                response.parsed = parse_structured(
                    response.content, response_format, provider, response
                )
            return response
        if operation == "chat_stream":
            return [StreamChunk.model_validate(item) for item in data]
        return data

    # ------------------------------------------------------------------ the call layer

    def start(
        self, target: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> LayerCall | None:
        key = request_key(target, operation, args, kwargs)
        if key is None:
            return None
        return _CacheCall(self, key, operation, kwargs, target.provider)


class _CacheCall(LayerCall):
    """The reply cache's part in one call: answer from the file, or store the reply (a
    stream's chunks once it completed)."""

    __slots__ = ("cache", "key", "kwargs", "operation", "provider", "received")

    def __init__(
        self, cache: ReplyCache, key: str, operation: str, kwargs: dict[str, Any], provider: str
    ) -> None:
        self.cache = cache
        self.key = key
        self.operation = operation
        self.kwargs = kwargs
        self.provider = provider
        self.received: list[Any] = []

    async def answer(self) -> Any:
        stored = await self.cache.get(self.key)
        if stored is None:
            return NO_ANSWER
        return self.cache.decode(self.operation, stored, self.kwargs, self.provider)

    def chunk(self, item: Any) -> None:
        self.received.append(item)

    async def succeeded(self, result: Any, record: CallRecord) -> None:
        if self.operation in ("generate_stream", "chat_stream"):
            result = self.received
        await self.cache.put(self.key, self.operation, result)
