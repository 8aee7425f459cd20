"""``POST /v1/chat/completions`` of the OpenAI-compatible test servers: planning a reply,
the JSON body and the SSE stream (also used by the Hugging Face router and TGI servers).

Behaviour beyond the echo reply (all deterministic):

* A model whose name contains ``reasoner`` answers with ``reasoning_content`` (llama.cpp,
  vLLM, DeepSeek), one containing ``gpt-oss`` with ``reasoning`` (vLLM's newer name);
  the reasoning words count in ``completion_tokens_details.reasoning_tokens``.
* A last user message starting with ``refuse`` gets a refusal (``content`` null,
  ``refusal`` set), as OpenAI's models do.
* ``logprobs: true`` gives ``logprobs.content`` per token (word piece), with
  ``top_logprobs`` alternatives.
* ``n`` choices: choice ``i > 0`` says the same with `` #i`` appended; streams interleave
  the choices' chunks.
* Prompt caching: ``prompt_tokens_details.cached_tokens`` counts the words of the longest
  run of leading messages seen in an earlier request to the same server.
* A chosen custom tool (``{"type": "custom", ...}``) is called with ``type: "custom"`` and
  a text ``input`` (``state.tool_arguments`` when a string).
* ``state.parallel_tool_arguments``: one call of the chosen tool per entry (parallel tool
  calls), at indexes 0, 1, ... of ``tool_calls``.
* A :class:`ChatDialect` says what another OpenAI-compatible server does differently
  (vLLM's is in :mod:`tests.servers.openai_vllm`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    ServerState,
    content_text,
    count_words,
    json_ok,
    messages_words,
    schema_instance,
    split_pieces,
    tool_arguments_for,
    truncate_words,
)

MISSING_MODEL = "missing-model"
REFUSAL_TEXT = "I'm sorry, but I can't help with that."


@dataclass(frozen=True)
class ChatErrors:
    """How a chat endpoint reports errors (OpenAI vs. TGI/HF shapes)."""

    invalid_json: Callable[[], web.Response]
    bad_request: Callable[[str, str | None, str | None], web.Response]
    model_not_found: Callable[[str], web.Response]
    context_length: Callable[[int, int], web.Response]
    stream_error: Callable[[str | None], JSON]
    sse_prefix: bytes = b"data: "
    # Rewrites each OpenAI-shaped body / chunk into the endpoint's own shape (TGI's).
    reshape: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class ToolCallPlan:
    id: str
    name: str
    arguments: str
    custom: bool = False


@dataclass
class ChoicePlan:
    text: str | None
    tool_calls: list[ToolCallPlan] = field(default_factory=list)
    refusal: str | None = None
    reasoning: str | None = None
    finish_reason: str = "stop"

    @property
    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(max(1, count_words(c.arguments)) for c in self.tool_calls)
        words = count_words(self.text or self.refusal or "")
        return words + count_words(self.reasoning or "")


@dataclass(frozen=True)
class ChatDialect:
    """What an OpenAI-compatible server's chat endpoint does differently from OpenAI's
    own API. The defaults are OpenAI's."""

    name: str = "openai"
    # The message field of reasoning text for a model (None: the model does not reason).
    reasoning_field: Callable[[str], str | None] | None = None
    # More request checks: an error response, or None when the request is fine.
    check: Callable[[ServerState, dict[str, Any]], web.Response | None] | None = None
    # The text a decoding constraint of the request forces (None: no constraint; then
    # ``response_format`` applies as on OpenAI).
    constrained_text: Callable[[dict[str, Any]], str | None] | None = None
    # Only a tool with ``strict: true`` gets arguments that follow its schema; the others
    # get ``state.tool_arguments`` (what an unconstrained model writes).
    strict_tools_constrained: bool = False
    # Streams: each tool call whole in one chunk under ``index: 0`` with its own id
    # (Ollama's OpenAI-compatible endpoint).
    whole_tool_calls_at_index0: bool = False
    tool_call_id_prefix: str = "call_"
    # Fields added to every choice / to the body; the usage object from OpenAI's.
    choice_extra: dict[str, Any] = field(default_factory=dict)
    body_extra: dict[str, Any] = field(default_factory=dict)
    usage: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Stream chunks carry ``service_tier`` and ``system_fingerprint`` (OpenAI does).
    chunk_fingerprint: bool = True


OPENAI_DIALECT = ChatDialect()


@dataclass
class ChatPlan:
    model: str
    choices: list[ChoicePlan]
    prompt_tokens: int
    cached_tokens: int = 0
    reasoning_field: str | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    dialect: ChatDialect = OPENAI_DIALECT

    @property
    def n(self) -> int:
        return len(self.choices)


