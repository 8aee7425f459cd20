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
``password``, ``cookie``, ...) and, in any text, a registered secret or a URL's password.
A stored reply never holds a registered secret either (a server that echoes the key in a
reply or its ``raw`` body has it stored as ``***``). A request with an option that has no
stable JSON form (an arbitrary object) is neither looked up nor stored.

A damaged row (not JSON, or not of its operation's shape) is a miss, with a warning; the
reply that comes instead replaces it.

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
import logging
import sqlite3
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import orjson

from llmkit.calls.protocol import NO_ANSWER, LayerCall
from llmkit.calls.reply_key import request_key
from llmkit.core.errors import ConfigError, redact, without_registered_secrets
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, StreamChunk

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallRecord, CallTarget

__all__ = ["ReplyCache"]

log = logging.getLogger("llmkit.calls.reply_cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llmkit_replies (
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    value BLOB NOT NULL,
    created REAL NOT NULL
)
"""


def _encode(operation: str, result: Any) -> bytes:
    if operation == "chat":
        return orjson.dumps(result.model_dump(mode="json", exclude={"parsed"}))
    if operation == "chat_stream":
        return orjson.dumps([c.model_dump(mode="json", exclude_defaults=True) for c in result])
    return orjson.dumps(result)


def _rows(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise TypeError("not a list")
    return data


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    )


def _has_shape(operation: str, data: Any) -> bool:
    """Whether a decoded row is what ``operation`` returns (chat replies are validated by
    their models)."""
    if operation == "generate":
        return isinstance(data, str)
    if operation == "generate_stream":
        return isinstance(data, list) and all(isinstance(x, str) for x in data)
    if operation == "embed":
        return _is_vector(data)
    if operation == "embed_batch":
        return isinstance(data, list) and all(_is_vector(v) for v in data)
    return True


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
            value = without_registered_secrets(_encode(operation, result))  # an echoed key too
            await asyncio.to_thread(self._with_busy_retries, self._write, key, operation, value)
        except (sqlite3.Error, OSError, TypeError, ValueError) as exc:
            self._read_only(exc)

    def decode(self, operation: str, value: bytes, kwargs: dict[str, Any], provider: str) -> Any:
        """The stored reply in the form the operation returns, or NO_ANSWER when the row
        is damaged (not JSON, or not of the operation's shape): a miss, with a warning;
        the reply that comes instead replaces the row."""
        try:
            data = orjson.loads(value)
            if operation == "chat":
                if not isinstance(data, dict) or "content" not in data:
                    raise ValueError("not a stored chat reply")
                response = ChatResponse.model_validate(data)
            elif operation == "chat_stream":
                return [StreamChunk.model_validate(item) for item in _rows(data)]
            elif _has_shape(operation, data):
                return data
            else:
                raise ValueError(f"not a stored {operation} reply")
        except (ValueError, TypeError) as exc:  # orjson's and pydantic's errors are ValueErrors
            log.warning(
                "reply cache %r: a damaged %s row is ignored (%s)",
                self.path, operation, redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
            )
            return NO_ANSWER
        response_format = kwargs.get("response_format")
        if response_format is not None:
            response.parsed = parse_structured(response.content, response_format, provider, response)
        return response

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
