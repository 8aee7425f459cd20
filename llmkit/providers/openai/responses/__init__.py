"""OpenAI's Responses API wire format (``POST /responses``), beside the chat-completions one:
``request`` (input items, tools, ``text.format``, options), ``response`` (a Response as a
ChatResponse, failed responses), ``events`` (the typed stream events), ``options`` (what
each API refuses) and ``api`` (the calls of an instance with ``extra={"api": "responses"}``)."""

from .api import RESPONSES_PATH, ResponsesAPI, responses_api

__all__ = ["RESPONSES_PATH", "ResponsesAPI", "responses_api"]
