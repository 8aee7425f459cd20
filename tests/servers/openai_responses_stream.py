"""The SSE stream of ``POST /v1/responses`` (``stream: true``): typed events, each framed
as ``event: <type>`` + ``data: <json>`` (no ``[DONE]``), numbered by ``sequence_number``,
in the order OpenAI sends them::

    response.created, response.in_progress,
    [reasoning item: output_item.added, reasoning_summary_part.added,
     reasoning_summary_text.delta..., reasoning_summary_text.done,
     reasoning_summary_part.done, reasoning_text.delta..., reasoning_text.done,
     output_item.done]
    message item: output_item.added, content_part.added, output_text.delta...
                  (refusal.delta...), output_text.done (refusal.done),
                  content_part.done, output_item.done
    | function_call item: output_item.added, function_call_arguments.delta...,
                  function_call_arguments.done, output_item.done
    response.completed | response.incomplete | response.failed

The stream faults of :mod:`tests.servers.base` apply: ``truncate_stream`` ends the stream
before the terminal event, ``error_event`` sends an ``error`` event and ends it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .base import JSON, EventWriter, split_pieces
from .openai_server import STREAM_ERROR_MESSAGE

if TYPE_CHECKING:
    from .openai_responses import ResponsePlan, ResponsesEndpoint


class ResponsesEventWriter(EventWriter):
    """SSE with an ``event:`` line per event; ``sequence_number`` set as sent."""

    def frame(self, obj: JSON) -> bytes:
        kind = obj.get("type", "message") if isinstance(obj, dict) else "message"
        return b"event: " + str(kind).encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"

    async def event(self, obj: dict[str, Any]) -> bool:
        obj["sequence_number"] = self.count
        return await self.send(obj)


def _split(text: str, parts: int = 3) -> list[str]:
    if len(text) < parts:
        return [text]
    step = -(-len(text) // parts)
    return [text[i : i + step] for i in range(0, len(text), step)]


def _reasoning_events(ep: ResponsesEndpoint, plan: ResponsePlan, index: int) -> list[dict[str, Any]]:
    item_id = ep.item_id(plan, "rs")
    text = plan.reasoning or ""
    out: list[dict[str, Any]] = [{"type": "response.output_item.added", "output_index": index,
                                  "item": ep.reasoning_item(plan, False)}]
    where = {"item_id": item_id, "output_index": index}
    if plan.summary:
        part = {"type": "summary_text", "text": ""}
        out.append({"type": "response.reasoning_summary_part.added", **where,
                    "summary_index": 0, "part": part})
        out.extend({"type": "response.reasoning_summary_text.delta", **where, "summary_index": 0,
                    "delta": piece} for piece in split_pieces(text))
        out.append({"type": "response.reasoning_summary_text.done", **where, "summary_index": 0,
                    "text": text})
        out.append({"type": "response.reasoning_summary_part.done", **where, "summary_index": 0,
                    "part": {"type": "summary_text", "text": text}})
    if plan.reasoning_content:
        out.extend({"type": "response.reasoning_text.delta", **where, "content_index": 0,
                    "delta": piece} for piece in split_pieces(text))
        out.append({"type": "response.reasoning_text.done", **where, "content_index": 0,
                    "text": text})
    out.append({"type": "response.output_item.done", "output_index": index,
                "item": ep.reasoning_item(plan, True)})
    return out


def _message_events(ep: ResponsesEndpoint, plan: ResponsePlan, index: int) -> list[dict[str, Any]]:
    item_id = ep.item_id(plan, "msg")
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    out: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index,
         "item": ep.message_item(plan, False)},
        {"type": "response.content_part.added", **where, "part": ep.part(plan, "")},
    ]
    if plan.refusal is not None:
        out.extend({"type": "response.refusal.delta", **where, "delta": piece}
                   for piece in split_pieces(plan.refusal))
        out.append({"type": "response.refusal.done", **where, "refusal": plan.refusal})
        full = plan.refusal
    else:
        full = plan.text or ""
        out.extend({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
                   for piece in split_pieces(full))
        out.append({"type": "response.output_text.done", **where, "text": full, "logprobs": []})
    out.append({"type": "response.content_part.done", **where, "part": ep.part(plan, full)})
    out.append({"type": "response.output_item.done", "output_index": index,
                "item": ep.message_item(plan, True)})
    return out


def _call_events(ep: ResponsesEndpoint, plan: ResponsePlan, index: int) -> list[dict[str, Any]]:
    assert plan.call is not None
    item_id = ep.item_id(plan, "fc")
    _call_id, name, args = plan.call
    out: list[dict[str, Any]] = [{"type": "response.output_item.added", "output_index": index,
                                  "item": ep.call_item(plan, False)}]
    out.extend({"type": "response.function_call_arguments.delta", "item_id": item_id,
                "output_index": index, "delta": piece} for piece in _split(args))
    out.append({"type": "response.function_call_arguments.done", "item_id": item_id,
                "output_index": index, "name": name, "arguments": args})
    out.append({"type": "response.output_item.done", "output_index": index,
                "item": ep.call_item(plan, True)})
    return out


def stream_events(ep: ResponsesEndpoint, plan: ResponsePlan) -> list[dict[str, Any]]:
    """Every event of the stream, in order, without sequence numbers."""
    start = ep.response(plan, final=False)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": dict(start)},
    ]
    index = 0
    if plan.reasoning is not None:
        events.extend(_reasoning_events(ep, plan, index))
        index += 1
    if plan.call is not None:
        events.extend(_call_events(ep, plan, index))
    elif plan.status != "failed":
        events.extend(_message_events(ep, plan, index))
    final = ep.response(plan)
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete",
                "failed": "response.failed"}[plan.status]
    events.append({"type": terminal, "response": final})
    return events


async def stream_response(
    request: web.Request, ep: ResponsesEndpoint, plan: ResponsePlan
) -> web.StreamResponse:
    holder: list[ResponsesEventWriter] = []

    def error_event(message: str | None) -> JSON:
        return {"type": "error", "code": "server_error", "message": message or STREAM_ERROR_MESSAGE,
                "param": None, "sequence_number": holder[0].count}

    writer = ResponsesEventWriter(
        request, framing="sse", make_error=error_event,
        make_content=lambda text: {
            "type": "response.output_text.delta", "item_id": ep.item_id(plan, "msg"),
            "output_index": 0, "content_index": 0, "delta": text, "logprobs": [],
            "sequence_number": holder[0].count},
    )
    holder.append(writer)
    await writer.start()
    *events, final = stream_events(ep, plan)
    for event in events:
        if not await writer.event(event):
            return await writer.finish()
    final["sequence_number"] = writer.count
    response = await writer.finish(final)  # a fault not fired yet fires before the final event
    if writer.count == len(events) and not writer.stopped:
        ep.store(plan, final["response"])
    return response
