"""Responses API streams: the typed SSE events (``response.output_text.delta``,
``response.function_call_arguments.delta``, ``response.reasoning_summary_text.delta``,
``response.completed``, ...) as :class:`StreamChunk` objects or text, with function calls
assembled per item. ``response.failed`` and ``error`` events raise their typed errors; the
stream ends with ``response.completed``, ``response.incomplete`` or ``response.failed``
(the transport raises :class:`StreamError` when the body ends before one of them).

Servers send subsets of the events (llama.cpp: no ``sequence_number`` or ``output_index``,
no ``function_call_arguments.done``): a call is known from its ``output_item.added`` or
``output_item.done`` item, and the terminal response's ``output`` completes what the
deltas left out."""

from __future__ import annotations

from typing import Any

import orjson

from llmkit.core.errors import StreamError
from llmkit.core.types import StreamChunk, ToolCall, ToolCallDelta, Usage, new_chunk
from llmkit.http.error_mapping import error_from_payload
from llmkit.http.streaming import SSEEvent

from .response import SHAPE_ERRORS, failed_error, finish_reason, parse_usage, tool_call

__all__ = ["TERMINAL_EVENTS", "ResponseEvents", "decode", "is_last"]

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TEXT = "response.output_text.delta"
_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_loads = orjson.loads


def is_last(ev: SSEEvent) -> bool:
    """True for the terminal event (by its ``event:`` name, or its data's ``type`` where a
    server sends no names)."""
    kind = ev.event
    if kind != "message":
        return kind in TERMINAL_EVENTS
    try:
        obj = _loads(ev.raw)
    except orjson.JSONDecodeError:
        return False
    return type(obj) is dict and obj.get("type") in TERMINAL_EVENTS


def decode(ev: SSEEvent, provider: str) -> dict[str, Any] | None:
    """The event's JSON object (``None`` for an empty event); an ``error`` event raises its
    typed error (a :class:`StreamError` unless its code says more)."""
    raw = ev.raw
    if not raw.strip():
        return None
    obj = ev.json()
    if type(obj) is not dict:
        raise StreamError(f"unexpected stream event: {ev.data[:200]!r}", provider=provider)
    if obj.get("type") == "error" or ev.event == "error":
        inner = obj.get("error")
        err: dict[str, Any] = inner if isinstance(inner, dict) else obj
        payload = {"error": {"message": err.get("message") or "error event in the stream",
                             "code": err.get("code"), "param": err.get("param")}}
        raise error_from_payload(payload, status=None, provider=provider)
    return obj


def _chunk(
    obj: dict[str, Any], *, delta: str = "", reasoning: str = "", refusal: str | None = None,
    tool_calls: list[ToolCallDelta] | None = None, finish_reason: str | None = None,
    usage: Usage | None = None, completed: list[ToolCall] | None = None,
) -> StreamChunk:
    chunk = new_chunk(delta, reasoning, refusal, tool_calls or [], finish_reason, usage, 0, None, obj)
    if completed:
        chunk.completed_tool_calls = completed
    return chunk


