"""OpenAI's Files and Batch API (``/v1/files``, ``/v1/batches``) beside the OpenAI chat
test server: the same app, so batch lines are answered by the same chat / embeddings /
completions handlers.

Routes: ``POST /v1/files`` (multipart: ``file`` and ``purpose``; ``purpose=batch`` needs a
``.jsonl`` file of at most ``BatchState.max_file_bytes``), ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``,
``POST /v1/batches`` (``CreateBatchRequest``), ``GET /v1/batches`` (newest first,
``limit``/``after``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

Behaviour as OpenAI documents it and as it is seen in practice:

* status ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``; ``failed``
  when validation finds errors (``errors.data``: ``code``, ``message``, ``param``,
  ``line``; codes ``empty_file``, ``invalid_json_line``, ``invalid_request``,
  ``url_mismatch``, ``duplicate_custom_id``, ``model_mismatch``, ``too_many_tasks`` beyond
  ``max_requests``); ``expired`` when the completion window closes first (the output file
  holds what finished, the error file the rest as ``batch_expired``); ``cancelling`` ->
  ``cancelled`` (what finished kept, the rest ``batch_cancelled``).
* ``request_counts`` (``total`` is 0 until validated; expired or cancelled lines are not
  counted as failed); ``usage`` summed over the answered lines.
* Output and error files: one ``{"id", "custom_id", "response": {"status_code",
  "request_id", "body"}, "error"}`` line per request, in a shuffled order; a request the
  endpoint answered with an HTTP error goes to the error file; ``output_file_id`` is null
  when nothing succeeded, ``error_file_id`` when nothing failed.
* ``BatchState.line_status[custom_id] = 500`` makes that line's request fail so.

Time is :class:`~.openai_batch_engine.FastClock`'s (see that module). Requests, responses,
input lines, output lines and each line's body are validated against the spec
(:mod:`.spec_validation`).
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import spec_validation
from .base import ServerState, get_json, json_ok, json_response
from .openai_batch_engine import (
    SUPPORTED_URLS,
    TERMINAL,
    BatchState,
    FastClock,
    Handler,
    StoredBatch,
)
from .openai_server import openai_error

__all__ = ["BatchServerHandle", "BatchState", "FastClock", "add_batch_routes",
           "make_openai_batch_app", "serve_openai_batch"]

BATCH_STATE_KEY: web.AppKey[BatchState] = web.AppKey("llmkit_batch_state", BatchState)


def _form(request_ctype: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    head = f"Content-Type: {request_ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not msg.is_multipart():
        return fields
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _not_found(kind: str, ident: str) -> web.Response:
    what = "File object" if kind == "file" else "batch found with id"
    sep = ": " if kind == "file" else " "
    return openai_error(404, f"No {what}{sep}'{ident}'.", "invalid_request_error", "id", None)


def make_openai_batch_app(state: ServerState | None = None, batch: BatchState | None = None) -> web.Application:
    """The OpenAI test app (chat, embeddings, ...) with the Files and Batch API."""
    from .openai_server import make_openai_app

    state = state if state is not None else ServerState()
    app = make_openai_app(state)
    add_batch_routes(app, state, batch if batch is not None else BatchState())
    return app


def add_batch_routes(app: web.Application, state: ServerState, batch_state: BatchState,
                     prefix: str = "/v1") -> None:
    app[BATCH_STATE_KEY] = batch_state
    bs = batch_state
    handlers: dict[str, Handler] = {}
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "POST" and canonical in SUPPORTED_URLS:
            handlers[canonical] = route.handler  # type: ignore[assignment]

    async def catch_up(batch: StoredBatch) -> None:
        await bs.catch_up(app, state, batch, handlers)

    async def upload(request: web.Request) -> web.Response:
        if request.content_type != "multipart/form-data":
            return openai_error(400, "The request must be multipart/form-data with 'file' and 'purpose'.")
        fields = _form(request.headers["Content-Type"], await request.read())
        form: dict[str, Any] = {}
        if "file" in fields:
            form["file"] = fields["file"][0] or "upload"
        if "purpose" in fields:
            form["purpose"] = fields["purpose"][1].decode("utf-8", "replace")
        anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
        if anchor or seconds:
            exp: dict[str, Any] = {}
            if anchor:
                exp["anchor"] = anchor[1].decode()
            if seconds:
                exp["seconds"] = int(seconds[1]) if seconds[1].isdigit() else seconds[1].decode()
            form["expires_after"] = exp
        unknown = set(fields) - {"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"}
        for name in sorted(unknown):
            form[name] = fields[name][1].decode("utf-8", "replace")
        problem = spec_validation.schema_errors(("openai", "CreateFileRequest"), form)
        if problem is not None and not spec_validation.exemption():
            state.spec_violations.append(f"request POST {request.path}: {problem}")
            return openai_error(400, f"request violates spec: {problem}")
        if "file" not in form:
            return openai_error(400, "Missing required parameter: 'file'.", param="file",
                                code="missing_required_parameter")
        data = fields["file"][1]
        purpose = form.get("purpose")
        if purpose == "batch":
            if not form["file"].endswith(".jsonl"):
                return openai_error(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
            if len(data) > bs.max_file_bytes:
                return openai_error(
                    400,
                    f"File is too large: {len(data)} bytes; files for the Batch API may hold at "
                    f"most {bs.max_file_bytes} bytes.", param="file")
        secs = form.get("expires_after", {}).get("seconds")
        f = bs.add_file(form["file"], str(purpose), data, secs if isinstance(secs, int) else None)
        return json_response(f.body())

    async def list_files(request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        files = [f for f in reversed(bs.files.values()) if purpose is None or f.purpose == purpose]
        data = [f.body() for f in files]
        return json_response({"object": "list", "data": data, "has_more": False,
                              "first_id": data[0]["id"] if data else "",
                              "last_id": data[-1]["id"] if data else ""})

    async def get_file(request: web.Request) -> web.Response:
        f = bs.files.get(request.match_info["file_id"])
        return json_response(f.body()) if f else _not_found("file", request.match_info["file_id"])

    async def file_content(request: web.Request) -> web.Response:
        f = bs.files.get(request.match_info["file_id"])
        if f is None:
            return _not_found("file", request.match_info["file_id"])
        return web.Response(body=f.data, content_type="application/octet-stream")

    async def delete_file(request: web.Request) -> web.Response:
        f = bs.files.pop(request.match_info["file_id"], None)
        if f is None:
            return _not_found("file", request.match_info["file_id"])
        return json_response({"id": f.id, "object": "file", "deleted": True})

    async def create_batch(request: web.Request) -> web.Response:
        body = get_json(request)
        if not json_ok(body) or not isinstance(body, dict):
            return openai_error(400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in body:
                return openai_error(400, f"Missing required parameter: '{name}'.", param=name,
                                    code="missing_required_parameter")
        f = bs.files.get(body["input_file_id"])
        if f is None:
            return openai_error(400, f"Invalid 'input_file_id': '{body['input_file_id']}'. No such file.",
                                param="input_file_id")
        if f.purpose != "batch":
            return openai_error(400, f"The file {f.id} was not uploaded with purpose 'batch'.",
                                param="input_file_id")
        if body["endpoint"] not in SUPPORTED_URLS:
            return openai_error(400, f"Invalid value for 'endpoint': {body['endpoint']!r} is not "
                                "supported by this server.", param="endpoint")
        now = int(bs.clock.now())
        batch = StoredBatch(
            id=bs.new_id("batch_", 32), input_file_id=f.id, endpoint=body["endpoint"],
            completion_window=body["completion_window"], metadata=body.get("metadata"),
            created_at=now, expires_at=int(now + bs.completion_window_seconds))
        bs.batches[batch.id] = batch
        await catch_up(batch)
        return json_response(batch.body())

    async def list_batches(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return openai_error(400, "Invalid 'limit': expected an integer.", param="limit")
        if not 1 <= limit <= 100:
            return openai_error(400, "Invalid 'limit': must be between 1 and 100.", param="limit")
        batches = list(reversed(bs.batches.values()))
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        page = batches[:limit]
        for b in page:
            await catch_up(b)
        out: dict[str, Any] = {"object": "list", "data": [b.body() for b in page],
                               "has_more": len(batches) > limit}
        if page:
            out["first_id"], out["last_id"] = page[0].id, page[-1].id
        return json_response(out)

    async def get_batch(request: web.Request) -> web.Response:
        b = bs.batches.get(request.match_info["batch_id"])
        if b is None:
            return _not_found("batch", request.match_info["batch_id"])
        await catch_up(b)
        return json_response(b.body())

    async def cancel_batch(request: web.Request) -> web.Response:
        b = bs.batches.get(request.match_info["batch_id"])
        if b is None:
            return _not_found("batch", request.match_info["batch_id"])
        await catch_up(b)
        if b.status in TERMINAL and b.status != "cancelled":
            return openai_error(400, f"Cannot cancel a batch with status '{b.status}'.")
        if b.status not in ("cancelling", "cancelled"):
            b.status = "cancelling"
            b.times["cancelling_at"] = int(bs.clock.now())
            await catch_up(b)
        return json_response(b.body())

    app.router.add_post(f"{prefix}/files", upload)
    app.router.add_get(f"{prefix}/files", list_files)
    app.router.add_get(f"{prefix}/files/{{file_id}}", get_file)
    app.router.add_get(f"{prefix}/files/{{file_id}}/content", file_content)
    app.router.add_delete(f"{prefix}/files/{{file_id}}", delete_file)
    app.router.add_post(f"{prefix}/batches", create_batch)
    app.router.add_get(f"{prefix}/batches", list_batches)
    app.router.add_get(f"{prefix}/batches/{{batch_id}}", get_batch)
    app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", cancel_batch)


@dataclass
class BatchServerHandle:
    """A running OpenAI server with the Batch API: ``url`` ends in ``/v1``; ``batch`` holds
    the files, batches and the clock."""

    url: str
    base_url: str
    state: ServerState
    batch: BatchState


@asynccontextmanager
async def serve_openai_batch(
    state: ServerState | None = None, batch: BatchState | None = None
) -> AsyncIterator[BatchServerHandle]:
    from . import serve

    batch = batch if batch is not None else BatchState()
    async with serve(lambda st: make_openai_batch_app(st, batch), state, "/v1") as handle:
        yield BatchServerHandle(handle.url, handle.base_url, handle.state, batch)
