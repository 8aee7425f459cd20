"""Shared machinery for the local HTTP test servers.

Every provider app is an ordinary ``aiohttp.web.Application`` built around a
``ServerState``. A middleware installed by :func:`install_middleware` records each
request, tracks concurrency, applies per-request latency, enforces the API key and
applies queued :class:`Fault` objects. Streaming handlers write through
:class:`EventWriter`, which applies the stream-level faults.

Fault kinds and their parameters (``Fault`` fields):

========================  ==============================================================
kind                      behaviour
========================  ==============================================================
``status``                respond with ``status`` (default 500). ``body``: dict/list is
                          sent as JSON, str/bytes verbatim (``content_type``, default
                          ``text/plain`` for str/bytes); ``None`` means the provider's
                          own error body for that status (``message`` overrides the text).
                          ``headers`` are added (e.g. ``Retry-After``, ``retry-after-ms``).
``quota``                 429 with the OpenAI ``insufficient_quota`` body, no Retry-After.
``html_error``            ``status`` (default 502) with a text/html proxy error page.
``malformed_json``        200, ``application/json``, body ``body`` or ``{"id": "x", ``.
``loading``               503 ``{"error": "Model <m> is currently loading",
                          "estimated_time": <estimated_time or state value>}``.
``reset_before_headers``  abort the TCP connection without sending anything.
``slow_headers``          sleep ``delay`` seconds, then handle the request normally.
``reset_mid_body``        non-stream: headers with the full Content-Length, half of the
                          body, then abort. Stream: abort after ``after`` events.
``slow_body``             non-stream: headers + half the body, sleep ``delay``, rest.
                          Stream: sleep ``delay`` after ``after`` events, then go on.
``huge``                  non-stream: 200 with a provider-shaped body of ``size`` bytes
                          (a giant content string), written in 64 KiB chunks. Stream: after
                          ``after`` events emit one event whose content is ``size`` chars.
``truncate_stream``       stream only: stop after ``after`` events, omit the terminator /
                          final event, close cleanly.
``malformed_line``        stream only: after ``after`` events emit a line that is not valid
                          JSON (``body`` overrides it), then continue normally.
``error_event``           stream only: after ``after`` events emit the provider's mid-stream
                          error (``message`` overrides the text) and end the stream.
========================  ==============================================================

Matching: a fault matches when ``path`` is ``None`` or a prefix of the request path and
``method`` is ``None`` or equal to the request method. Stream-only kinds only match
streaming requests (every other kind matches either). The first matching fault in the
queue (FIFO) is used; each use decrements ``times`` and the fault leaves the queue when it
reaches zero. Faults are applied before the API-key check, latency (``state.delay``)
before faults.
"""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import math
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict

from . import spec_validation

JSON = Any

STREAM_ONLY_KINDS = frozenset({"truncate_stream", "malformed_line", "error_event"})
BODY_KINDS = frozenset({"reset_mid_body", "slow_body", "huge"})
IMMEDIATE_KINDS = frozenset(
    {
        "status",
        "quota",
        "html_error",
        "malformed_json",
        "loading",
        "reset_before_headers",
        "slow_headers",
    }
)
FAULT_KINDS = STREAM_ONLY_KINDS | BODY_KINDS | IMMEDIATE_KINDS

HTML_ERROR_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
DEFAULT_MALFORMED_JSON = b'{"id": "x", '
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
CREATED_AT = "2025-01-01T00:00:00.000000Z"
CREATED_TS = 1735689600
CLIENT_MAX_SIZE = 256 * 1024 * 1024


def new_application() -> web.Application:
    """An ``aiohttp`` application that accepts large request bodies."""
    return web.Application(client_max_size=CLIENT_MAX_SIZE)


# --------------------------------------------------------------------------- state


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    json: JSON
    body: bytes

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass
class Fault:
    """A fault to inject into matching requests; see the module docstring."""

    kind: str
    path: str | None = None
    times: int = 1
    method: str | None = None
    status: int | None = None
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delay: float = 0.0
    after: int = 0
    size: int = 0
    message: str | None = None
    estimated_time: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.times < 1:
            raise ValueError("times must be >= 1")

    @property
    def stream_only(self) -> bool:
        return self.kind in STREAM_ONLY_KINDS

    def matches(self, method: str, path: str, streaming: bool) -> bool:
        if self.path is not None and not path.startswith(self.path):
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return streaming or not self.stream_only


