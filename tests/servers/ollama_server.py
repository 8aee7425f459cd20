"""Ollama test server (``/api/*``).

Behaviour (deterministic):

* ``POST /api/chat`` / ``POST /api/generate`` stream by default (NDJSON,
  ``application/x-ndjson``, one line per word-ish piece, a final ``done: true`` line with
  ``done_reason`` and the duration/count fields); ``"stream": false`` gives one JSON object.
  Reply text: ``state.reply`` or ``"Echo: "`` + last user (or tool) message / prompt.
  ``tools`` -> ``message.tool_calls`` (first tool; arguments object from
  ``state.tool_arguments`` or a minimal schema instance) unless the last message is a tool
  result. ``format``: ``"json"`` -> ``{"result": "text"}``, a schema -> minimal instance.
  ``options.num_predict`` truncates to that many words (``done_reason: "length"``).
  ``think`` adds ``thinking`` text. Empty ``messages`` / ``prompt`` -> ``done_reason:
  "load"`` (``"unload"`` with ``keep_alive: 0``). Models whose name contains ``embed`` do
  not support chat/generate (400).
* Model management (tags, ps, show, delete, copy, pull, push, create, blobs) is in
  ``ollama_model_routes``; shared pieces in ``ollama_common``.
* Known models are ``state.models`` (names without a tag mean ``:latest``). Unknown model on
  chat/generate/embed -> 404 ``model "x" not found, try pulling it first``; on show/delete
  -> 404 ``model 'x' not found``. Pull adds the model, create/copy add the new name, delete
  removes it. ``/api/pull`` of ``missing-model`` fails (mid-stream ``{"error": ...}`` line
  when streaming, 500 otherwise).
* ``POST /api/embed``, ``POST /api/embeddings`` (legacy), ``GET /api/tags``,
  ``POST /api/show``, ``GET /api/ps`` (models used since start, minus unloaded ones),
  ``GET /api/version``, ``DELETE /api/delete``, ``POST /api/pull``, ``POST /api/create``,
  ``POST /api/copy``, ``POST /api/push``, ``GET /`` ("Ollama is running").
* ``HEAD /api/blobs/<digest>`` (200 when the server has the blob, else 404) and ``POST
  /api/blobs/<digest>`` (201; 400 when the body's sha256 is not the digest). ``/api/create``
  with ``files`` / ``adapters`` needs their digests uploaded first (400 ``blob ... not found``).
* ``think`` must be a bool or one of ``high``, ``medium``, ``low``, ``max`` (else 400);
  ``logprobs: true`` adds ``logprobs`` entries (with ``top_logprobs`` alternatives) to the
  full response, i.e. the final line of a stream.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .base import (
    CREATED_AT,
    JSON,
    EventWriter,
    ProviderSpec,
    ServerState,
    count_words,
    embed_text,
    install_middleware,
    json_response,
    messages_words,
    new_application,
    ollama_error_body,
    schema_instance,
    split_pieces,
    tool_arguments_for,
    truncate_words,
)
from .ollama_common import (
    DEFAULT_OLLAMA_MODELS,
    STREAM_ERROR_MESSAGE,
    ModelRegistry,
    model_of,
    normalize_model,
    not_found_pull,
    ollama_error,
    ollama_status_body,
    parse_body,
)
from .ollama_model_routes import add_model_routes
from .openai_server import choose_tool, default_reply

STREAM_PATHS = frozenset({"/api/chat", "/api/generate", "/api/pull", "/api/create", "/api/push"})
THINK_LEVELS = ("high", "medium", "low", "max")


def _durations(prompt_tokens: int, eval_tokens: int) -> dict[str, int]:
    prompt_ns = 1_000_000 * max(prompt_tokens, 1)
    eval_ns = 10_000_000 * max(eval_tokens, 1)
    load_ns = 1_000_000
    return {
        "total_duration": load_ns + prompt_ns + eval_ns,
        "load_duration": load_ns,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_tokens,
        "eval_duration": eval_ns,
    }


def token_logprobs(piece: str, top: Any) -> list[dict[str, Any]]:
    """The ``logprobs`` entries of one streamed piece (one token per piece)."""
    entry: dict[str, Any] = {"token": piece, "logprob": -0.25, "bytes": list(piece.encode())}
    if isinstance(top, int) and top > 0:
        entry["top_logprobs"] = [
            {"token": piece, "logprob": -0.25, "bytes": list(piece.encode())},
            *({"token": f"alt{i}", "logprob": -2.0 - i, "bytes": list(f"alt{i}".encode())}
              for i in range(1, top)),
        ]
    return [entry]


def _format_reply(fmt: JSON) -> str | None:
    if fmt == "json":
        return '{"result": "text"}'
    if isinstance(fmt, dict):
        return orjson.dumps(schema_instance(fmt)).decode()
    return None


def _options(body: dict[str, Any]) -> dict[str, Any]:
    opts = body.get("options")
    return opts if isinstance(opts, dict) else {}


def _ollama_huge(path: str, body: JSON) -> tuple[bytes, bytes]:
    model = body.get("model", "llama3.2") if isinstance(body, dict) else "llama3.2"
    head = orjson.dumps({"model": model, "created_at": CREATED_AT})[:-1]
    if path.startswith("/api/generate"):
        return head + b',"response":"', b'","done":true,"done_reason":"stop"}'
    return (
        head + b',"message":{"role":"assistant","content":"',
        b'"},"done":true,"done_reason":"stop"}',
    )


def _is_stream(path: str, body: JSON) -> bool:
    return path in STREAM_PATHS and isinstance(body, dict) and body.get("stream", True) is not False


def make_ollama_app(state: ServerState | None = None) -> web.Application:
    """Build the Ollama app."""
    state = state if state is not None else ServerState()
    if state.models is None:
        state.models = list(DEFAULT_OLLAMA_MODELS)
    reg = ModelRegistry(state.models)
    app = new_application()
    install_middleware(
        app,
        state,
        ProviderSpec(
            name="ollama",
            error_body=ollama_status_body,
            auth_error=lambda provided: ollama_error(401, "unauthorized"),
            is_stream=_is_stream,
            huge_template=_ollama_huge,
        ),
    )

    async def generate_like(request: web.Request, chat: bool) -> web.StreamResponse:
        body = parse_body(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body)
        if isinstance(model, web.Response):
            return model
        if not reg.known(model):
            return not_found_pull(model)
        kind = "chat" if chat else "generate"
        if "embed" in model:
            return ollama_error(400, f'"{model}" does not support {kind}')
        messages = body.get("messages") if chat else None
        if chat and messages is not None and not isinstance(messages, list):
            return ollama_error(
                400, "json: cannot unmarshal string into Go struct field ChatRequest.messages"
            )
        think = body.get("think")
        if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
            return ollama_error(400, f"invalid think value: {think!r}")
        stream = body.get("stream", True) is not False
        keep_alive = body.get("keep_alive")
        reg.track(model, keep_alive)
        top_logprobs = body.get("top_logprobs")
        want_logprobs = body.get("logprobs") is True
        base = {"model": model, "created_at": CREATED_AT}

        def line(
            content: str, *, thinking: str | None = None, tool_calls: Any = None
        ) -> dict[str, Any]:
            out: dict[str, Any] = dict(base)
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": content}
                if thinking is not None:
                    msg["thinking"] = thinking
                if tool_calls is not None:
                    msg["tool_calls"] = tool_calls
                out["message"] = msg
            else:
                out["response"] = content
                if thinking is not None:
                    out["thinking"] = thinking
            out["done"] = False
            return out

        prompt_text = "" if chat else body.get("prompt") or ""
        empty = (chat and not messages) or (not chat and not prompt_text)
        if empty:
            reason = "unload" if keep_alive in (0, "0", "0s", "0m") else "load"
            final = line("")
            final["done"] = True
            final["done_reason"] = reason
            return json_response(final)

        if chat:
            assert isinstance(messages, list)
            prompt_tokens = messages_words(messages)
        else:
            prompt_tokens = count_words(str(prompt_text)) + count_words(
                str(body.get("system") or "")
            )
        opts = _options(body)
        limit = opts.get("num_predict")
        limit = limit if isinstance(limit, int) and limit >= 0 else None

        tool_calls: list[dict[str, Any]] | None = None
        text = ""
        if chat:
            assert isinstance(messages, list)
            tool = choose_tool(body.get("tools"), None, messages)
            if tool is not None:
                name, params = tool
                _, args = tool_arguments_for(state, params)
                tool_calls = [
                    {
                        "type": "function",
                        "function": {"index": 0, "name": name, "arguments": args},
                    }
                ]
        if tool_calls is None:
            formatted = _format_reply(body.get("format"))
            if formatted is not None:
                text = formatted
            elif chat:
                assert isinstance(messages, list)
                text = default_reply(state, messages)
            else:
                text = state.reply if state.reply is not None else "Echo: " + str(prompt_text)
        text, truncated = truncate_words(text, limit)
        done_reason = "length" if truncated else "stop"
        thinking = "Thinking about the request." if think not in (None, False) else None
        eval_count = count_words(text) + (1 if tool_calls else 0)

        final = line("")
        final["done"] = True
        final["done_reason"] = done_reason
        final.update(_durations(prompt_tokens, eval_count))
        if not chat:
            final["context"] = [1, 2, 3]

        if want_logprobs and text:
            # the spec has ``logprobs`` on the full response (the final line of a stream)
            final["logprobs"] = [
                lp for piece in split_pieces(text) for lp in token_logprobs(piece, top_logprobs)
            ]
        if not stream:
            full = line(text, thinking=thinking, tool_calls=tool_calls)
            full.update({k: v for k, v in final.items() if k not in ("message", "response")})
            return json_response(full)

        writer = EventWriter(
            request,
            framing="ndjson",
            make_error=lambda msg: ollama_error_body(msg or STREAM_ERROR_MESSAGE),
            make_content=lambda t: line(t),
        )
        await writer.start()
        events: list[dict[str, Any]] = []
        if thinking is not None:
            events.extend(line("", thinking=p) for p in split_pieces(thinking))
        if tool_calls is not None:
            events.append(line("", tool_calls=tool_calls))
        events.extend(line(p) for p in split_pieces(text))
        for event in events:
            if not await writer.send(event):
                return await writer.finish()
        return await writer.finish(final)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await generate_like(request, chat=True)

    async def generate(request: web.Request) -> web.StreamResponse:
        return await generate_like(request, chat=False)

    async def embed(request: web.Request) -> web.Response:
        body = parse_body(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body)
        if isinstance(model, web.Response):
            return model
        if not reg.known(model):
            return not_found_pull(model)
        raw = body.get("input")
        if raw is None:
            texts: list[str] = []
        elif isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            texts = list(raw)
        else:
            return ollama_error(400, "invalid input type")
        truncate = body.get("truncate", True) is not False
        for t in texts:
            if not truncate and count_words(t) > state.context_length:
                return ollama_error(400, "input exceeds maximum context length")
        dim = body.get("dimensions")
        dim = dim if isinstance(dim, int) and dim > 0 else state.embedding_dim
        reg.track(model, body.get("keep_alive"))
        tokens = sum(min(count_words(t), state.context_length) for t in texts)
        return json_response(
            {
                "model": model,
                "embeddings": [embed_text(t, dim) for t in texts],
                "total_duration": 1_000_000 + 100_000 * tokens,
                "load_duration": 1_000_000,
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings_legacy(request: web.Request) -> web.Response:
        body = parse_body(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body)
        if isinstance(model, web.Response):
            return model
        if not reg.known(model):
            return not_found_pull(model)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return json_response({"embedding": []})
        reg.track(model, body.get("keep_alive"))
        return json_response({"embedding": embed_text(prompt, state.embedding_dim)})

    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings_legacy)
    add_model_routes(app, state, reg)
    return app


__all__ = ["DEFAULT_OLLAMA_MODELS", "make_ollama_app", "normalize_model"]
