"""The state machine behind the OpenAI Batch API test server: stored files, batches, a
controllable clock, input validation and line execution (see :mod:`.openai_batch_server`).

A batch moves ``validating -> in_progress -> finalizing -> completed`` on the server's
clock (:class:`FastClock`: virtual seconds that may run faster than real ones, or be
advanced by a test). Nothing runs in the background: a batch catches up with the clock
whenever it is looked at (any request that reads or cancels it, or the list), executing
the lines whose time has come, in a shuffled order, by calling the app's own chat /
embeddings / completions handlers in-process. Timings and limits are fields of
:class:`BatchState`.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from . import spec_validation
from .base import CREATED_TS, JSON, JSON_KEY, ServerState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED_ERROR = {
    "code": "batch_cancelled",
    "message": "This request could not be executed before the batch was cancelled.",
}
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
SUPPORTED_URLS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions")


@dataclass
class FastClock:
    """Virtual Unix time: ``speed`` virtual seconds per real second, plus what
    :meth:`advance` added."""

    speed: float = 1.0
    start: float = float(CREATED_TS)
    _offset: float = 0.0
    _t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return self.start + (time.monotonic() - self._t0) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
        }
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
        return out


@dataclass
class StoredBatch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    expires_at: int
    status: str = "validating"
    lines: list[dict[str, Any]] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # execution order (line indexes)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> output line
    succeeded: int = 0
    failed: int = 0
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, completed_at, ...
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(
        default_factory=lambda: {"input": 0, "cached": 0, "output": 0, "reasoning": 0}
    )

    def body(self) -> dict[str, Any]:
        validated = self.status not in ("validating", "failed")
        out: dict[str, Any] = {
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at,
            "expires_at": self.expires_at,
        }
        for key in ("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                    "expired_at", "cancelling_at", "cancelled_at"):
            out[key] = self.times.get(key)
        if self.model is not None:
            out["model"] = self.model
        out["request_counts"] = {
            "total": len(self.lines) if validated else 0,
            "completed": self.succeeded,
            "failed": self.failed,
        }
        u = self.usage
        out["usage"] = {
            "input_tokens": u["input"], "input_tokens_details": {"cached_tokens": u["cached"]},
            "output_tokens": u["output"], "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
            "total_tokens": u["input"] + u["output"],
        } if validated else None
        out["metadata"] = self.metadata
        return out


def line_ref(name: str) -> tuple[str, str]:
    """The schema of a batch file line (``BatchRequestInput`` / ``BatchRequestOutput``,
    transcribed from OpenAI's Batch guide into the ``openai`` schema set)."""
    return ("openai", name)


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


@dataclass
class BatchState:
    """Files, batches, the clock, timings (virtual seconds) and limits of one server."""

    clock: FastClock = field(default_factory=FastClock)
    validating_seconds: float = 2.0
    seconds_per_request: float = 0.01
    finalizing_seconds: float = 2.0
    cancelling_seconds: float = 2.0
    completion_window_seconds: float = 86400.0
    max_requests: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    seed: int = 0
    # custom_id -> the HTTP status its request gets (the provider's error body for it)
    line_status: dict[str, int] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    batches: dict[str, StoredBatch] = field(default_factory=dict)
    _counter: int = 0

    # -- ids and files
    def new_id(self, prefix: str, width: int) -> str:
        self._counter += 1
        return prefix + hashlib.sha256(f"{prefix}{self._counter}".encode()).hexdigest()[:width]

    def add_file(self, filename: str, purpose: str, data: bytes, expires_after: int | None) -> StoredFile:
        now = int(self.clock.now())
        if expires_after is None and purpose == "batch":
            expires_after = 30 * 86400  # batch files expire after 30 days by default
        f = StoredFile(self.new_id("file-", 24), filename, purpose, data, now,
                       now + expires_after if expires_after else None)
        self.files[f.id] = f
        return f

    def created(self, status: str | None = None) -> list[StoredBatch]:
        """Batches in creation order (with ``status`` only)."""
        return [b for b in self.batches.values() if status is None or b.status == status]

    # -- validation
    def validate(self, batch: StoredBatch, server: ServerState) -> list[dict[str, Any]]:
        data = self.files[batch.input_file_id].data
        raw_lines = [ln for ln in data.split(b"\n")]  # JSONL: lines end at "\n" only
        if raw_lines and not raw_lines[-1].strip():
            raw_lines.pop()
        if not any(ln.strip() for ln in raw_lines):
            return [_error("empty_file", "The batch input file is empty.", None)]
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        lines: list[dict[str, Any]] = []
        for lineno, raw in enumerate(raw_lines, 1):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                errors.append(_error("invalid_json_line", "This line is not parseable as valid JSON.", lineno))
                continue
            problem = spec_validation.schema_errors(line_ref("BatchRequestInput"), obj)
            if problem is not None:
                if not spec_validation.exemption():
                    server.spec_violations.append(f"batch input {batch.input_file_id} line {lineno}: {problem}")
                errors.append(_error("invalid_request", f"Invalid batch input line: {problem}", lineno))
                continue
            if obj["url"] != batch.endpoint:
                errors.append(_error(
                    "url_mismatch",
                    f"The provided URL '{obj['url']}' does not match the batch endpoint '{batch.endpoint}'.",
                    lineno, "url"))
            if obj["custom_id"] in seen:
                errors.append(_error(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of another request. "
                    "The custom_id parameter must be unique for each request in a batch.",
                    lineno, "custom_id"))
            seen.add(obj["custom_id"])
            model = obj["body"].get("model")
            if isinstance(model, str):
                models.add(model)
                if len(models) > 1:
                    errors.append(_error(
                        "model_mismatch",
                        "The provided model does not match the model of the other requests "
                        "in this batch: a batch holds requests to one model only.",
                        lineno, "body.model"))
            lines.append(obj)
        if len(raw_lines) > self.max_requests:
            errors.append(_error(
                "too_many_tasks",
                f"The batch input file holds {len(raw_lines)} requests, more than the "
                f"{self.max_requests} a batch may hold.", None))
        if not errors:
            batch.lines = lines
            batch.model = next(iter(models), None)
        return errors[:1000]

    # -- execution
    async def execute(self, app: web.Application, server: ServerState, batch: StoredBatch,
                      handlers: dict[str, Handler], index: int) -> None:
        line = batch.lines[index]
        body = line["body"]
        endpoint = spec_validation.endpoint_for("openai", "POST", line["url"])
        status = self.line_status.get(line["custom_id"])
        if status is not None:
            from .openai_server import openai_status_body

            answer: JSON = openai_status_body(status, None)
        else:
            problem = spec_validation.schema_errors(endpoint.request if endpoint else None, body)
            if problem is not None and not spec_validation.exemption():
                server.spec_violations.append(f"batch line {line['custom_id']!r}: {problem}")
            request = make_mocked_request("POST", line["url"], app=app)
            request[JSON_KEY] = body
            resp = await handlers[line["url"]](request)
            assert isinstance(resp, web.Response) and isinstance(resp.body, bytes)
            status, answer = resp.status, orjson.loads(resp.body)
        if endpoint is not None:
            problem = spec_validation.schema_errors(
                endpoint.response if status < 400 else endpoint.error, answer)
            if problem is not None:
                server.spec_violations.append(f"batch output {line['custom_id']!r}: {problem}")
        out = {
            "id": self.new_id("batch_req_", 32), "custom_id": line["custom_id"],
            "response": {"status_code": status, "request_id": self.new_id("req_", 32), "body": answer},
            "error": None,
        }
        batch.results[index] = out
        if status < 400:
            batch.succeeded += 1
            usage = answer.get("usage") or {}
            batch.usage["input"] += usage.get("prompt_tokens", 0)
            batch.usage["cached"] += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            batch.usage["output"] += usage.get("completion_tokens", 0)
            batch.usage["reasoning"] += (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
        else:
            batch.failed += 1

    def finish(self, batch: StoredBatch, server: ServerState, unfinished: dict[str, str] | None) -> None:
        """Write the output and error files (each in a shuffled order); lines never run
        get ``unfinished`` as their error."""
        ok: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        for index, line in enumerate(batch.lines):
            out = batch.results.get(index)
            if out is None:
                if unfinished is None:
                    continue
                out = {"id": self.new_id("batch_req_", 32), "custom_id": line["custom_id"],
                       "response": None, "error": dict(unfinished)}
            (ok if out["response"] and out["response"]["status_code"] < 400 else bad).append(out)
        rng = random.Random(f"{self.seed}:{batch.id}:files")
        for lines, attr, suffix in ((ok, "output_file_id", "output"), (bad, "error_file_id", "error")):
            if not lines:
                continue
            rng.shuffle(lines)
            for out in lines:
                problem = spec_validation.schema_errors(line_ref("BatchRequestOutput"), out)
                if problem is not None:
                    server.spec_violations.append(f"batch {suffix} line: {problem}")
            data = b"".join(orjson.dumps(out) + b"\n" for out in lines)
            f = self.add_file(f"{batch.id}_{suffix}.jsonl", "batch_output", data, None)
            setattr(batch, attr, f.id)

    async def catch_up(self, app: web.Application, server: ServerState, batch: StoredBatch,
                       handlers: dict[str, Handler]) -> None:
        """Bring ``batch`` to where the clock says it is."""
        now = self.clock.now()
        if batch.status == "validating" and now >= batch.created_at + self.validating_seconds:
            at = int(batch.created_at + self.validating_seconds)
            errors = self.validate(batch, server)
            if errors:
                batch.status, batch.errors = "failed", errors
                batch.times["failed_at"] = at
                return
            batch.status = "in_progress"
            batch.times["in_progress_at"] = at
            batch.order = list(range(len(batch.lines)))
            random.Random(f"{self.seed}:{batch.id}").shuffle(batch.order)
        if batch.status == "in_progress":
            start = batch.times["in_progress_at"]
            horizon = min(now, batch.expires_at)
            total = len(batch.lines)
            spr = self.seconds_per_request
            target = total if spr <= 0 else min(total, max(0, int((horizon - start) / spr)))
            while len(batch.results) < target:
                await self.execute(app, server, batch, handlers, batch.order[len(batch.results)])
            if len(batch.results) == total:
                batch.status = "finalizing"
                batch.times["finalizing_at"] = int(min(max(start + total * spr, start), now))
            elif now >= batch.expires_at:
                batch.status = "expired"
                batch.times["expired_at"] = batch.expires_at
                self.finish(batch, server, EXPIRED_ERROR)
                return
        if batch.status == "finalizing" and now >= batch.times["finalizing_at"] + self.finalizing_seconds:
            batch.status = "completed"
            batch.times["completed_at"] = int(batch.times["finalizing_at"] + self.finalizing_seconds)
            self.finish(batch, server, None)
        if batch.status == "cancelling" and now >= batch.times["cancelling_at"] + self.cancelling_seconds:
            batch.status = "cancelled"
            batch.times["cancelled_at"] = int(batch.times["cancelling_at"] + self.cancelling_seconds)
            self.finish(batch, server, CANCELLED_ERROR)
