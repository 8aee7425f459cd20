"""Which options an OpenAI instance takes on each API: the Responses-only request fields are
refused on chat completions (with the hint to switch), and api.openai.com's ``/responses``
refuses the chat-completions options it has no field for."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["RESPONSES_ONLY", "chat_refusals", "responses_refusals"]

# Responses API request fields that chat completions has no counterpart for.
RESPONSES_ONLY = frozenset({
    "previous_response_id", "instructions", "reasoning", "include", "truncation",
    "max_tool_calls", "conversation", "background", "prompt",
})
_SWITCH = "a Responses API field: create the instance with extra={'api': 'responses'}"
_NO_FIELD = "OpenAI's Responses API has no such field (it is a chat-completions option)"
_CHAT_ONLY = (
    "stop", "seed", "n", "presence_penalty", "frequency_penalty", "top_k", "think",
    "logit_bias", "modalities", "audio", "prediction", "web_search_options",
)


def chat_refusals() -> dict[str, str]:
    """Added to a chat-completions instance's refused options."""
    return dict.fromkeys(RESPONSES_ONLY, _SWITCH)


def responses_refusals(chat_refused: Mapping[str, str], openai_host: bool) -> dict[str, str]:
    """A Responses instance's refused options: api.openai.com has no field for the
    chat-completions-only ones; other servers (llama.cpp, vLLM) take what their chat
    endpoint takes, so only what the chat API refuses there is refused."""
    if openai_host:
        return {**chat_refused, **dict.fromkeys(_CHAT_ONLY, _NO_FIELD)}
    return dict(chat_refused)
