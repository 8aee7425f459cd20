"""The reply cache (``LLMConfig.cache``): replies stored in an SQLite file.

A reply is stored under the SHA-256 of a canonical JSON document of the request: the
operation (``chat``, ``generate_stream``, ``embed``, ...), provider, base URL, model,
messages (or texts), tools, tool choice, response format and the sampling options in
effect (the config's, overlaid with the call's). Client options that do not change the
reply (``timeout``, ``max_retries``) are left out. A request with an option that has no
stable JSON form (an arbitrary object) is neither looked up nor stored.

Only complete replies are stored: errors never, streams once they ended normally (a stream
the consumer stopped early is not stored); a stored stream is replayed as a stream.

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
from llmkit.core.errors import ConfigError, LLMError
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse, Message, StreamChunk, normalize_messages

if TYPE_CHECKING:
    from llmkit.calls.protocol import CallRecord, CallTarget

__all__ = ["ReplyCache", "request_key"]

log = logging.getLogger("llmkit.calls.reply_cache")

FORMAT_VERSION = 1
# Call options that change how a request is sent, not what comes back.
UNKEYED_OPTIONS = frozenset({"timeout", "max_retries"})
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


def request_key(llm: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The cache key of a call, or None when the call cannot be cached."""
    if not args:
        return None
    subject = args[0]
    options = {k: v for k, v in kwargs.items() if v is not None and k not in UNKEYED_OPTIONS}
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
        "provider": llm.provider,
        "base_url": llm.config.base_url,
        "model": llm.model,
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


class ReplyCache:
    """Stored replies in one SQLite file (created on first use)."""

    def __init__(self, path: str) -> None:
        if not isinstance(path, str) or not path.strip():
            raise ConfigError("cache must be a file path")
        self.path = path
        self._ready = False
        self._init_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplyCache({self.path!r})"

    def key(self, llm: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return request_key(llm, operation, args, kwargs)

    # ------------------------------------------------------------------ storage (threads)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes of the app
        if not self._ready:
            with self._init_lock:
                if not self._ready:
                    try:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.execute(_SCHEMA)
                    except BaseException:
                        conn.close()
                        raise
                    self._ready = True
        return conn

    def _read(self, key: str) -> bytes | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT value FROM llmkit_replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _write(self, key: str, operation: str, value: bytes) -> None:
        with closing(self._connect()) as conn:
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
        return await self._run(self._read, key)  # type: ignore[no-any-return]

    async def put(self, key: str, operation: str, result: Any) -> None:
        await self._run(self._write, key, operation, _encode(operation, result))

    def decode(self, operation: str, value: bytes, kwargs: dict[str, Any], provider: str) -> Any:
        """The stored reply in the form the operation returns."""
        data = orjson.loads(value)
        if operation == "chat":
            response = ChatResponse.model_validate(data)
            response_format = kwargs.get("response_format")
            if response_format is not None:
                response.parsed = parse_structured(response.content, response_format, provider)
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
