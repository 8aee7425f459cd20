"""OpenAI's Files and Batch API over an OpenAI(-compatible) instance's own transport (its
base URL, key, timeouts and retries): upload, create, retrieve, list, cancel, download;
the request body of one row exactly as ``chat`` would send it, and the row's outcome from
one line of an output or error file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson

from llmkit.base import BaseLLM
from llmkit.core.errors import (
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    NotSupportedError,
    ServerError,
)
from llmkit.core.options import ClientOptions
from llmkit.http.error_mapping import error_from_payload
from llmkit.jobs.source import JobRow
from llmkit.providers.openai.chat import parse_chat_response
from llmkit.providers.openai.compatible import OpenAICompatible

__all__ = ["ENDPOINT", "BatchAPI"]

ENDPOINT = "/v1/chat/completions"
_CALL_KWARGS = ("tools", "tool_choice", "response_format")


class BatchAPI:
    """The Batch API of the server behind ``llm``; :class:`NotSupportedError` for a
    provider that does not speak OpenAI's wire format."""

    def __init__(self, llm: BaseLLM) -> None:
        if not isinstance(llm, OpenAICompatible):
            raise NotSupportedError(
                f"provider {llm.provider!r} has no Batch API: mode='provider' needs an OpenAI "
                "or OpenAI-compatible server that implements /files and /batches",
                provider=llm.provider,
            )
        self.llm = llm
        self.http = llm._http
        self.provider = llm.provider

    # -- requests
    async def probe(self) -> None:
        """:class:`NotSupportedError` when the server answers that it has no Batch API."""
        try:
            await self.http.request("GET", "batches", params={"limit": 1})
        except LLMError as exc:
            if exc.status in (404, 405, 501):
                raise NotSupportedError(
                    f"the server at {self.http.base_url} has no Batch API (GET /batches "
                    f"answered {exc.status}); use mode='live'",
                    provider=self.provider, status=exc.status,
                ) from None
            raise

    async def upload(self, filename: str, data: bytes) -> str:
        boundary = "llmkit-" + os.urandom(12).hex()
        body = b"".join([
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        client = ClientOptions(extra_headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = await self.http.request("POST", "files", upload=lambda: body, client=client)
        return str(answer["id"])

    async def create(self, input_file_id: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        """Create the batch of an uploaded file, once: a request whose answer was lost
        (a timeout, a dropped connection, a 5xx) is looked up before it is sent again."""
        body = {"input_file_id": input_file_id, "endpoint": ENDPOINT,
                "completion_window": "24h", "metadata": dict(metadata)}
        attempts = 1 + max(0, self.llm.config.max_retries)
        for attempt in range(attempts):
            try:
                batch: dict[str, Any] = await self.http.request("POST", "batches", json=body, retry=False)
                return batch
            except (LLMTimeoutError, LLMConnectionError, ServerError):
                found = await self.find(input_file_id)
                if found is not None:
                    return found
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    async def find(self, input_file_id: str) -> dict[str, Any] | None:
        """The batch created from ``input_file_id``, if there is one (newest first)."""
        after: str | None = None
        for _ in range(50):  # at most 5,000 batches back
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            page = await self.http.request("GET", "batches", params=params)
            for batch in page.get("data") or []:
                if batch.get("input_file_id") == input_file_id:
                    return dict(batch)
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]
        return None

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = await self.http.request("GET", f"batches/{batch_id}")
        return batch

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = await self.http.request("POST", f"batches/{batch_id}/cancel")
        return batch

    async def content(self, file_id: str) -> bytes:
        data: bytes = await self.http.request("GET", f"files/{file_id}/content", parse="bytes")
        return data

    # -- lines
    def request_line(self, row: JobRow, custom_id: str) -> bytes:
        """The batch input line of ``row``: the body ``chat`` would send."""
        options = dict(row.options)
        kwargs = {k: options.pop(k, None) for k in _CALL_KWARGS}
        body, _model_cls, _client = self.llm._request(row.messages, options, **kwargs)
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return orjson.dumps(line) + b"\n"

    def outcome(self, line: dict[str, Any]) -> Any:
        """A reply (``ChatResponse``), an :class:`LLMError`, or an ``{"type", "message"}``
        error of one output or error file line."""
        response = line.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            status, body = response["status_code"], response.get("body")
            if status < 400:
                try:
                    return parse_chat_response(body, self.llm.model, self.provider)
                except LLMError as exc:
                    return exc
            return error_from_payload(body, status=status, provider=self.provider, model=self.llm.model)
        raw_error = line.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        return {"type": str(error.get("code") or "batch_error"),
                "message": str(error.get("message") or "the batch did not run this request")}