# --------------------------------------------------------------------------- planning


def _forced_tool(tool_choice: JSON) -> str | None:
    if isinstance(tool_choice, dict):
        for kind in ("function", "custom"):
            spec = tool_choice.get(kind)
            if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                return str(spec["name"])
        if isinstance(tool_choice.get("name"), str):
            return str(tool_choice["name"])
    return None


def _tool_parts(tool: JSON) -> tuple[str, JSON, bool]:
    """(name, parameters schema, is custom) of a tool definition."""
    if isinstance(tool, dict):
        if tool.get("type") == "custom" and isinstance(tool.get("custom"), dict):
            return str(tool["custom"].get("name", "tool")), {}, True
        fn = tool.get("function", tool)
        if isinstance(fn, dict):
            return str(fn.get("name", "tool")), fn.get("parameters") or {}, False
    return "tool", {}, False


def default_reply(state: ServerState, messages: list[JSON]) -> str:
    if state.reply is not None:
        return state.reply
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") in ("user", "tool"):
            return "Echo: " + content_text(m.get("content"))
    return "Echo: "


def _choose(tools: JSON, tool_choice: JSON, messages: list[JSON]) -> tuple[str, JSON, bool] | None:
    if not isinstance(tools, list) or not tools or tool_choice == "none":
        return None
    forced = _forced_tool(tool_choice)
    if forced is None and tool_choice != "required":
        last = messages[-1] if messages else None
        if isinstance(last, dict) and last.get("role") == "tool":
            return None
    parts = [_tool_parts(t) for t in tools]
    if forced is not None:
        for part in parts:
            if part[0] == forced:
                return part
        return forced, {}, False
    return parts[0]


def choose_tool(tools: JSON, tool_choice: JSON, messages: list[JSON]) -> tuple[str, JSON] | None:
    """The (name, parameters) of the tool to call, or None for a text reply."""
    chosen = _choose(tools, tool_choice, messages)
    return None if chosen is None else (chosen[0], chosen[1])


def structured_reply(response_format: JSON) -> str | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
        return orjson.dumps(schema_instance(schema)).decode()
    if kind == "json_object":
        return '{"result": "text"}'
    if kind == "json":  # TGI's messages API: {"type": "json", "value": <schema>}
        value = response_format.get("value")
        return orjson.dumps(schema_instance(value if isinstance(value, dict) else {})).decode()
    return None


