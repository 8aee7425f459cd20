"""The handler of ``POST /v1/chat/completions`` (JSON or an SSE stream whose choices'
chunks are interleaved), built on the planning in :mod:`tests.servers.openai_chat`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .base import (
    CREATED_TS,
    STATE_KEY,
    EventWriter,
    ServerState,
    get_json,
    json_response,
    split_pieces,
)
from .openai_chat import (
    OPENAI_DIALECT,
    ChatDialect,
    ChatErrors,
    ChatPlan,
    ChoicePlan,
    ToolCallPlan,
    chat_completion_body,
    plan_chat,
    token_logprobs,
    usage_body,
)


def _split_arguments(args: str, parts: int = 3) -> list[str]:
    if len(args) < parts:
        return [args]
    step = -(-len(args) // parts)
    return [args[i : i + step] for i in range(0, len(args), step)]


def _call_deltas(plan: ChatPlan, calls: list[ToolCallPlan]) -> list[dict[str, Any]]:
    """The deltas of a choice's tool calls: each call's id and name, then its arguments in
    pieces, at its own index; or (:attr:`ChatDialect.whole_tool_calls_at_index0`) each call
    whole in one delta, all under index 0."""
    out: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        head = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        if plan.dialect.whole_tool_calls_at_index0:
            head["function"]["arguments"] = call.arguments
            out.append({"tool_calls": [{"index": 0, **head}]})
            continue
        out.append({"tool_calls": [{"index": i, **head}]})
        for piece in _split_arguments(call.arguments):
            out.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    return out


def _choice_deltas(plan: ChatPlan, c: ChoicePlan) -> list[tuple[dict[str, Any], Any]]:
    """(delta, logprobs) of one choice, in order, before its finishing chunk."""
    out: list[tuple[dict[str, Any], Any]] = []
    first: dict[str, Any] = {"role": "assistant", "content": None if c.tool_calls else "", "refusal": None}
    calls = _call_deltas(plan, c.tool_calls)
    if calls and not plan.dialect.whole_tool_calls_at_index0:
        first["tool_calls"] = calls.pop(0)["tool_calls"]  # the first call's id and name
    out.append((first, None))
    if plan.reasoning_field and c.reasoning:
        out.extend(({plan.reasoning_field: piece}, None) for piece in split_pieces(c.reasoning))
    if c.tool_calls:
        out.extend((d, None) for d in calls)
    elif c.refusal is not None:
        out.extend(({"refusal": piece}, None) for piece in split_pieces(c.refusal))
    else:
        for piece in split_pieces(c.text or ""):
            lp = {"content": token_logprobs(piece, plan.top_logprobs), "refusal": None} if plan.logprobs else None
            out.append(({"content": piece}, lp))
    return out


async def stream_chat(
    request: web.Request, plan: ChatPlan, body: dict[str, Any], errors: ChatErrors
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    completion_id = f"chatcmpl-{state.next_id():08d}"
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": CREATED_TS,
            "model": plan.model,
            "choices": choices,
        }
        if plan.dialect.chunk_fingerprint:
            out["service_tier"] = "default"
            out["system_fingerprint"] = "fp_llmkit_test"
        if include_usage:
            out["usage"] = None
        return out

    def delta(d: dict[str, Any], i: int = 0, finish: str | None = None, lp: Any = None) -> dict[str, Any]:
        return {"index": i, "delta": d, "logprobs": lp, "finish_reason": finish}

    writer = EventWriter(
        request,
        framing="sse",
        make_error=errors.stream_error,
        make_content=lambda text: chunk([delta({"content": text})]),
        terminator=errors.sse_prefix + b"[DONE]\n\n",
        sse_prefix=errors.sse_prefix,
    )
    await writer.start()
    # the choices' chunks interleaved, as servers generating them together send them
    per_choice = [
        [delta(d, i, None, lp) for d, lp in _choice_deltas(plan, c)]
        + [{**delta({}, i, c.finish_reason), **plan.dialect.choice_extra}]
        for i, c in enumerate(plan.choices)
    ]
    longest = max(len(items) for items in per_choice)
    events = [
        chunk([items[step]]) for step in range(longest) for items in per_choice if step < len(items)
    ]
    final = None
    if include_usage:
        final = chunk([])
        final["usage"] = usage_body(plan)
    if errors.reshape is not None:
        events = [errors.reshape(event) for event in events]
        final = errors.reshape(final) if final is not None else None
    for event in events:
        if not await writer.send(event):
            return await writer.finish()
    return await writer.finish(final)


def make_chat_handler(
    state: ServerState, errors: ChatErrors, dialect: ChatDialect = OPENAI_DIALECT
) -> Callable[[web.Request], Any]:
    prompt_cache: set[str] = set()  # prefixes this server has seen (prompt caching)

    async def handler(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        plan = plan_chat(state, body, errors, prompt_cache, dialect)
        if isinstance(plan, web.Response):
            return plan
        if body.get("stream") is True:
            return await stream_chat(request, plan, body, errors)
        out = chat_completion_body(plan, f"chatcmpl-{state.next_id():08d}")
        return json_response(errors.reshape(out) if errors.reshape is not None else out)

    return handler
