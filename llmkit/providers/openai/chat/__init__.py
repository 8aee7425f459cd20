"""OpenAI chat-completions wire format, shared by the OpenAI provider and the
OpenAI-compatible APIs of Hugging Face: ``options`` (the typed per-call options), ``request`` (bodies, messages, options),
``response`` (replies and usage), ``stream`` (SSE chunks, tool-call assembly) and
``models`` (what a server says about its models)."""

from .models import context_from_models, context_from_props, known_context_length
from .options import OPENAI_PROVIDER_OPTIONS, OpenAIOptions
from .request import (
    chat_body,
    is_openai_host,
    max_tokens_field,
    message_to_openai,
    openai_messages,
    refused_options,
)
from .response import parse_chat_response, parse_tool_calls, parse_usage
from .stream import (
    ToolCallAssembler,
    decode_event,
    is_done,
    parse_stream_event,
    parse_stream_text,
)

__all__ = [
    "OPENAI_PROVIDER_OPTIONS",
    "OpenAIOptions",
    "ToolCallAssembler",
    "chat_body",
    "context_from_models",
    "context_from_props",
    "decode_event",
    "is_done",
    "is_openai_host",
    "known_context_length",
    "max_tokens_field",
    "message_to_openai",
    "openai_messages",
    "parse_chat_response",
    "parse_stream_event",
    "parse_stream_text",
    "parse_tool_calls",
    "parse_usage",
    "refused_options",
]
