"""TGI's routes on the Hugging Face test servers: ``/info``, ``/health``, ``/generate``,
``/generate_stream``, ``/`` and the messages API ``/v1/chat/completions`` (in TGI's own
shape on :func:`~tests.servers.hf_server.make_tgi_app`); see ``hf_server`` for behaviour."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson
from aiohttp import web

from .base import (
    CREATED_TS,
    JSON,
    JSON_KEY,
    EventWriter,
    ServerState,
    count_words,
    get_json,
    json_ok,
    json_response,
    schema_instance,
    split_pieces,
)
from .hf_common import (
    HF_CHAT_ERRORS,
    MAX_BEST_OF,
    ROUTER_POLICIES,
    ROUTER_PROVIDERS,
    TGI_VERSION,
    _length_message,
    loading_response,
    tgi_error,
)
from .openai_server import ChatErrors, make_chat_handler

EOS_TOKEN = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}


def check_grammar(grammar: JSON, field: str) -> dict[str, Any] | web.Response:
    """TGI's GrammarType (``{"type": "json" | "regex" | "json_schema", "value": ...}``),
    as OpenAI's ``response_format`` for the shared reply planner; else TGI's 422."""
    if not isinstance(grammar, dict) or grammar.get("type") not in ("json", "regex", "json_schema"):
        return tgi_error(
            422,
            f"Failed to deserialize the JSON body into the target type: {field}: unknown "
            "variant, expected one of `json`, `regex`, `json_schema`",
        )
    if "value" not in grammar:
        return tgi_error(
            422,
            f"Failed to deserialize the JSON body into the target type: {field}: missing "
            "field `value`",
        )
    value = grammar["value"]
    if grammar["type"] == "regex":
        return {"type": "text"}
    if grammar["type"] == "json_schema":
        value = value.get("schema") if isinstance(value, dict) else None
    if not isinstance(value, dict):
        return tgi_error(422, f"Input validation error: grammar is not a valid JSON Schema: {value!r}")
    return {"type": "json_schema", "json_schema": {"name": "grammar", "schema": value}}


def tgi_chat_shape(obj: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion or chunk in the shape of TGI's messages API
    (tgi-openapi.json ChatCompletion / ChatCompletionChunk): no ``object``/``service_tier``,
    a message is text or tool calls, every delta carries ``role`` and ``content`` (or
    complete ``tool_calls`` entries), usage has the three counts only."""
    out = {k: v for k, v in obj.items() if k not in ("object", "service_tier")}
    choices = []
    for choice in obj.get("choices") or []:
        choice = dict(choice)
        if "message" in choice:
            choice["message"] = _tgi_message(choice["message"], delta=False)
        if "delta" in choice:
            choice["delta"] = _tgi_message(choice["delta"], delta=True)
        choices.append(choice)
    out["choices"] = choices
    usage = obj.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return out


def _tgi_message(message: dict[str, Any], delta: bool) -> dict[str, Any]:
    role = message.get("role") or "assistant"
    calls = message.get("tool_calls")
    if not calls:
        return {"role": role, "content": message.get("content") or ""}
    shaped = []
    for call in calls:
        fn = call.get("function") or {}
        entry: dict[str, Any] = {"id": call.get("id") or "", "type": "function"}
        if delta:
            entry["index"] = call.get("index", 0)
            entry["function"] = {"name": fn.get("name"), "arguments": fn.get("arguments") or ""}
        else:
            entry["function"] = {"name": fn.get("name") or "", "arguments": fn.get("arguments")}
        shaped.append(entry)
    return {"role": role, "tool_calls": shaped}


TGI_CHAT_ERRORS = dataclasses.replace(HF_CHAT_ERRORS, reshape=tgi_chat_shape)


def _token(piece: str, index: int) -> dict[str, Any]:
    digest = hashlib.blake2b(piece.encode(), digest_size=4).digest()
    return {
        "id": 3 + int.from_bytes(digest, "little") % 32000,
        "text": piece,
        "logprob": round(-0.1 - 0.01 * index, 4),
        "special": False,
    }