@dataclass
class ServerState:
    """Mutable state shared by a test and the server it talks to.

    Provider defaults (``models``) are filled in by the ``make_*_app`` factories when
    left as ``None``.
    """

    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    faults: list[Fault] = field(default_factory=list)
    api_key: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    reply: str | None = None
    tool_arguments: dict[str, Any] | str | None = None
    context_length: int = 4096
    embedding_dim: int = 8
    models: list[str] | None = None
    hub_models: list[dict[str, Any]] | None = None
    loading: bool = False
    loading_estimated_time: float = 20.0
    healthy: bool = True
    faults_applied: list[Fault] = field(default_factory=list)
    record_requests: bool = True
    total_requests: int = 0
    # Spec validation (tests/servers/spec_validation.py): what the server received or sent
    # that the provider's specification does not allow; ``serve()`` fails the test on exit
    # when this is not empty. ``validate_spec=False`` only for benchmarks.
    spec_violations: list[str] = field(default_factory=list)
    validate_spec: bool = True
    # What the server wrote to its own log (vLLM: the request fields it ignored).
    log: list[str] = field(default_factory=list)
    # Parallel tool calls: each entry (arguments as a dict, or a str sent verbatim) is one
    # call of the chosen tool, in order; None: one call (``tool_arguments``).
    parallel_tool_arguments: list[Any] | None = None
    _counter: int = 0

    # -- faults
    def add_fault(self, kind: str, **params: Any) -> Fault:
        """Queue ``Fault(kind, **params)`` and return it."""
        fault = Fault(kind, **params)
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str, streaming: bool) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.matches(method, path, streaming):
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[i]
                self.faults_applied.append(fault)
                return fault
        return None

    # -- recorded requests
    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    @property
    def last_request(self) -> RecordedRequest:
        if not self.requests:
            raise LookupError("no request recorded")
        return self.requests[-1]

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def next_id(self) -> int:
        self._counter += 1
        return self._counter

    def reset(self) -> None:
        """Forget recorded requests, counters and queued faults."""
        self.requests.clear()
        self.faults.clear()
        self.faults_applied.clear()
        self.max_in_flight = self.in_flight


# --------------------------------------------------------------------------- provider spec


@dataclass(frozen=True)
class ProviderSpec:
    """Provider-specific behaviour the shared middleware needs."""

    name: str  # also the spec_validation flavour unless the app sets SPEC_FLAVOUR_KEY
    error_body: Callable[[int, str | None], JSON]
    auth_error: Callable[[str | None], web.Response]
    is_stream: Callable[[str, JSON], bool]
    huge_template: Callable[[str, JSON], tuple[bytes, bytes]]
    response_headers: Callable[[ServerState], dict[str, str]] | None = None


STATE_KEY: web.AppKey[ServerState] = web.AppKey("llmkit_test_state", ServerState)
SPEC_KEY: web.AppKey[ProviderSpec] = web.AppKey("llmkit_test_spec", ProviderSpec)
SPEC_FLAVOUR_KEY: web.AppKey[str] = web.AppKey("llmkit_test_spec_flavour", str)
_INVALID = object()
_RequestKey: Any = getattr(web, "RequestKey", None)
JSON_KEY: Any = _RequestKey("llmkit_json", object) if _RequestKey else "llmkit_json"
FAULT_KEY: Any = _RequestKey("llmkit_fault", object) if _RequestKey else "llmkit_fault"


def get_json(request: web.Request) -> JSON:
    """The parsed JSON body, or :data:`INVALID_JSON` when it did not parse."""
    return request.get(JSON_KEY, _INVALID)


def json_ok(body: JSON) -> bool:
    return body is not _INVALID


def get_fault(request: web.Request) -> Fault | None:
    fault: Fault | None = request.get(FAULT_KEY)
    return fault


