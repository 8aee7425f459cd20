"""Responses API replies: a ``Response`` object as a :class:`ChatResponse` (text from
``output_text`` parts, refusals, ``function_call`` items as tool calls, reasoning from
summaries or reasoning text, usage with cached and reasoning tokens, the response id), and
the typed error of a failed response."""

from __future__ import annotations

from typing import Any

from llmkit.core.errors import LLMError
from llmkit.core.tools import tool_call as decoded_call
from llmkit.core.types import ChatResponse, Choice, ToolCall, Usage
from llmkit.http.error_mapping import error_from_payload

__all__ = ["failed_error", "finish_reason", "parse_response", "parse_usage", "tool_call"]

SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError, OverflowError)

# response.error.code -> the HTTP status whose error class fits it
_CODE_STATUS = {"rate_limit_exceeded": 429, "server_error": 500, "vector_store_timeout": 504}


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"token count is {type(value).__name__}")
    return int(value)


def parse_usage(data: Any) -> Usage | None:
    """Usage from a Response's ``usage`` (``input_tokens_details.cached_tokens``,
    ``output_tokens_details.reasoning_tokens``); None when there is none."""
    if not isinstance(data, dict):
        return None
    p = _count(data.get("input_tokens"))
    c = _count(data.get("output_tokens"))
    inp = data.get("input_tokens_details")
    out = data.get("output_tokens_details")
    return Usage._trusted({
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": _count(data.get("total_tokens")) or p + c,
        "cached_tokens": _count(inp.get("cached_tokens")) if inp else 0,
        "reasoning_tokens": _count(out.get("reasoning_tokens")) if out else 0,
    })


def tool_call(item: dict[str, Any]) -> ToolCall:
    """A ``function_call`` item as a :class:`ToolCall` (``id`` is its ``call_id``; the
    arguments decoded as on chat completions, their text kept in ``raw_arguments``)."""
    raw = item.get("arguments") or ""
    if type(raw) is not str:
        raise TypeError("function_call arguments are not a string")
    call_id = str(item.get("call_id") or item.get("id") or "")
    return decoded_call(call_id, str(item.get("name") or ""), raw)


def failed_error(response: dict[str, Any], provider: str | None) -> LLMError:
    """The typed error of a ``failed`` response (its ``error.code`` picks the class)."""
    raw = response.get("error")
    err: dict[str, Any] = raw if isinstance(raw, dict) else {}
    code = err.get("code")
    message = f"response failed: {err.get('message') or code or 'no reason given'}"
    status = _CODE_STATUS.get(str(code), 400 if code else 500)
    exc = error_from_payload({"error": {"message": message, "code": code}}, status=status,
                             provider=provider)
    exc.status = None  # the HTTP answer was a 200; the class says what went wrong
    exc.request_id = response.get("id") if isinstance(response.get("id"), str) else None
    return exc


def finish_reason(response: dict[str, Any], called: bool) -> str | None:
    """``stop`` / ``tool_calls`` for a completed response, ``length`` or
    ``content_filter`` for an incomplete one (as ``incomplete_details.reason`` says)."""
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details") or {}
        reason = details.get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    if status in ("completed", None):
        return "tool_calls" if called else "stop"
    return None  # queued / in_progress (background responses): not finished


def _output(items: Any) -> tuple[str, str | None, str | None, list[ToolCall], list[Any] | None]:
    texts: list[str] = []
    refusals: list[str] = []
    summaries: list[str] = []
    reasoning_texts: list[str] = []
    calls: list[ToolCall] = []
    logprobs: list[Any] = []
    for item in items or ():
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                ptype = part.get("type")
                if ptype == "output_text":
                    texts.append(part.get("text") or "")
                    logprobs.extend(part.get("logprobs") or ())
                elif ptype == "refusal":
                    refusals.append(part.get("refusal") or "")
        elif kind == "function_call":
            calls.append(tool_call(item))
        elif kind == "reasoning":
            summaries.extend(s.get("text") or "" for s in item.get("summary") or ())
            reasoning_texts.extend(c.get("text") or "" for c in item.get("content") or ())
    reasoning = "\n\n".join(summaries) if summaries else "".join(reasoning_texts) or None
    return ("".join(texts), "".join(refusals) or None, reasoning, calls, logprobs or None)


def parse_response(data: Any, model: str, provider: str) -> ChatResponse:
    """A Response object as a :class:`ChatResponse`; a ``failed`` one raises its error."""
    if not isinstance(data, dict):
        raise error_from_payload(None, status=200, provider=provider,
                                 default_message="response is not a JSON object")
    if "error" in data and "output" not in data:
        raise error_from_payload(data, status=500, provider=provider)
    if data.get("status") == "failed":
        raise failed_error(data, provider)
    try:
        content, refusal, reasoning, calls, logprobs = _output(data.get("output"))
        usage = parse_usage(data.get("usage")) or Usage()
    except SHAPE_ERRORS as exc:
        raise error_from_payload(
            None, status=200, provider=provider,
            default_message=f"unexpected response shape ({type(exc).__name__}): {str(data)[:200]}",
        ) from None
    finish = finish_reason(data, bool(calls))
    response_model = data.get("model")
    choice = Choice._trusted({
        "index": 0, "content": content, "tool_calls": calls, "finish_reason": finish,
        "reasoning": reasoning, "refusal": refusal, "logprobs": logprobs,
    })
    rid = data.get("id")
    return ChatResponse._trusted({
        "id": rid if type(rid) is str else None,
        "content": content,
        "tool_calls": calls,
        "finish_reason": finish,
        "usage": usage,
        "model": response_model if type(response_model) is str and response_model else model,
        "raw": data,
        "parsed": None,
        "reasoning": reasoning,
        "refusal": refusal,
        "logprobs": logprobs,
        "choices": [choice],
    })