def add_tgi_routes(
    app: web.Application,
    state: ServerState,
    chat_errors: ChatErrors = HF_CHAT_ERRORS,
    *,
    tgi_grammar: bool = False,
) -> None:
    """TGI's routes; ``tgi_grammar``: the messages API takes TGI's ``response_format``
    (a GrammarType, as TGI does) rather than OpenAI's (as the router does)."""
    chat_handler = make_chat_handler(state, chat_errors)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        if state.loading and isinstance(body, dict):
            return loading_response(state, str(body.get("model", "tgi")))
        if not tgi_grammar and isinstance(body, dict) and isinstance(body.get("model"), str):
            suffix = body["model"].rpartition(":")[2] if ":" in body["model"] else None
            if suffix is not None and suffix not in ROUTER_PROVIDERS + ROUTER_POLICIES:
                return json_response(
                    {"error": f"Provider '{suffix}' is not supported by the router"}, 400
                )
        if tgi_grammar and isinstance(body, dict) and body.get("response_format") is not None:
            fmt = check_grammar(body["response_format"], "response_format")
            if isinstance(fmt, web.Response):
                return fmt
            # the shared planner answers OpenAI's shape: hand it the same schema
            request[JSON_KEY] = {**body, "response_format": fmt}
        response: web.StreamResponse = await chat_handler(request)
        return response

    async def list_models(request: web.Request) -> web.Response:
        return json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": CREATED_TS, "owned_by": m.split("/")[0]}
                    for m in state.models or []
                ],
            }
        )

    async def info(request: web.Request) -> web.Response:
        model_id = (state.models or ["tgi"])[0]
        return json_response(
            {
                "model_id": model_id,
                "model_sha": hashlib.sha1(model_id.encode()).hexdigest(),
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": MAX_BEST_OF,
                "max_stop_sequences": 4,
                "max_input_tokens": state.context_length,
                "max_total_tokens": state.context_length + 1024,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": TGI_VERSION,
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(request: web.Request) -> web.Response:
        if not state.healthy:
            return tgi_error(503, "unhealthy", "healthcheck")
        return web.Response(status=200)

    def plan_generate(body: JSON) -> dict[str, Any] | web.Response:
        if not json_ok(body) or not isinstance(body, dict):
            return tgi_error(422, "Failed to deserialize the JSON body into the target type")
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            return tgi_error(
                422,
                "Failed to deserialize the JSON body into the target type: missing field `inputs`",
            )
        if not inputs:
            return tgi_error(422, "Input validation error: `inputs` cannot be empty")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return tgi_error(
                422, "Failed to deserialize the JSON body into the target type: parameters"
            )
        max_new = params.get("max_new_tokens")
        if max_new is not None and (not isinstance(max_new, int) or max_new < 1):
            return tgi_error(
                422, "Input validation error: `max_new_tokens` must be strictly positive"
            )
        temperature = params.get("temperature")
        if isinstance(temperature, int | float) and temperature <= 0:
            return tgi_error(422, "Input validation error: `temperature` must be strictly positive")
        top_p = params.get("top_p")
        if isinstance(top_p, int | float) and not 0 < top_p < 1:
            return tgi_error(422, "Input validation error: `top_p` must be > 0.0 and < 1.0")
        stop = params.get("stop") or []
        if not isinstance(stop, list) or len(stop) > 4:
            return tgi_error(
                422,
                "Input validation error: `stop` supports up to 4 stop sequences. Given: "
                + str(len(stop) if isinstance(stop, list) else 1),
            )
        best_of = params.get("best_of")
        if isinstance(best_of, int) and not 0 < best_of <= MAX_BEST_OF:
            return tgi_error(
                422, f"Input validation error: `best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {best_of}"
            )
        structured: str | None = None
        if params.get("grammar") is not None:
            fmt = check_grammar(params["grammar"], "parameters.grammar")
            if isinstance(fmt, web.Response):
                return fmt
            if fmt["type"] == "json_schema":
                structured = orjson.dumps(schema_instance(fmt["json_schema"]["schema"])).decode()
        input_len = count_words(inputs)
        if input_len > state.context_length:
            return tgi_error(422, _length_message(state.context_length, input_len, max_new or 0))
        if state.loading:
            return loading_response(state, (state.models or ["tgi"])[0])
        text = state.reply if state.reply is not None else "Echo: " + inputs
        if structured is not None:
            text = structured
        pieces = split_pieces(text)
        finish = "eos_token"
        if isinstance(max_new, int) and len(pieces) > max_new:
            pieces = pieces[:max_new]
            finish = "length"
        joined = ""
        for i, piece in enumerate(pieces):
            joined += piece
            hit = next((s for s in stop if isinstance(s, str) and s and s in joined), None)
            if hit is not None:
                cut = joined.index(hit) + len(hit)
                pieces = pieces[: i + 1]
                extra = len(joined) - cut
                if extra:
                    pieces[-1] = pieces[-1][: len(pieces[-1]) - extra]
                finish = "stop_sequence"
                break
        generated = "".join(pieces)
        if params.get("return_full_text"):
            generated = inputs + generated
        return {
            "inputs": inputs,
            "params": params,
            "pieces": pieces,
            "generated": generated,
            "finish": finish,
            "input_len": input_len,
            "seed": params.get("seed"),
        }

    async def generate(request: web.Request) -> web.Response:
        plan = plan_generate(get_json(request))
        if isinstance(plan, web.Response):
            return plan
        out: dict[str, Any] = {"generated_text": plan["generated"]}
        params = plan["params"]
        if params.get("details"):
            tokens = [_token(p, i) for i, p in enumerate(plan["pieces"])]
            if plan["finish"] == "eos_token":
                tokens.append(dict(EOS_TOKEN))
            out["details"] = {
                "finish_reason": plan["finish"],
                "generated_tokens": len(tokens),
                "seed": plan["seed"],
                "prefill": [
                    {"id": _token(p, 0)["id"], "text": p, "logprob": None}
                    for p in split_pieces(plan["inputs"])
                ]
                if params.get("decoder_input_details")
                else [],
                "tokens": tokens,
                "top_tokens": [],
                "best_of_sequences": None,
            }
        return json_response(out)

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        plan = plan_generate(get_json(request))
        if isinstance(plan, web.Response):
            return plan
        pieces: list[str] = plan["pieces"]
        tokens = [_token(p, i) for i, p in enumerate(pieces)]
        if plan["finish"] == "eos_token" or not tokens:
            tokens.append(dict(EOS_TOKEN))

        def event(i: int, token: dict[str, Any], final: bool) -> dict[str, Any]:
            return {
                "index": i + 1,
                "token": token,
                "generated_text": plan["generated"] if final else None,
                "details": {
                    "finish_reason": plan["finish"],
                    "generated_tokens": len(tokens),
                    "input_length": plan["input_len"],
                    "seed": plan["seed"],
                }
                if final
                else None,
            }

        writer = EventWriter(
            request,
            framing="sse",
            make_error=HF_CHAT_ERRORS.stream_error,
            make_content=lambda t: event(0, _token(t, 0), False),
            sse_prefix=b"data:",
        )
        await writer.start()
        for i, token in enumerate(tokens[:-1]):
            if not await writer.send(event(i, token, False)):
                return await writer.finish()
        return await writer.finish(event(len(tokens) - 1, tokens[-1], True))

    async def compat(request: web.Request) -> web.StreamResponse:
        body = get_json(request)
        if isinstance(body, dict) and body.get("stream") is True:
            return await generate_stream(request)
        return await generate(request)

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/info", info)
    app.router.add_get("/health", health)
    app.router.add_post("/generate", generate)
    app.router.add_post("/generate_stream", generate_stream)
    app.router.add_post("/", compat)
