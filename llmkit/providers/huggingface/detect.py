"""Which API a Hugging Face ``base_url`` speaks: the router (known from the configuration),
or, read once from ``GET /info``, TGI's messages API, TGI's ``/generate`` (before 1.4), or a
plain OpenAI-compatible server. :class:`ServerDetection` also keeps TGI's ``/info`` and
the limits it states."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from llmkit.core.errors import LLMError
from llmkit.http.transport import HTTPTransport
from llmkit.providers.huggingface.tgi import TGILimits

__all__ = ["ServerDetection"]


class ServerDetection:
    """The API of one instance's server: ``router``, ``openai``, ``tgi`` or ``tgi-chat``,
    resolved on first use by one shared probe however many calls start at once."""

    def __init__(self, http: HTTPTransport, extra: dict[str, Any], timeout: float, api: str | None) -> None:
        self._http = http
        self._explicit = extra.get("api")
        self._timeout = timeout
        self.api: str | None = api
        self.tgi_info: dict[str, Any] | None = None
        self.limits = TGILimits()
        self._probe: tuple[asyncio.AbstractEventLoop, asyncio.Future[str]] | None = None

    async def resolve(self) -> str:
        """The API to speak; in the TGI modes (and ``auto``) ``/info`` is read once first,
        by one shared task however many calls start at once."""
        if self.api is not None:
            return self.api
        loop = asyncio.get_running_loop()
        probe = self._probe
        if probe is None or probe[0] is not loop:
            task: asyncio.Future[str] = loop.create_task(self._detect())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._probe = probe = (loop, task)
        try:
            api = await asyncio.shield(probe[1])
        except BaseException:
            if self._probe is probe and probe[1].done():
                self._probe = None  # probe again next time
            raise
        self.api = api
        return api

    async def _detect(self) -> str:
        explicit = self._explicit
        try:
            info = await self._http.request(
                "GET", "info", retry=False, timeout=min(self._timeout, 10.0)
            )
        except LLMError as exc:
            if exc.status in (400, 404, 405, 422):  # no /info: limits unknown
                return str(explicit) if explicit in ("tgi", "tgi-chat") else "openai"
            raise
        is_tgi = isinstance(info, dict) and ("model_id" in info or "max_total_tokens" in info)
        if is_tgi:
            assert isinstance(info, dict)
            self.tgi_info = info
            self.limits = TGILimits.of(info)
        if explicit in ("tgi", "tgi-chat"):
            return str(explicit)
        if not is_tgi:
            return "openai"
        m = re.match(r"(\d+)\.(\d+)", str(info.get("version") or ""))
        if m and (int(m.group(1)), int(m.group(2))) < (1, 4):
            return "tgi"
        return "tgi-chat"
