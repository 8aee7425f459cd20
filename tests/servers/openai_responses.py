"""``POST /v1/responses`` and ``GET /v1/responses/{id}`` of the OpenAI test server (the
Responses API), mounted by :mod:`tests.servers.openai_server` beside chat completions.

Behaviour (all deterministic, validated against ``CreateResponse`` / ``Response`` /
``ResponseStreamEvent`` of ``openai/openapi-subset.json`` like every other endpoint):

* ``input`` is a string (one user message) or a list of items: messages (``role`` +
  string or ``input_text`` parts), ``function_call`` and ``function_call_output`` items
  (an output whose ``call_id`` no earlier ``function_call`` has is a 400, as OpenAI
  answers). ``instructions`` count as a system message (not carried to later turns).
* Reply text: ``state.reply`` or ``"Echo: "`` + the last user message (or, after a
  ``function_call_output``, the output). ``tools`` + ``tool_choice`` pick a function call
  as on chat completions (:func:`tests.servers.openai_chat.choose_tool`): a
  ``function_call`` item with ``call_id``, arguments ``state.tool_arguments`` or a minimal
  schema instance. ``text.format`` ``json_schema`` / ``json_object``: a minimal instance (unless
  ``state.reply`` is set: a model that does not follow the format).
  A last user message starting with ``refuse`` gets a refusal part.
* Reasoning: with ``reasoning.effort`` (other than ``none``) or a model whose name contains
  ``reasoner``, a ``reasoning`` item comes first, text ``"The user wrote N words (effort
  E)."``; its ``summary`` is filled when ``reasoning.summary`` is set, its ``content``
  (``reasoning_text``, as vLLM and llama.cpp send) for a ``reasoner`` model. Its words count
  in ``output_tokens_details.reasoning_tokens``.
* ``max_output_tokens`` cuts the reply to that many words: ``status: "incomplete"``,
  ``incomplete_details.reason: "max_output_tokens"`` (a stream ends with
  ``response.incomplete``).
* A last user message ``fail`` or ``fail:<code>`` gives ``status: "failed"`` with
  ``error.code`` (default ``server_error``); a stream ends with ``response.failed``.
* ``store`` (default true) keeps the response: ``previous_response_id`` continues from its
  input and output (its words count as ``cached_tokens``), ``GET /v1/responses/{id}``
  returns it. An unknown (or unstored) id is a 400 ``previous_response_not_found``.
* Usage: input_tokens = words of the whole context, output_tokens = words of the output,
  ``input_tokens_details.cached_tokens`` also counts leading items seen before.
* ``stream: true``: SSE with ``event:`` lines, see :mod:`tests.servers.openai_responses_stream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    ServerState,
    content_text,
    count_words,
    get_json,
    json_ok,
    json_response,
    messages_words,
    openai_error_body,
    tool_arguments_for,
    truncate_words,
)
from .openai_chat import (
    MISSING_MODEL,
    REFUSAL_TEXT,
    ChatErrors,
    _cached_words,
    choose_tool,
    structured_reply,
)


@dataclass
class ResponsePlan:
    """What one response says, before it is written as a body or as events."""

    id: str
    body: dict[str, Any]
    context: list[dict[str, Any]]  # messages-like view of everything the model saw
    cached_tokens: int
    reasoning: str | None = None
    summary: bool = False
    reasoning_content: bool = False
    text: str | None = None
    refusal: str | None = None
    call: tuple[str, str, str] | None = None  # (call_id, name, arguments)
    status: str = "completed"
    incomplete: str | None = None
    error: dict[str, str] | None = None
    ids: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- input


def _item_messages(item: JSON) -> list[dict[str, Any]]:
    """The messages-like view of one input item (what the echo and word counts use)."""
    if not isinstance(item, dict):
        return []
    kind = item.get("type", "message")
    if kind == "message":
        return [{"role": item.get("role"), "content": content_text(item.get("content"))}]
    if kind == "function_call":
        return [{"role": "assistant", "call_id": item.get("call_id"), "content": ""}]
    if kind == "function_call_output":
        return [{"role": "tool", "call_id": item.get("call_id"),
                 "content": content_text(item.get("output"))}]
    return []


def _context(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw or []
    out: list[dict[str, Any]] = []
    for item in items:
        out.extend(_item_messages(item))
    return out


def _last(context: list[dict[str, Any]], roles: tuple[str, ...]) -> dict[str, Any] | None:
    for m in reversed(context):
        if m.get("role") in roles:
            return m
    return None


def _reasoning(body: dict[str, Any], model: str, context: list[dict[str, Any]]) -> str | None:
    options = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    effort = options.get("effort")
    if "reasoner" not in model and (effort is None or effort == "none"):
        return None
    user = _last(context, ("user",))
    words = count_words(user["content"]) if user else 0
    return f"The user wrote {words} words (effort {effort or 'medium'})."


# --------------------------------------------------------------------------- planning


class ResponsesEndpoint:
    """The stored responses of one server and the planning of new ones."""

    def __init__(self, state: ServerState, errors: ChatErrors) -> None:
        self.state = state
        self.errors = errors
        self.stored: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
        self.seen: set[str] = set()  # prefixes for cached_tokens

    def _bad(self, message: str, param: str | None, code: str | None) -> web.Response:
        return self.errors.bad_request(message, param, code)

    def plan(self, body: JSON) -> ResponsePlan | web.Response:
        state = self.state
        if not json_ok(body) or not isinstance(body, dict):
            return self.errors.invalid_json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._bad("Missing required parameter: 'model'.", "model",
                             "missing_required_parameter")
        if model == MISSING_MODEL:
            return self.errors.model_not_found(model)
        previous: list[dict[str, Any]] = []
        prev_id = body.get("previous_response_id")
        if prev_id is not None:
            if prev_id not in self.stored:
                return self._bad(f"Previous response with id '{prev_id}' not found.",
                                 "previous_response_id", "previous_response_not_found")
            previous = self.stored[prev_id][0]
        new = _context(body)
        if not new:
            return self._bad("Invalid 'input': empty array. Expected an array with minimum "
                             "length 1, but got an empty array instead.", "input", "empty_array")
        calls = {m.get("call_id") for m in previous + new if m.get("role") == "assistant"}
        for m in new:
            if m.get("role") == "tool" and m.get("call_id") not in calls:
                return self._bad(f"No tool call found for function call output with call_id "
                                 f"{m.get('call_id')}.", "input", None)
        instructions = body.get("instructions")
        system = [{"role": "system", "content": instructions}] if isinstance(instructions, str) else []
        context = system + previous + new
        input_tokens = messages_words(context)
        if input_tokens > state.context_length:
            return self.errors.context_length(state.context_length, input_tokens)
        cached = max(messages_words(previous), _cached_words(self.seen, previous + new))
        rid = f"resp_{state.next_id():08d}"
        plan = ResponsePlan(rid, body, context, cached)
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        plan.reasoning = _reasoning(body, model, context)
        plan.summary = plan.reasoning is not None and reasoning.get("summary") is not None
        plan.reasoning_content = plan.reasoning is not None and "reasoner" in model
        self._fill_output(plan, body, context)
        return plan

    def _fill_output(self, plan: ResponsePlan, body: dict[str, Any], context: list[dict[str, Any]]) -> None:
        state = self.state
        user = _last(context, ("user",))
        user_text = user["content"] if user else ""
        if user_text.startswith("fail"):
            code = user_text.partition(":")[2].strip() or "server_error"
            plan.status, plan.error = "failed", {"code": code, "message": "The model failed to generate a response."}
            return
        last = context[-1] if context else {}
        tool_view = [{"role": m["role"], "content": m["content"]} for m in context]
        chosen = choose_tool(body.get("tools"), body.get("tool_choice"), tool_view)
        if chosen is not None:
            args, _ = tool_arguments_for(state, chosen[1])
            plan.call = (f"call_{state.next_id():08d}", chosen[0], args)
            return
        if user_text.lower().startswith("refuse"):
            plan.refusal = REFUSAL_TEXT
            return
        text_opts = body.get("text") if isinstance(body.get("text"), dict) else {}
        fmt = text_opts.get("format")
        text = state.reply  # when set, whatever the format (a model that does not follow it)
        if text is None and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            text = structured_reply({"type": "json_schema", "json_schema": {"schema": fmt.get("schema")}})
        elif text is None and isinstance(fmt, dict) and fmt.get("type") == "json_object":
            text = structured_reply(fmt)
        if text is None:
            source = last if last.get("role") == "tool" else user
            text = "Echo: " + (source or {}).get("content", "")
        limit = body.get("max_output_tokens")
        text, cut = truncate_words(text, limit if isinstance(limit, int) else None)
        plan.text = text
        if cut:
            plan.status, plan.incomplete = "incomplete", "max_output_tokens"

    # -------------------------------------------------------------------- bodies

    def item_id(self, plan: ResponsePlan, kind: str) -> str:
        if kind not in plan.ids:
            plan.ids[kind] = f"{kind}_{self.state.next_id():08d}"
        return plan.ids[kind]

    def reasoning_item(self, plan: ResponsePlan, done: bool) -> dict[str, Any]:
        text = plan.reasoning or ""
        item: dict[str, Any] = {
            "id": self.item_id(plan, "rs"), "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}] if plan.summary and done else [],
            "status": "completed" if done else "in_progress",
        }
        if plan.reasoning_content:
            item["content"] = [{"type": "reasoning_text", "text": text}] if done else []
        return item

    def message_item(self, plan: ResponsePlan, done: bool) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if done:
            content = [self.part(plan, plan.text if plan.refusal is None else plan.refusal)]
        status = "in_progress" if not done else "incomplete" if plan.incomplete else "completed"
        return {"id": self.item_id(plan, "msg"), "type": "message", "role": "assistant",
                "status": status, "content": content}

    def part(self, plan: ResponsePlan, text: str | None) -> dict[str, Any]:
        if plan.refusal is not None:
            return {"type": "refusal", "refusal": text or ""}
        return {"type": "output_text", "text": text or "", "annotations": [], "logprobs": []}

    def call_item(self, plan: ResponsePlan, done: bool) -> dict[str, Any]:
        assert plan.call is not None
        call_id, name, args = plan.call
        return {"id": self.item_id(plan, "fc"), "type": "function_call", "call_id": call_id,
                "name": name, "arguments": args if done else "",
                "status": "completed" if done else "in_progress"}

    def output(self, plan: ResponsePlan) -> list[dict[str, Any]]:
        out = [self.reasoning_item(plan, True)] if plan.reasoning is not None else []
        if plan.call is not None:
            out.append(self.call_item(plan, True))
        elif plan.status != "failed":
            out.append(self.message_item(plan, True))
        return out

    def usage(self, plan: ResponsePlan) -> dict[str, Any]:
        reasoning = count_words(plan.reasoning or "")
        if plan.call is not None:
            answer = max(1, count_words(plan.call[2]))
        else:
            answer = count_words(plan.text or plan.refusal or "")
        input_tokens = messages_words(plan.context)
        output_tokens = answer + reasoning if plan.status != "failed" else 0
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning if plan.status != "failed" else 0},
            "total_tokens": input_tokens + output_tokens,
        }

    def response(self, plan: ResponsePlan, final: bool = True) -> dict[str, Any]:
        body = plan.body
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None
        text = body.get("text") if isinstance(body.get("text"), dict) else {}
        status = plan.status if final else "in_progress"
        out = {
            "id": plan.id, "object": "response", "created_at": CREATED_TS,
            "status": status,
            "completed_at": CREATED_TS + 1 if final and status == "completed" else None,
            "error": plan.error if final else None,
            "incomplete_details": {"reason": plan.incomplete} if final and plan.incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": self.output(plan) if final else [],
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if reasoning else None,
            "service_tier": "default",
            "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "metadata": body.get("metadata") or {},
        }
        if final:  # the spec's usage is not nullable: absent until the response is done
            out["usage"] = self.usage(plan)
        return out

    def store(self, plan: ResponsePlan, response: dict[str, Any]) -> None:
        if plan.body.get("store") is False or plan.status == "failed":
            return
        # instructions do not carry over to the next turn
        context = plan.context[1:] if isinstance(plan.body.get("instructions"), str) else list(plan.context)
        if plan.call is not None:
            context.append({"role": "assistant", "call_id": plan.call[0], "content": ""})
        else:
            context.append({"role": "assistant", "content": plan.text or plan.refusal or ""})
        self.stored[plan.id] = (context, response)


def add_responses_routes(
    app: web.Application, state: ServerState, errors: ChatErrors, prefix: str = "/v1"
) -> ResponsesEndpoint:
    from .openai_responses_stream import stream_response

    endpoint = ResponsesEndpoint(state, errors)

    async def create(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        plan = endpoint.plan(body)
        if isinstance(plan, web.Response):
            return plan
        if body.get("stream") is True:
            return await stream_response(request, endpoint, plan)
        out = endpoint.response(plan)
        endpoint.store(plan, out)
        return json_response(out)

    async def retrieve(request: web.Request) -> web.Response:
        rid = request.match_info["response_id"]
        if rid not in endpoint.stored:
            message = f"Response with id '{rid}' not found."
            return json_response(openai_error_body(message, "invalid_request_error", None, None), 404)
        return json_response(endpoint.stored[rid][1])

    app.router.add_post(f"{prefix}/responses", create)
    app.router.add_get(f"{prefix}/responses/{{response_id}}", retrieve)
    return endpoint
