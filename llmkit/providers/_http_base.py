"""Base for providers that talk HTTP: one transport sharing the instance's limiter,
retry policy and metrics."""

from __future__ import annotations

from typing import Any

from llmkit.base import BaseLLM
from llmkit.config import LLMConfig
from llmkit.errors import register_secret
from llmkit.session import SessionOptions
from llmkit.transport import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_RESPONSE_BYTES, HTTPTransport

__all__ = ["HTTPProvider"]


class HTTPProvider(BaseLLM):
    """Adds ``self._http``; subclasses set headers through :meth:`_auth_headers`."""

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        key = self.config.key()
        register_secret(key)
        self._http = self._make_transport(self._base_url(), self._auth_headers(key))

    def _base_url(self) -> str:
        return self.config.base_url or ""

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
            headers={"User-Agent": "llmkit/0.1", **user_headers, **headers},
            timeout=self.config.timeout,
            retry=self._retry,
            limiter=self._limiter,
            metrics=self._metrics,
            session_options=SessionOptions(
                limit=int(extra.get("connection_limit", max(100, self.config.max_concurrency))),
                verify_ssl=bool(extra.get("verify_ssl", True)),
                trust_env=bool(extra.get("trust_env", False)),
            ),
            max_response_bytes=max_response,
            max_event_bytes=max_event,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await super().aclose()
