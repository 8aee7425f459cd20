"""Base for providers that talk HTTP: one transport sharing the instance's limiter,
retry policy and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from llmkit.base import BaseLLM, _check_texts
from llmkit.calls.fanout import fan_out
from llmkit.core.config import LLMConfig
from llmkit.core.errors import InvalidRequestError, NotSupportedError, register_secret
from llmkit.core.version import __version__
from llmkit.http.session import SessionOptions
from llmkit.http.transport import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_RESPONSE_BYTES, HTTPTransport

__all__ = ["HTTPProvider"]


class HTTPProvider(BaseLLM):
    """Adds ``self._http``; subclasses set headers through :meth:`_auth_headers`.

    Embeddings: a subclass implements ``_embed_request(texts)`` (one HTTP request);
    ``embed_batch`` splits its input into groups of at most ``embedding_batch_size`` texts
    (config ``extra["embedding_batch_size"]`` overrides), at most ``embedding_batch_chars``
    characters of input, and few enough vectors that the reply, at
    ``_embedding_reply_bytes()`` a vector, stays within half of ``max_response_bytes``;
    sends them through the limiter and keeps the order.
    """

    embedding_batch_size: ClassVar[int] = 256
    embedding_batch_chars: ClassVar[int] = 1_000_000
    embedding_concurrency: ClassVar[int | None] = None

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        key = self.config.key()
        register_secret(key)
        self._http = self._make_transport(self._base_url(), self._auth_headers(key))

    def _base_url(self) -> str:
        return self.config.base_url or ""

    @property
    def attempts_through_transport(self) -> bool:
        return True

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _make_transport(self, base_url: str, headers: dict[str, str]) -> HTTPTransport:
        extra = self.config.extra
        user_headers = extra.get("headers") or {}
        max_response = int(extra.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES))
        # One stream event is held whole in memory: bound it by max_response_bytes too.
        max_event = int(extra.get("max_event_bytes", min(DEFAULT_MAX_EVENT_BYTES, max_response)))
        return HTTPTransport(
            provider=self.provider,
            base_url=base_url,
            headers={"User-Agent": f"llmkit/{__version__}", **user_headers, **headers},
            timeout=self.config.timeout,
            retry=self._retry,
            limiter=self.call_state.limiter,
            metrics=self.call_state.metrics,
            rate_limiter=self._rate_limiter,
            session_options=SessionOptions(
                limit=int(extra.get("connection_limit", max(100, self.config.max_concurrency))),
                verify_ssl=bool(extra.get("verify_ssl", True)),
                trust_env=bool(extra.get("trust_env", False)),
            ),
            max_response_bytes=max_response,
            max_event_bytes=max_event,
            hooks=self.call_state.hooks,
        )

    async def aclose(self) -> None:
        await super().aclose()
        await self._http.aclose()

    # ------------------------------------------------------------------ embeddings

    def _embedding_model(self) -> str:
        return str(self.config.extra.get("embedding_model") or self.model)

    async def _embed_request(self, texts: list[str]) -> list[list[float]]:
        raise NotSupportedError(
            f"{type(self).__name__} does not support embeddings", provider=self.provider
        )

    async def embed(self, text: str) -> list[float]:
        if not isinstance(text, str):
            raise InvalidRequestError("embed takes one string; use embed_batch for a list")
        return (await self.embed_batch([text]))[0]

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        items = _check_texts(texts)
        if not items:
            return []
        groups = self._embedding_groups(items)
        if len(groups) == 1:
            return await self._embed_request(groups[0])
        concurrency = min(self.config.max_concurrency, self.embedding_concurrency or len(groups))
        results = await fan_out(self._embed_request, groups, concurrency=concurrency)
        return [vec for group in results for vec in group]  # type: ignore[union-attr]

    def _embedding_reply_bytes(self) -> int | None:
        """Expected reply bytes per vector (None: unknown, batches sized by count only)."""
        return None

    def _embedding_groups(self, items: list[str]) -> list[list[str]]:
        extra = self.config.extra
        size = max(1, int(extra.get("embedding_batch_size", self.embedding_batch_size)))
        per_vector = self._embedding_reply_bytes()
        if per_vector:
            size = max(1, min(size, self._http.max_response_bytes // (2 * per_vector)))
        max_chars = max(1, int(extra.get("embedding_batch_chars", self.embedding_batch_chars)))
        groups: list[list[str]] = []
        group: list[str] = []
        chars = 0
        for text in items:
            if group and (len(group) >= size or chars + len(text) > max_chars):
                groups.append(group)
                group, chars = [], 0
            group.append(text)
            chars += len(text)
        groups.append(group)
        return groups