def json_response(
    body: JSON, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _fault_body_response(fault: Fault, status: int, spec: ProviderSpec) -> web.Response:
    body = fault.body
    if body is None:
        payload = orjson.dumps(spec.error_body(status, fault.message))
        ctype = fault.content_type or "application/json"
    elif isinstance(body, dict | list):
        payload = orjson.dumps(body)
        ctype = fault.content_type or "application/json"
    else:
        payload = body.encode() if isinstance(body, str) else body
        ctype = fault.content_type or "text/plain"
    resp = web.Response(body=payload, status=status, headers=fault.headers)
    resp.content_type = ctype.split(";")[0].strip()
    return resp


def openai_error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def ollama_error_body(message: str) -> dict[str, Any]:
    """``{"error": "<message>"}``."""
    return {"error": message}


def tgi_error_body(message: str, error_type: str = "validation") -> dict[str, Any]:
    """``{"error": "<message>", "error_type": "<error_type>"}``."""
    return {"error": message, "error_type": error_type}


def quota_body() -> dict[str, Any]:
    return openai_error_body(QUOTA_MESSAGE, "insufficient_quota", None, "insufficient_quota")


def status_fault(
    status: int,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    path: str | None = None,
    times: int = 1,
    message: str | None = None,
) -> Fault:
    """A ``status`` fault (``body=None`` -> the provider's own error body)."""
    return Fault(
        "status",
        path=path,
        times=times,
        status=status,
        body=body,
        headers=dict(headers or {}),
        message=message,
    )


def rate_limit_fault(
    retry_after: float | None = None,
    *,
    retry_after_ms: float | None = None,
    path: str | None = None,
    times: int = 1,
) -> Fault:
    """429 with the provider's rate-limit body and optional Retry-After headers."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        headers["retry-after-ms"] = f"{retry_after_ms:g}"
    return Fault("status", path=path, times=times, status=429, headers=headers)


# --------------------------------------------------------------------------- middleware


async def _abort(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Any write after the abort raises ConnectionError, which aiohttp treats as a
    # client disconnect.
    return web.Response(status=500)


async def _write_partial(
    request: web.Request, resp: web.Response, fault: Fault
) -> web.StreamResponse:
    body = resp.body
    data = body if isinstance(body, bytes) else b""
    out = web.StreamResponse(status=resp.status, headers=resp.headers)
    out.content_length = len(data)
    half = max(1, len(data) // 2)
    try:
        await out.prepare(request)
        await out.write(data[:half])
        if fault.kind == "reset_mid_body":
            await asyncio.sleep(0)
            transport = request.transport
            if transport is not None:
                transport.abort()
            return out
        await asyncio.sleep(fault.delay)
        await out.write(data[half:])
    except ConnectionError:
        pass
    return out


async def _write_huge(
    request: web.Request, spec: ProviderSpec, fault: Fault, body: JSON
) -> web.StreamResponse:
    prefix, suffix = spec.huge_template(request.path, body)
    fill = max(0, fault.size - len(prefix) - len(suffix))
    out = web.StreamResponse(status=200)
    out.content_type = "application/json"
    out.content_length = len(prefix) + fill + len(suffix)
    chunk = b"a" * 65536
    try:
        await out.prepare(request)
        await out.write(prefix)
        while fill > 0:
            n = min(fill, len(chunk))
            await out.write(chunk[:n])
            fill -= n
        await out.write(suffix)
    except ConnectionError:
        pass
    return out


def _immediate_response(
    request: web.Request, state: ServerState, spec: ProviderSpec, fault: Fault, body: JSON
) -> web.Response:
    kind = fault.kind
    if kind == "status":
        return _fault_body_response(fault, fault.status or 500, spec)
    if kind == "quota":
        return web.Response(
            body=orjson.dumps(quota_body()),
            status=429,
            content_type="application/json",
            headers=fault.headers,
        )
    if kind == "html_error":
        status = fault.status or 502
        reason = _reason(status)
        page = fault.body if isinstance(fault.body, str | bytes) else None
        text = page or HTML_ERROR_PAGE.format(status=status, reason=reason)
        return web.Response(
            body=text.encode() if isinstance(text, str) else text,
            status=status,
            content_type="text/html",
            headers=fault.headers,
        )
    if kind == "malformed_json":
        raw = fault.body if isinstance(fault.body, str | bytes) else DEFAULT_MALFORMED_JSON
        return web.Response(
            body=raw.encode() if isinstance(raw, str) else raw,
            status=200,
            content_type="application/json",
            headers=fault.headers,
        )
    if kind == "loading":
        model = _model_from(request.path, body)
        est = fault.estimated_time
        if est is None:
            est = state.loading_estimated_time
        return json_response(
            {"error": f"Model {model} is currently loading", "estimated_time": est},
            status=fault.status or 503,
            headers=fault.headers,
        )
    raise AssertionError(kind)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _model_from(path: str, body: JSON) -> str:
    m = re.search(r"/models/(.+?)(?:/pipeline/.*)?$", path)
    if m:
        return m.group(1)
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return str(body["model"])
    return "unknown"


def check_bearer(request: web.Request, key: str) -> tuple[bool, str | None]:
    """(ok, provided_key) for ``Authorization: Bearer <key>``."""
    header = request.headers.get("Authorization")
    if header is None:
        return False, None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer":
        return False, header
    return value == key, value


def install_middleware(app: web.Application, state: ServerState, spec: ProviderSpec) -> None:
    """Attach state/spec to ``app`` and install the recording/fault middleware."""
    app[STATE_KEY] = state
    app[SPEC_KEY] = spec

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        raw = await request.read() if request.body_exists else b""
        body: JSON = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = _INVALID
        request[JSON_KEY] = body
        state.total_requests += 1
        if state.record_requests:
            state.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers=CIMultiDict(request.headers),
                    json=None if body is _INVALID else body,
                    body=raw,
                )
            )
        endpoint = _endpoint(request) if state.validate_spec else None
        if endpoint is not None and body is not _INVALID and endpoint.ignores_unknown_fields:
            ignored = spec_validation.unknown_fields(endpoint.request, body)
            if ignored:  # what vLLM logs, and then does as if they were not there
                state.log.append(
                    "The following fields were present in the request but ignored: "
                    + ", ".join(ignored)
                )
                body = {k: v for k, v in body.items() if k not in ignored}
                request[JSON_KEY] = body
        if endpoint is not None and body is not _INVALID and not spec_validation.exemption():
            problem = spec_validation.schema_errors(endpoint.request, body)
            if problem is not None:
                state.spec_violations.append(f"request {request.method} {request.path}: {problem}")
                return json_response(spec.error_body(400, f"request violates spec: {problem}"), 400)
        state.in_flight += 1
        if state.in_flight > state.max_in_flight:
            state.max_in_flight = state.in_flight
        try:
            if state.delay:
                await asyncio.sleep(state.delay)
            streaming = body is not _INVALID and spec.is_stream(request.path, body)
            fault = state.take_fault(request.method, request.path, streaming)
            if fault is not None:
                if fault.kind == "reset_before_headers":
                    return await _abort(request)
                if fault.kind == "slow_headers":
                    await asyncio.sleep(fault.delay)
                    fault = None
                elif fault.kind in IMMEDIATE_KINDS:
                    return _immediate_response(request, state, spec, fault, body)
            if state.api_key is not None:
                ok, provided = check_bearer(request, state.api_key)
                if not ok:
                    return spec.auth_error(provided)
            request[FAULT_KEY] = fault
            resp = await handler(request)
            if endpoint is not None:
                resp = _checked_response(request, state, spec, endpoint, resp)
            if fault is not None and not resp.prepared and fault.kind in BODY_KINDS:
                if fault.kind == "huge":
                    return await _write_huge(request, spec, fault, body)
                if isinstance(resp, web.Response):
                    return await _write_partial(request, resp, fault)
            return resp
        finally:
            state.in_flight -= 1

    app.middlewares.append(middleware)

    if spec.response_headers is not None:
        extra = spec.response_headers

        async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
            for k, v in extra(state).items():
                response.headers.setdefault(k, v)

        app.on_response_prepare.append(on_prepare)


def _endpoint(request: web.Request) -> spec_validation.Endpoint | None:
    flavour = request.app.get(SPEC_FLAVOUR_KEY) or request.app[SPEC_KEY].name
    return spec_validation.endpoint_for(flavour, request.method, request.path)


def _checked_response(
    request: web.Request,
    state: ServerState,
    spec: ProviderSpec,
    endpoint: spec_validation.Endpoint,
    resp: web.StreamResponse,
) -> web.StreamResponse:
    """``resp`` if its JSON body is what the spec allows for this endpoint and status, else
    a 500 naming the violation (which is also recorded in ``state.spec_violations``)."""
    if resp.prepared or not isinstance(resp, web.Response) or resp.content_type != "application/json":
        return resp
    raw = resp.body
    if not isinstance(raw, bytes) or not raw:
        return resp
    schema = endpoint.response if resp.status < 400 else endpoint.error
    problem = spec_validation.schema_errors(schema, orjson.loads(raw))
    if problem is None:
        return resp
    state.spec_violations.append(f"response {request.method} {request.path}: {problem}")
    return json_response(spec.error_body(500, f"test server response violates spec: {problem}"), 500)


@asynccontextmanager
async def run_server(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` on ``host`` at a free port; yields ``http://host:port``."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=0.5,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        addr = runner.addresses[0]
        yield f"http://{host}:{addr[1]}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- streaming


class EventWriter:
    """Writes SSE or NDJSON events and applies the request's stream-level fault.

    Usage in a handler::

        w = EventWriter(request, framing="sse", ...)
        await w.start()
        for event in events:
            if not await w.send(event):
                break
        return await w.finish(final_event)

    ``send`` returns ``False`` once the stream has been stopped (by a fault or a client
    disconnect). ``finish`` writes ``final`` (if any) and the terminator unless the stream
    was stopped; a fault whose ``after`` was not reached by ``send`` fires in ``finish``.
    """

    def __init__(
        self,
        request: web.Request,
        *,
        framing: Literal["sse", "ndjson"],
        make_error: Callable[[str | None], JSON],
        make_content: Callable[[str], JSON],
        terminator: bytes | None = None,
        sse_prefix: bytes = b"data: ",
        content_type: str | None = None,
        malformed: bytes | None = None,
    ) -> None:
        self.request = request
        self.state = request.app[STATE_KEY]
        self.framing = framing
        self.make_error = make_error
        self.make_content = make_content
        self.terminator = terminator
        self.sse_prefix = sse_prefix
        self.content_type = content_type or (
            "text/event-stream" if framing == "sse" else "application/x-ndjson"
        )
        self.malformed = malformed
        self.fault = get_fault(request)
        self.endpoint = _endpoint(request) if self.state.validate_spec else None
        self.fired = False
        self.stopped = False
        self.count = 0
        self.response = web.StreamResponse(status=200)

    async def _violates_spec(self, obj: JSON) -> bool:
        """Record and report (as the provider's error event, ending the stream) an event
        that the spec does not allow."""
        if self.endpoint is None:
            return False
        problem = spec_validation.schema_errors(self.endpoint.event_schema(obj), obj)
        if problem is None:
            return False
        self.state.spec_violations.append(
            f"stream event {self.request.method} {self.request.path}: {problem}"
        )
        await self._write(self.frame(self.make_error(f"test server event violates spec: {problem}")))
        self.stopped = True
        return True

    def frame(self, obj: JSON) -> bytes:
        data = orjson.dumps(obj)
        if self.framing == "sse":
            return self.sse_prefix + data + b"\n\n"
        return data + b"\n"

    async def start(self, headers: dict[str, str] | None = None) -> None:
        self.response.content_type = self.content_type
        if self.framing == "sse":
            self.response.headers["Cache-Control"] = "no-cache"
        for k, v in (headers or {}).items():
            self.response.headers[k] = v
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)

    async def _write(self, data: bytes) -> bool:
        if self.stopped:
            return False
        try:
            await self.response.write(data)
        except ConnectionError:
            self.stopped = True
            return False
        return True

    async def _fire(self) -> bool:
        """Apply the fault; returns False if the stream must stop."""
        fault = self.fault
        assert fault is not None
        self.fired = True
        kind = fault.kind
        if kind == "truncate_stream":
            self.stopped = True
            return False
        if kind == "error_event":
            await self._write(self.frame(self.make_error(fault.message)))
            self.stopped = True
            return False
        if kind == "reset_mid_body":
            await asyncio.sleep(0)
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            self.stopped = True
            return False
        if kind == "malformed_line":
            if isinstance(fault.body, str | bytes):
                raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
            elif self.malformed is not None:
                raw = self.malformed
            elif self.framing == "sse":
                raw = self.sse_prefix + b'{"id": "x", \n\n'
            else:
                raw = b'{"model": "x", \n'
            return await self._write(raw)
        if kind == "slow_body":
            await asyncio.sleep(fault.delay)
            return not self.stopped
        if kind == "huge":
            return await self._write(self.frame(self.make_content("a" * fault.size)))
        return True

    async def send(self, obj: JSON) -> bool:
        if self.stopped:
            return False
        if self.fault is not None and not self.fired and self.count >= self.fault.after:
            if not await self._fire():
                return False
        if self.count and self.state.chunk_delay:
            await asyncio.sleep(self.state.chunk_delay)
        if await self._violates_spec(obj):
            return False
        ok = await self._write(self.frame(obj))
        if ok:
            self.count += 1
        return ok

    async def send_raw(self, data: bytes) -> bool:
        return await self._write(data)

    async def finish(self, final: JSON = None) -> web.StreamResponse:
        if self.fault is not None and not self.fired and not self.stopped:
            await self._fire()
        if not self.stopped:
            if final is not None and not await self._violates_spec(final):
                await self._write(self.frame(final))
            if self.terminator is not None and not self.stopped:
                await self._write(self.terminator)
        if not (self.fault is not None and self.fault.kind == "reset_mid_body"):
            try:
                await self.response.write_eof()
            except ConnectionError:
                pass
        return self.response


# --------------------------------------------------------------------------- generation


_PIECE_RE = re.compile(r"\s*\S+|\s+$")


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into word-ish pieces (leading whitespace kept) that join back to it."""
    return _PIECE_RE.findall(text)


def count_words(text: str) -> int:
    return len(text.split())


def content_text(content: JSON) -> str:
    """Text of a chat message ``content`` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


def messages_words(messages: Iterable[JSON]) -> int:
    total = 0
    for m in messages:
        if isinstance(m, dict):
            total += count_words(content_text(m.get("content")))
    return total


def truncate_words(text: str, limit: int | None) -> tuple[str, bool]:
    """Keep the first ``limit`` words (original spacing); returns (text, truncated)."""
    if limit is None:
        return text, False
    pieces = split_pieces(text)
    words = [p for p in pieces if p.strip()]
    if len(words) <= limit:
        return text, False
    return "".join(pieces[: max(limit, 0)]), True


def schema_instance(schema: JSON, root: JSON = None, depth: int = 0) -> JSON:
    """A minimal valid instance of a JSON schema (deterministic)."""
    if root is None:
        root = schema
    if not isinstance(schema, dict) or depth > 32:
        return {}
    if "$ref" in schema:
        ref = schema["$ref"]
        target: JSON = root
        if isinstance(ref, str) and ref.startswith("#/"):
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
        return schema_instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return schema_instance((non_null or options)[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            value = schema_instance(sub, root, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    typ = schema.get("type")
    if isinstance(typ, list):
        non_null_types = [t for t in typ if t != "null"]
        typ = non_null_types[0] if non_null_types else "null"
    if typ is None:
        if "properties" in schema:
            typ = "object"
        elif "items" in schema:
            typ = "array"
        else:
            return {}
    if typ == "object":
        props = schema.get("properties") or {}
        out: dict[str, Any] = {}
        for name, sub in props.items():
            out[name] = schema_instance(sub, root, depth + 1)
        for name in schema.get("required") or []:
            out.setdefault(name, "text")
        return out
    if typ == "array":
        item = schema_instance(schema.get("items", {"type": "string"}), root, depth + 1)
        n = max(1, int(schema.get("minItems", 1)))
        return [item for _ in range(n)]
    if typ == "string":
        min_len = int(schema.get("minLength", 0))
        text = "text"
        if min_len > len(text):
            text = text + "x" * (min_len - len(text))
        return text
    if typ == "integer":
        return _bounded(1, schema, integer=True)
    if typ == "number":
        return _bounded(1.5, schema, integer=False)
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return {}


def _bounded(value: float, schema: dict[str, Any], integer: bool) -> Any:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(lo, int | float) and value < lo:
        value = lo + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(hi, int | float) and value > hi:
        value = hi - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return int(value) if integer else float(value)


def embed_text(text: str, dim: int) -> list[float]:
    """Deterministic unit-length float32 vector for ``text``."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for i in range(0, len(digest), 4):
            n = int.from_bytes(digest[i : i + 4], "little")
            values.append(n / 2**31 - 1.0)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array.array("f", [v / norm for v in values]).tolist()


def embed_base64(vector: list[float]) -> str:
    """base64 of the little-endian float32 bytes of ``vector``."""
    arr = array.array("f", vector)
    if arr.itemsize != 4:  # pragma: no cover
        raise RuntimeError("float32 array expected")
    if sys.byteorder != "little":  # pragma: no cover
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode()


def tool_arguments_for(state: ServerState, parameters: JSON) -> tuple[str, JSON]:
    """(JSON text, object) for a tool call's arguments."""
    if isinstance(state.tool_arguments, str):
        try:
            return state.tool_arguments, orjson.loads(state.tool_arguments)
        except orjson.JSONDecodeError:
            return state.tool_arguments, state.tool_arguments
    if state.tool_arguments is not None:
        obj: JSON = state.tool_arguments
    else:
        obj = schema_instance(parameters) if isinstance(parameters, dict) else {}
    return orjson.dumps(obj).decode(), obj
