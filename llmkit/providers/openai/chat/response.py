"""OpenAI chat-completions responses: every choice with its text, reasoning, refusal,
tool calls (function and custom) and logprobs; usage with cached and reasoning tokens."""

from __future__ import annotations

from typing import Any

from llmkit.core.tools import tool_call
from llmkit.core.types import ChatResponse, Choice, ToolCall, Usage, normalize_finish_reason
from llmkit.http.error_mapping import error_from_payload

__all__ = [
    "SHAPE_ERRORS",
    "parse_chat_response",
    "parse_tool_calls",
    "parse_usage",
]

# What a field of an unexpected type raises while a response or chunk is decoded.
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError, OverflowError)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"token count is {type(value).__name__}")
    return int(value)


def parse_usage(data: Any) -> Usage | None:
    """Usage from OpenAI's ``usage`` object (``prompt_tokens_details.cached_tokens``,
    ``completion_tokens_details.reasoning_tokens`` included); None when there is none."""
    if not isinstance(data, dict):
        return None
    p = _count(data.get("prompt_tokens"))
    c = _count(data.get("completion_tokens"))
    prompt_details = data.get("prompt_tokens_details")
    completion_details = data.get("completion_tokens_details")
    return Usage._trusted({
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": _count(data.get("total_tokens")) or p + c,
        "cached_tokens": _count(prompt_details.get("cached_tokens")) if prompt_details else 0,
        "reasoning_tokens": (
            _count(completion_details.get("reasoning_tokens")) if completion_details else 0
        ),
    })


def _tool_call(tc: dict[str, Any]) -> ToolCall:
    call_id = tc.get("id") or ""
    if tc.get("type") == "custom":
        custom = tc.get("custom") or {}
        text = custom.get("input")
        return ToolCall(
            call_id, custom.get("name") or "", {"input": text if text is not None else ""},
            type="custom", raw_arguments=text if isinstance(text, str) else "",
        )
    fn = tc.get("function") or {}
    return tool_call(call_id, fn.get("name") or "", fn.get("arguments"))


def parse_tool_calls(raw: Any) -> list[ToolCall]:
    return [_tool_call(tc) for tc in raw or ()]


def _text(value: Any) -> str | None:
    """A text field: a string, content parts (their text joined) or None."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, list):
        return "".join(p.get("text") or "" for p in value if isinstance(p, dict))
    raise TypeError(f"text field is {type(value).__name__}")


def reasoning_of(message: dict[str, Any]) -> str | None:
    """Reasoning text: ``reasoning_content`` (llama.cpp, vLLM, DeepSeek) or
    ``reasoning`` (vLLM's newer name, OpenRouter, Ollama's OpenAI API)."""
    value = message.get("reasoning_content")
    if value is None:
        value = message.get("reasoning")
        if value is not None and type(value) is not str:
            return None  # an object form (e.g. a summary) stays in raw
    return _text(value)


def _choice(c: dict[str, Any]) -> Choice:
    message = c.get("message") or {}
    calls = parse_tool_calls(message.get("tool_calls"))
    legacy = message.get("function_call")
    if legacy and not calls:
        calls = [tool_call("", legacy.get("name") or "", legacy.get("arguments"))]
    logprobs = c.get("logprobs")
    return Choice._trusted({
        "index": _count(c.get("index")),
        "content": _text(message.get("content")) or "",
        "tool_calls": calls,
        "finish_reason": normalize_finish_reason(c.get("finish_reason")),
        "reasoning": reasoning_of(message),
        "refusal": _text(message.get("refusal")),
        "logprobs": logprobs.get("content") if logprobs else None,
    })


def parse_chat_response(data: Any, model: str, provider: str) -> ChatResponse:
    try:
        return _parse_chat_response(data, model, provider)
    except SHAPE_ERRORS as exc:
        raise error_from_payload(
            None, status=200, provider=provider,
            default_message=f"unexpected response shape ({type(exc).__name__}): {str(data)[:200]}",
        ) from None


def _parse_chat_response(data: Any, model: str, provider: str) -> ChatResponse:
    if not isinstance(data, dict):
        raise error_from_payload(
            None, status=200, provider=provider, default_message="response is not a JSON object"
        )
    if "error" in data and "choices" not in data:
        raise error_from_payload(data, status=500, provider=provider)
    raw_choices = data.get("choices") or []
    if not raw_choices:
        raise error_from_payload(
            None, status=200, provider=provider, default_message="response has no choices"
        )
    choices = [_choice(c) for c in raw_choices]
    if len(choices) > 1:
        choices.sort(key=lambda c: c.index)
    first = choices[0]
    response_model = data.get("model")
    return ChatResponse._trusted({
        "content": first.content,
        "tool_calls": first.tool_calls,
        "finish_reason": first.finish_reason,
        "usage": parse_usage(data.get("usage")) or Usage(),
        "model": response_model if type(response_model) is str and response_model else model,
        "raw": data,
        "parsed": None,
        "reasoning": first.reasoning,
        "refusal": first.refusal,
        "logprobs": first.logprobs,
        "choices": choices,
    })
