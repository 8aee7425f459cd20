"""OpenAI chat-completions streams: SSE events decoded into :class:`StreamChunk` objects
(one per choice, built without per-chunk validation), the light text-only path of
``generate_stream``, and tool-call assembly per choice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from llmkit.core.errors import StreamError
from llmkit.core.tools import tool_call
from llmkit.core.types import (
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    new_chunk,
    normalize_finish_reason,
)
from llmkit.http.error_mapping import error_from_payload
from llmkit.http.streaming import SSEEvent

from .response import SHAPE_ERRORS, parse_usage

__all__ = [
    "ToolCallAssembler",
    "decode_event",
    "is_done",
    "parse_stream_event",
    "parse_stream_text",
]

_DONE = b"[DONE]"


def is_done(ev: SSEEvent) -> bool:
    return ev.raw == _DONE


def decode_event(ev: SSEEvent, provider: str) -> dict[str, Any] | None:
    """The event's JSON object; ``None`` for the [DONE] marker and empty events. Error
    events raise their typed error (a :class:`StreamError` unless the body says more)."""
    raw = ev.raw
    if raw == _DONE or not raw or raw.isspace():
        return None
    obj = ev.json()
    if type(obj) is not dict:
        raise StreamError(f"unexpected stream event: {ev.data[:200]!r}", provider=provider)
    if "error" in obj or ev.event == "error":
        raise error_from_payload(obj, status=None, provider=provider)
    return obj


def _shape_error(ev: SSEEvent, provider: str, exc: Exception) -> StreamError:
    return StreamError(
        f"unexpected stream event ({type(exc).__name__}): {ev.data[:200]!r}", provider=provider
    )


def _optional_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise TypeError(f"text delta is {type(value).__name__}")


def _tool_call_deltas(raw: Any) -> list[ToolCallDelta]:
    out = []
    for i, tc in enumerate(raw):
        fn = tc.get("function") or {}
        out.append(
            ToolCallDelta(
                index=tc.get("index", i),
                id=tc.get("id"),
                name=fn.get("name"),
                arguments=fn.get("arguments") or "",
            )
        )
    return out


_NO_DELTA: dict[str, Any] = {}


def _chunk(c: dict[str, Any], obj: dict[str, Any], usage: Usage | None) -> StreamChunk:
    delta = c.get("delta") or _NO_DELTA
    content = delta.get("content")
    if type(content) is not str:
        content = _optional_text(content) or ""
    reasoning = delta.get("reasoning_content")
    if reasoning is None:
        reasoning = delta.get("reasoning")
    if type(reasoning) is not str:
        reasoning = _optional_text(reasoning) or ""
    refusal = delta.get("refusal")
    if refusal is not None and type(refusal) is not str:
        raise TypeError("refusal is not a string")
    tool_calls = delta.get("tool_calls")
    finish = c.get("finish_reason")
    logprobs = c.get("logprobs")
    index = c.get("index", 0)
    if type(index) is not int:
        raise TypeError("choice index is not an int")
    return new_chunk(
        content,
        reasoning,
        refusal,
        _tool_call_deltas(tool_calls) if tool_calls else [],
        None if finish is None else normalize_finish_reason(finish),
        usage,
        index,
        logprobs.get("content") if logprobs else None,
        obj,
    )


def parse_stream_event(
    ev: SSEEvent, provider: str
) -> StreamChunk | list[StreamChunk] | None:
    """The chunk of one SSE event: one per choice (a list when an event carries several),
    ``None`` for the [DONE] marker and empty events. A usage-only event (no choices) is a
    chunk with just ``usage``. :class:`StreamError` for an event that is not a chunk."""
    try:
        obj = decode_event(ev, provider)
        if obj is None:
            return None
        raw_usage = obj.get("usage")
        usage = parse_usage(raw_usage) if raw_usage else None
        choices = obj.get("choices")
        if not choices:
            if usage is None:
                return None
            return StreamChunk(usage=usage, raw=obj)
        if len(choices) == 1:
            return _chunk(choices[0], obj, usage)
        last = len(choices) - 1
        return [_chunk(c, obj, usage if i == last else None) for i, c in enumerate(choices)]
    except SHAPE_ERRORS as exc:
        raise _shape_error(ev, provider, exc) from None


def parse_stream_text(ev: SSEEvent, provider: str) -> tuple[str, Usage | None] | None:
    """Only choice 0's text delta and the usage of one SSE event (the light path of text
    streams; the other choices of an ``n > 1`` stream are skipped)."""
    try:
        obj = decode_event(ev, provider)
        if obj is None:
            return None
        usage = obj.get("usage")
        choices = obj.get("choices")
        text = None
        if choices:
            choice = choices[0]
            if choice.get("index", 0) != 0 or len(choices) > 1:
                choice = next((c for c in choices if c.get("index", 0) == 0), None)
            if choice is not None:
                delta = choice.get("delta")
                if delta:
                    text = delta.get("content")
                    if text is not None and type(text) is not str:
                        raise TypeError("content is not a string")
        return text or "", (parse_usage(usage) if usage else None)
    except SHAPE_ERRORS as exc:
        raise _shape_error(ev, provider, exc) from None


class ToolCallAssembler:
    """Joins streamed tool-call deltas into complete :class:`ToolCall` objects, per choice.

    Deltas of one call share its ``index``; a delta that brings a new ``id`` to an index
    whose call is complete (its arguments are a whole JSON value) starts a new call there,
    as servers do that stream each call whole under ``index: 0`` (Ollama's
    OpenAI-compatible endpoint). A repeated id, or an id on a call still being written,
    continues that call. Calls come out in the order they started."""

    def __init__(self) -> None:
        # choice -> the calls in start order; choice -> index -> position of its open call
        self._calls: dict[int, list[dict[str, Any]]] = {}
        self._open: dict[int, dict[int, int]] = {}

    def add(self, deltas: Sequence[ToolCallDelta], choice: int = 0) -> None:
        calls = self._calls.setdefault(choice, [])
        open_at = self._open.setdefault(choice, {})
        for d in deltas:
            pos = open_at.get(d.index)
            call = calls[pos] if pos is not None else None
            if call is None or (d.id and call["id"] and d.id != call["id"] and _complete(call)):
                call = {"id": "", "name": "", "arguments": []}
                open_at[d.index] = len(calls)
                calls.append(call)
            if d.id:
                call["id"] = d.id
            if d.name:
                call["name"] = d.name
            if d.arguments:
                call["arguments"].append(d.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self, choice: int = 0) -> list[ToolCall]:
        """The calls of ``choice`` assembled so far."""
        return [
            tool_call(c["id"], c["name"], "".join(c["arguments"]))
            for c in self._calls.get(choice, ())
        ]

    def pop(self, choice: int) -> list[ToolCall]:
        """The complete calls of ``choice`` (its stream finished), forgotten here."""
        calls = self.calls(choice)
        self._calls.pop(choice, None)
        self._open.pop(choice, None)
        return calls


def _complete(call: dict[str, Any]) -> bool:
    text = "".join(call["arguments"])
    if not text.strip():
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