def _last_user_text(messages: list[JSON]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def _cached_words(app_cache: set[str], messages: list[JSON]) -> int:
    """Words of the longest run of leading messages an earlier request sent too."""
    cached = 0
    digest = hashlib.sha256()
    for k, m in enumerate(messages):
        digest.update(orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
        key = digest.copy().hexdigest()
        if key in app_cache and k < len(messages) - 1:
            cached = messages_words(messages[: k + 1])
        app_cache.add(key)
    return cached


def _reasoning_field(model: str) -> str | None:
    if "reasoner" in model:
        return "reasoning_content"
    if "gpt-oss" in model:
        return "reasoning"
    return None


def _is_strict(tools: JSON, name: str) -> bool:
    for tool in tools if isinstance(tools, list) else ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name") == name:
            return fn.get("strict") is True
    return False


def _arguments(
    state: ServerState, dialect: ChatDialect, tools: JSON, name: str, params: JSON, given: Any
) -> str:
    if dialect.strict_tools_constrained and _is_strict(tools, name):
        return orjson.dumps(schema_instance(params) if isinstance(params, dict) else {}).decode()
    if isinstance(given, str):
        return given
    if given is not None:
        return orjson.dumps(given).decode()
    return tool_arguments_for(state, params)[0]


def _tool_calls(
    state: ServerState, dialect: ChatDialect, body: dict[str, Any], chosen: tuple[str, JSON, bool]
) -> list[ToolCallPlan]:
    name, params, custom = chosen
    if custom:
        text = state.tool_arguments if isinstance(state.tool_arguments, str) else "input text"
        return [ToolCallPlan(f"call_{state.next_id():08d}", name, text, True)]
    given = state.parallel_tool_arguments or [state.tool_arguments]
    return [
        ToolCallPlan(
            f"{dialect.tool_call_id_prefix}{state.next_id():08d}", name,
            _arguments(state, dialect, body.get("tools"), name, params, args),
        )
        for args in given
    ]


def _choice_plan(
    state: ServerState, body: dict[str, Any], messages: list[JSON], index: int,
    reasoning: str | None, limit: int | None, dialect: ChatDialect = OPENAI_DIALECT,
) -> ChoicePlan:
    chosen = _choose(body.get("tools"), body.get("tool_choice"), messages)
    if chosen is not None:
        calls = _tool_calls(state, dialect, body, chosen)
        return ChoicePlan(None, calls, reasoning=reasoning, finish_reason="tool_calls")
    if _last_user_text(messages).lower().startswith("refuse"):
        return ChoicePlan(None, refusal=REFUSAL_TEXT, reasoning=reasoning)
    text = dialect.constrained_text(body) if dialect.constrained_text is not None else None
    if text is None:
        text = structured_reply(body.get("response_format"))
    if text is None:
        text = default_reply(state, messages)
        if index:
            text = f"{text} #{index}"
    text, truncated = truncate_words(text, limit)
    return ChoicePlan(text, reasoning=reasoning, finish_reason="length" if truncated else "stop")


def plan_chat(
    state: ServerState, body: JSON, errors: ChatErrors, cache: set[str] | None = None,
    dialect: ChatDialect = OPENAI_DIALECT,
) -> ChatPlan | web.Response:
    if not json_ok(body) or not isinstance(body, dict):
        return errors.invalid_json()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return errors.bad_request("you must provide a model parameter", None, None)
    messages = body.get("messages")
    if messages is None:
        return errors.bad_request(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        return errors.bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    if model == MISSING_MODEL:
        return errors.model_not_found(model)
    prompt_tokens = messages_words(messages)
    if prompt_tokens > state.context_length:
        return errors.context_length(state.context_length, prompt_tokens)
    if dialect.check is not None:
        problem = dialect.check(state, body)
        if problem is not None:
            return problem
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    limit = limit if isinstance(limit, int) else None
    n_raw = body.get("n")
    n = n_raw if isinstance(n_raw, int) and n_raw > 0 else 1
    field_name = (dialect.reasoning_field or _reasoning_field)(model)
    reasoning = f"The user wrote {count_words(_last_user_text(messages))} words." if field_name else None
    top = body.get("top_logprobs")
    return ChatPlan(
        model,
        [_choice_plan(state, body, messages, i, reasoning, limit, dialect) for i in range(n)],
        prompt_tokens,
        cached_tokens=_cached_words(cache, messages) if cache is not None else 0,
        reasoning_field=field_name,
        logprobs=body.get("logprobs") is True,
        top_logprobs=top if isinstance(top, int) and 0 < top <= 20 else 0,
        dialect=dialect,
    )


# --------------------------------------------------------------------------- bodies


def usage_body(plan: ChatPlan) -> dict[str, Any]:
    completion = sum(c.completion_tokens for c in plan.choices)
    reasoning = sum(count_words(c.reasoning or "") for c in plan.choices)
    usage = {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return plan.dialect.usage(usage) if plan.dialect.usage is not None else usage


def token_logprobs(text: str, top: int) -> list[dict[str, Any]]:
    out = []
    for i, piece in enumerate(split_pieces(text)):
        logprob = -0.25 * (i % 4 + 1)
        entry: dict[str, Any] = {
            "token": piece, "logprob": logprob, "bytes": list(piece.encode()), "top_logprobs": [],
        }
        for k in range(top):
            alt = piece if k == 0 else f"{piece.strip()}~{k}"
            entry["top_logprobs"].append(
                {"token": alt, "logprob": logprob - k, "bytes": list(alt.encode())}
            )
        out.append(entry)
    return out


def _logprobs(plan: ChatPlan, text: str | None) -> dict[str, Any] | None:
    if not plan.logprobs:
        return None
    return {"content": token_logprobs(text or "", plan.top_logprobs), "refusal": None}


def _tool_call_body(call: ToolCallPlan) -> dict[str, Any]:
    if call.custom:
        return {"id": call.id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _message(plan: ChatPlan, choice: ChoicePlan) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text,
        "refusal": choice.refusal,
        "annotations": [],
    }
    if plan.reasoning_field and choice.reasoning is not None:
        message[plan.reasoning_field] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call_body(call) for call in choice.tool_calls]
    return message


def chat_completion_body(plan: ChatPlan, completion_id: str) -> dict[str, Any]:
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED_TS,
        "model": plan.model,
        "choices": [
            {
                "index": i,
                "message": _message(plan, c),
                "logprobs": _logprobs(plan, c.text),
                "finish_reason": c.finish_reason,
                **plan.dialect.choice_extra,
            }
            for i, c in enumerate(plan.choices)
        ],
        "usage": usage_body(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_llmkit_test",
    }
    body.update(plan.dialect.body_extra)
    return body
