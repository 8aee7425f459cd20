"""Structured replies of the Responses API: a reply the token limit cut
(``status: "incomplete"``) is a :class:`ReplyTruncatedError`, one that does not validate
into the requested model a :class:`ReplyValidationError`; both carry the whole response."""

from __future__ import annotations

from typing import Any

from llmkit.core.errors import LLMError, ReplyTruncatedError, ReplyValidationError
from llmkit.core.structured import parse_structured
from llmkit.core.types import ChatResponse

__all__ = ["check_structured"]


def check_structured(response: ChatResponse, response_format: Any, provider: str | None) -> Any:
    """The reply validated into ``response_format`` (a pydantic class, or decoded JSON)."""
    if response.finish_reason == "length":
        raise ReplyTruncatedError(
            "the token limit cut the structured reply before it was complete "
            f"({response.usage.completion_tokens} output tokens): raise max_tokens",
            response=response, provider=provider,
        )
    try:
        return parse_structured(response.content, response_format, provider)
    except ReplyValidationError as exc:
        if getattr(exc, "response", None) is None:
            exc.response = response
        raise
    except LLMError as exc:
        raise ReplyValidationError(exc.message, response=response, provider=provider) from None
