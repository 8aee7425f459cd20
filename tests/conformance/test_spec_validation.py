"""The strict reading of the providers' specs (tests/servers/spec_validation.py)."""

from __future__ import annotations

from tests.servers.spec_validation import ALLOWED_EXTRA_PROPERTIES, schema_errors

CHAT = ("openai", "CreateChatCompletionRequest")
MINIMAL = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_openai_chat_request_accepts_documented_fields_from_every_allof_part() -> None:
    body = {
        **MINIMAL,
        "temperature": None,  # ModelResponseProperties (an allOf part), nullable
        "top_logprobs": 2,  # CreateModelResponseProperties
        "max_completion_tokens": 5,  # the request's own part, `nullable: true`
        "stream": True,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    }
    assert schema_errors(CHAT, body) is None


def test_undefined_fields_fail_at_every_level() -> None:
    top = schema_errors(CHAT, {**MINIMAL, "top_k": 3})
    assert top is not None and "top_k" in top
    nested = schema_errors(CHAT, {**MINIMAL, "messages": [{"role": "user", "content": "x", "k": 1}]})
    assert nested is not None and "messages/0" in nested and "'k'" in nested
    options = schema_errors(CHAT, {**MINIMAL, "stream_options": {"include_usage": True, "x": 1}})
    assert options is not None and "stream_options" in options


def test_nullable_without_type_means_may_be_null() -> None:
    # TGI: GenerateParameters.grammar is {"allOf": [GrammarType], "nullable": true}
    tgi = ("tgi", "GenerateRequest")
    assert schema_errors(tgi, {"inputs": "x", "parameters": {"grammar": None}}) is None
    assert schema_errors(tgi, {"inputs": "x", "parameters": {"grammar": {"type": "json"}}})
    grammar = {"type": "json", "value": {"type": "object"}}
    assert schema_errors(tgi, {"inputs": "x", "parameters": {"grammar": grammar}}) is None


def test_allow_list_entries_name_their_document_and_are_accepted() -> None:
    assert all(doc.strip() for extra in ALLOWED_EXTRA_PROPERTIES.values() for doc in extra.values())
    tool_message = {"role": "tool", "content": "22", "tool_name": "get_weather"}
    chat = {"model": "m", "messages": [tool_message]}
    assert schema_errors(("ollama", "ChatRequest"), chat) is None
    tool_message["tool_id"] = "x"  # not documented anywhere
    assert schema_errors(("ollama", "ChatRequest"), chat) is not None


def test_responses_are_checked_too() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    stream_event = ("openai", "CreateChatCompletionStreamResponse")
    assert schema_errors(stream_event, chunk) is None
    assert schema_errors(stream_event, {**chunk, "timings": {}}) is not None