class ResponseEvents:
    """The state of one stream: its function calls (by item id) and the response id."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.calls: dict[str, list[Any]] = {}  # item id -> [index, call_id, name, [args]]
        self.response_id: str | None = None

    # ------------------------------------------------------------ typed chunks

    def chunk(self, ev: SSEEvent) -> StreamChunk | None:
        try:
            raw = ev.raw
            if ev.event == _TEXT:  # the hot path: one decode, one chunk
                obj = _loads(raw)
                delta = obj["delta"]
                if type(delta) is not str:
                    raise TypeError("delta is not a string")
                return new_chunk(delta, "", None, [], None, None, 0, obj.get("logprobs") or None, obj)
            obj = decode(ev, self.provider)
            if obj is None:
                return None
            return self._event(obj)
        except SHAPE_ERRORS as exc:
            raise StreamError(
                f"unexpected stream event ({type(exc).__name__}): {ev.data[:200]!r}",
                provider=self.provider,
            ) from None

    def _event(self, obj: dict[str, Any]) -> StreamChunk | None:
        kind = obj.get("type")
        if kind == _TEXT:
            return _chunk(obj, delta=_text(obj["delta"]))
        if kind in _REASONING:
            return _chunk(obj, reasoning=_text(obj["delta"]))
        if kind == "response.refusal.delta":
            return _chunk(obj, refusal=_text(obj["delta"]))
        if kind == "response.output_item.added":
            item = obj["item"]
            if item.get("type") == "function_call":
                return self._call_started(obj, item)
            return None
        if kind == "response.function_call_arguments.delta":
            call = self.calls.get(obj.get("item_id") or "")
            if call is None:
                return None
            delta = _text(obj["delta"])
            call[3].append(delta)
            return _chunk(obj, tool_calls=[ToolCallDelta(index=call[0], arguments=delta)])
        if kind == "response.output_item.done":
            item = obj["item"]
            if item.get("type") == "function_call":
                return self._call_done(obj, item)
            return None
        if kind in TERMINAL_EVENTS:
            return self._terminal(obj)
        if kind == "response.created":
            rid = (obj.get("response") or {}).get("id")
            self.response_id = rid if type(rid) is str else None
        return None

    def _call_started(self, obj: dict[str, Any], item: dict[str, Any]) -> StreamChunk:
        key = str(item.get("id") or item.get("call_id") or len(self.calls))
        index = len(self.calls)
        call_id, name = str(item.get("call_id") or ""), str(item.get("name") or "")
        self.calls[key] = [index, call_id, name, []]
        args = _text(item.get("arguments") or "")
        if args:
            self.calls[key][3].append(args)
        delta = ToolCallDelta(index=index, id=call_id, name=name, arguments=args)
        return _chunk(obj, tool_calls=[delta])

    def _call_done(self, obj: dict[str, Any], item: dict[str, Any]) -> StreamChunk | None:
        """A call whose arguments were not (all) streamed gets the rest as one delta."""
        key = str(item.get("id") or item.get("call_id") or "")
        call = self.calls.get(key)
        if call is None:  # never announced: the whole call in one delta
            return self._call_started(obj, item)
        final = _text(item.get("arguments") or "")
        sent = "".join(call[3])
        if final == sent or not final.startswith(sent):
            return None
        rest = final[len(sent):]
        call[3].append(rest)
        return _chunk(obj, tool_calls=[ToolCallDelta(index=call[0], arguments=rest)])

    def completed_calls(self, response: dict[str, Any]) -> list[ToolCall]:
        items = [i for i in response.get("output") or () if i.get("type") == "function_call"]
        if items:
            return [tool_call(i) for i in items]
        return [
            tool_call({"call_id": c[1], "name": c[2], "arguments": "".join(c[3])})
            for c in sorted(self.calls.values(), key=lambda c: c[0])
        ]

    def _terminal(self, obj: dict[str, Any]) -> StreamChunk:
        response = obj.get("response") or {}
        if obj.get("type") == "response.failed" or response.get("status") == "failed":
            raise failed_error(response, self.provider)
        calls = self.completed_calls(response)
        return _chunk(
            obj,
            finish_reason=finish_reason(response, bool(calls)) or "stop",
            usage=parse_usage(response.get("usage")) or Usage(),
            completed=calls or None,
        )

    # ------------------------------------------------------------ text only

    def text(self, ev: SSEEvent) -> tuple[str, Usage | None] | None:
        """``(text delta, usage)`` of one event for ``generate_stream``; None for the rest."""
        try:
            if ev.event == _TEXT:
                delta = _loads(ev.raw)["delta"]
                if type(delta) is not str:
                    raise TypeError("delta is not a string")
                return delta, None
            obj = decode(ev, self.provider)
            if obj is None:
                return None
            kind = obj.get("type")
            if kind == _TEXT:
                return _text(obj["delta"]), None
            if kind in TERMINAL_EVENTS:
                response = obj.get("response") or {}
                if kind == "response.failed" or response.get("status") == "failed":
                    raise failed_error(response, self.provider)
                return "", parse_usage(response.get("usage"))
            return None
        except SHAPE_ERRORS as exc:
            raise StreamError(
                f"unexpected stream event ({type(exc).__name__}): {ev.data[:200]!r}",
                provider=self.provider,
            ) from None


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"text delta is {type(value).__name__}")
    return value
