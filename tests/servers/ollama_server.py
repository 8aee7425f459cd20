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
* Known models are ``state.models`` (names without a tag mean ``:latest``). Unknown model on
  chat/generate/embed -> 404 ``model "x" not found, try pulling it first``; on show/delete
  -> 404 ``model 'x' not found``. Pull adds the model, create/copy add the new name, delete
  removes it. ``/api/pull`` of ``missing-model`` fails (mid-stream ``{"error": ...}`` line
  when streaming, 500 otherwise).
* ``POST /api/embed``, ``POST /api/embeddings`` (legacy), ``GET /api/tags``,
  ``POST /api/show``, ``GET /api/ps`` (models used since start, minus unloaded ones),
  ``GET /api/version``, ``DELETE /api/delete``, ``POST /api/pull``, ``POST /api/create``,
  ``POST /api/copy``, ``POST /api/push``, ``GET /`` ("Ollama is running").
"""

from __future__ import annotations

import hashlib
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
    get_json,
    install_middleware,
    json_ok,
    json_response,
    messages_words,
    new_application,
    ollama_error_body,
    schema_instance,
    split_pieces,
    tool_arguments_for,
    truncate_words,
)
from .openai_server import choose_tool, default_reply

DEFAULT_OLLAMA_MODELS = ["llama3.2:latest", "nomic-embed-text:latest"]
OLLAMA_VERSION = "0.12.0"
MISSING_MODEL = "missing-model"
STREAM_PATHS = frozenset({"/api/chat", "/api/generate", "/api/pull", "/api/create", "/api/push"})
STREAM_ERROR_MESSAGE = "an error was encountered while running the model"


def normalize_model(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest`` (tags default to ``latest``)."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def ollama_error(status: int, message: str) -> web.Response:
    return json_response(ollama_error_body(message), status)


def not_found_pull(model: str) -> web.Response:
    return ollama_error(404, f'model "{model}" not found, try pulling it first')


def not_found_plain(model: str) -> web.Response:
    return ollama_error(404, f"model '{model}' not found")


def ollama_status_body(status: int, message: str | None) -> JSON:
    defaults = {
        400: "invalid request",
        401: "unauthorized",
        404: "not found",
        429: "too many requests",
        500: STREAM_ERROR_MESSAGE,
        502: "bad gateway",
        503: "server busy, please try again.  maximum pending requests exceeded",
    }
    return ollama_error_body(message or defaults.get(status, f"error {status}"))


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _details(name: str) -> dict[str, Any]:
    embed = "embed" in name
    family = "nomic-bert" if embed else "llama"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "137M" if embed else "3.2B",
        "quantization_level": "F16" if embed else "Q4_K_M",
    }


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
    models = state.models
    loaded: dict[str, None] = {}
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

    def known(name: str) -> bool:
        norm = normalize_model(name)
        return any(normalize_model(m) == norm for m in models)

    def parse(request: web.Request) -> dict[str, Any] | web.Response:
        body = get_json(request)
        if body is None:
            return ollama_error(400, "missing request body")
        if not json_ok(body):
            return ollama_error(400, "invalid character looking for beginning of value")
        if not isinstance(body, dict):
            return ollama_error(
                400, "json: cannot unmarshal array into Go value of type api.Request"
            )
        return body

    def model_of(body: dict[str, Any], allow_name: bool = False) -> str | web.Response:
        model = body.get("model")
        if allow_name and not model:
            model = body.get("name")
        if not isinstance(model, str) or not model:
            return ollama_error(400, "model is required")
        return model

    def track(model: str, keep_alive: JSON) -> None:
        norm = normalize_model(model)
        if keep_alive in (0, "0", "0s", "0m"):
            loaded.pop(norm, None)
        else:
            loaded[norm] = None

    async def generate_like(request: web.Request, chat: bool) -> web.StreamResponse:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body)
        if isinstance(model, web.Response):
            return model
        if not known(model):
            return not_found_pull(model)
        kind = "chat" if chat else "generate"
        if "embed" in model:
            return ollama_error(400, f'"{model}" does not support {kind}')
        messages = body.get("messages") if chat else None
        if chat and messages is not None and not isinstance(messages, list):
            return ollama_error(
                400, "json: cannot unmarshal string into Go struct field ChatRequest.messages"
            )
        stream = body.get("stream", True) is not False
        keep_alive = body.get("keep_alive")
        track(model, keep_alive)
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
        think = body.get("think")
        thinking = "Thinking about the request." if think not in (None, False) else None
        eval_count = count_words(text) + (1 if tool_calls else 0)

        final = line("")
        final["done"] = True
        final["done_reason"] = done_reason
        final.update(_durations(prompt_tokens, eval_count))
        if not chat:
            final["context"] = [1, 2, 3]

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
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body)
        if isinstance(model, web.Response):
            return model
        if not known(model):
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
        track(model, body.get("keep_alive"))
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
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body)
        if isinstance(model, web.Response):
            return model
        if not known(model):
            return not_found_pull(model)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return json_response({"embedding": []})
        track(model, body.get("keep_alive"))
        return json_response({"embedding": embed_text(prompt, state.embedding_dim)})

    def summary(name: str) -> dict[str, Any]:
        norm = normalize_model(name)
        return {
            "name": norm,
            "model": norm,
            "modified_at": "2025-01-01T00:00:00.000000000Z",
            "size": 274302450 if "embed" in norm else 2019393189,
            "digest": _digest(norm),
            "details": _details(norm),
        }

    async def tags(request: web.Request) -> web.Response:
        return json_response({"models": [summary(m) for m in models]})

    async def ps(request: web.Request) -> web.Response:
        running = []
        for name in loaded:
            if not known(name):
                continue
            s = summary(name)
            s.pop("modified_at", None)
            s["expires_at"] = "2025-01-01T00:05:00.000000000Z"
            s["size_vram"] = s["size"]
            s["context_length"] = state.context_length
            running.append(s)
        return json_response({"models": running})

    async def show(request: web.Request) -> web.Response:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body, allow_name=True)
        if isinstance(model, web.Response):
            return model
        if not known(model):
            return not_found_plain(model)
        norm = normalize_model(model)
        embed_model = "embed" in norm
        family = _details(norm)["family"]
        return json_response(
            {
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {norm}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _details(norm),
                "model_info": {
                    "general.architecture": family,
                    "general.parameter_count": 137000000 if embed_model else 3212749888,
                    f"{family}.context_length": state.context_length,
                    f"{family}.embedding_length": state.embedding_dim,
                },
                "capabilities": ["embedding"] if embed_model else ["completion", "tools"],
                "modified_at": "2025-01-01T00:00:00.000000000Z",
            }
        )

    async def version(request: web.Request) -> web.Response:
        return json_response({"version": OLLAMA_VERSION})

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def delete(request: web.Request) -> web.Response:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body, allow_name=True)
        if isinstance(model, web.Response):
            return model
        norm = normalize_model(model)
        for m in list(models):
            if normalize_model(m) == norm:
                models.remove(m)
                loaded.pop(norm, None)
                return web.Response(status=200)
        return not_found_plain(model)

    async def copy(request: web.Request) -> web.Response:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        source, dest = body.get("source"), body.get("destination")
        if not isinstance(source, str) or not source or not isinstance(dest, str) or not dest:
            return ollama_error(400, "source and destination are required")
        if not known(source):
            return not_found_plain(source)
        if not known(dest):
            models.append(normalize_model(dest))
        return web.Response(status=200)

    async def status_stream(
        request: web.Request,
        statuses: list[dict[str, Any]],
        stream: bool,
        error: str | None = None,
    ) -> web.StreamResponse:
        if not stream:
            if error is not None:
                return ollama_error(500, error)
            return json_response(statuses[-1])
        writer = EventWriter(
            request,
            framing="ndjson",
            make_error=lambda msg: ollama_error_body(msg or STREAM_ERROR_MESSAGE),
            make_content=lambda t: {"status": t},
        )
        await writer.start()
        if error is not None:
            for event in statuses:
                if not await writer.send(event):
                    return await writer.finish()
            await writer.send_raw(orjson.dumps(ollama_error_body(error)) + b"\n")
            writer.stopped = True
            return await writer.finish()
        for event in statuses[:-1]:
            if not await writer.send(event):
                return await writer.finish()
        return await writer.finish(statuses[-1])

    async def pull(request: web.Request) -> web.StreamResponse:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body, allow_name=True)
        if isinstance(model, web.Response):
            return model
        stream = body.get("stream", True) is not False
        statuses: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if model == MISSING_MODEL:
            return await status_stream(
                request, statuses, stream, "pull model manifest: file does not exist"
            )
        for layer, total in (("model", 2019377376), ("license", 7711)):
            digest = "sha256:" + _digest(f"{model}:{layer}")
            for completed in (0, total // 2, total):
                statuses.append(
                    {
                        "status": f"pulling {digest[7:19]}",
                        "digest": digest,
                        "total": total,
                        "completed": completed,
                    }
                )
        statuses += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        if not known(model):
            models.append(normalize_model(model))
        return await status_stream(request, statuses, stream)

    async def push(request: web.Request) -> web.StreamResponse:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body, allow_name=True)
        if isinstance(model, web.Response):
            return model
        if not known(model):
            return not_found_plain(model)
        digest = "sha256:" + _digest(model)
        statuses: list[dict[str, Any]] = [
            {"status": "retrieving manifest"},
            {"status": "starting upload", "digest": digest, "total": 1928429856},
            {"status": "pushing manifest"},
            {"status": "success"},
        ]
        return await status_stream(request, statuses, body.get("stream", True) is not False)

    async def create(request: web.Request) -> web.StreamResponse:
        body = parse(request)
        if isinstance(body, web.Response):
            return body
        model = model_of(body, allow_name=True)
        if isinstance(model, web.Response):
            return model
        source = body.get("from")
        if isinstance(source, str) and source and not known(source):
            return not_found_pull(source)
        if not source and not body.get("files"):
            return ollama_error(400, "neither 'from' or 'files' was specified")
        statuses: list[dict[str, Any]] = [{"status": "reading model metadata"}]
        for key in ("system", "template", "parameters", "messages", "license", "adapters"):
            if body.get(key):
                statuses.append({"status": f"creating {key} layer"})
        if body.get("quantize"):
            statuses.append({"status": f"quantizing F16 model to {str(body['quantize']).upper()}"})
        base_name = source if isinstance(source, str) else model
        statuses.append({"status": f"using already created layer sha256:{_digest(str(base_name))}"})
        statuses += [{"status": "writing manifest"}, {"status": "success"}]
        if not known(model):
            models.append(normalize_model(model))
        return await status_stream(request, statuses, body.get("stream", True) is not False)

    app.router.add_get("/", root)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings_legacy)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    app.router.add_get("/api/version", version)
    app.router.add_delete("/api/delete", delete)
    app.router.add_post("/api/copy", copy)
    app.router.add_post("/api/pull", pull)
    app.router.add_post("/api/push", push)
    app.router.add_post("/api/create", create)
    return app


__all__ = ["DEFAULT_OLLAMA_MODELS", "make_ollama_app", "normalize_model"]
