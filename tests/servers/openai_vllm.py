"""vLLM's OpenAI-compatible server (as of vLLM 0.32), as a dialect of the OpenAI test server.

What it does differently from OpenAI's API, from vLLM's own docs and code
(``vllm/entrypoints/openai/chat_completion/protocol.py``, ``engine/protocol.py``,
``sampling_params.py``; docs "OpenAI-Compatible Server", "Structured Outputs", "Reasoning
Outputs", "Tool Calling"):

* Extra sampling fields are taken (``top_k``, ``min_p``, ``repetition_penalty``, ...,
  checked as vLLM checks them); fields nobody defines (the ``guided_*`` fields removed in
  v0.12) are ignored: 200, unconstrained text, and a line in ``state.log``.
* ``structured_outputs`` (``choice``, ``regex``, ``json``, ``grammar``, ``json_object``)
  constrains the reply (one kind at a time), as does ``response_format``. vLLM's models
  write JSON with spaces after ``:`` and ``,``, so ``max_tokens`` can cut it.
* Tool calls: only a tool with ``strict: true`` gets schema-following arguments; otherwise
  the model's own text (``state.tool_arguments``, e.g. ``"[]"``) is sent as it is. Call ids
  are ``chatcmpl-tool-...``.
* Reasoning (a model whose name says it reasons) in ``reasoning``, not ``reasoning_content``.
* Error bodies: ``{"error": {"message", "type": "BadRequestError", "param", "code": 400}}``
  with ``param`` naming the field (``input_tokens`` for a too-long prompt, ``max_tokens``,
  ``top_k``, ...); an API-key failure is ``{"error": "Unauthorized"}``.
* Bodies carry vLLM's own fields (``stop_reason``, ``prompt_token_ids``, ...); usage has no
  ``completion_tokens_details`` and ``prompt_tokens_details`` is null.
* ``/v1/models`` cards have ``max_model_len`` (``state.context_length``), ``root``,
  ``parent`` and ``permission``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from .base import JSON, ServerState, count_words, json_response, messages_words, schema_instance
from .openai_chat import ChatDialect, ChatErrors

__all__ = [
    "OLLAMA_OPENAI_DIALECT",
    "VLLM_CHAT_ERRORS",
    "VLLM_DIALECT",
    "regex_instance",
    "vllm_error",
    "vllm_model_card",
    "vllm_status_body",
]

_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    429: "TooManyRequestsError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def vllm_error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def vllm_error(status: int, message: str, param: str | None = None) -> web.Response:
    return json_response(vllm_error_body(status, message, param), status)


def vllm_status_body(status: int, message: str | None) -> JSON:
    if status == 401:
        return {"error": "Unauthorized"}
    return vllm_error_body(status, message or f"HTTP {status}")


def vllm_auth_error(provided: str | None) -> web.Response:
    return json_response({"error": "Unauthorized"}, 401)


VLLM_CHAT_ERRORS = ChatErrors(
    invalid_json=lambda: vllm_error(400, "JSON decode error"),
    bad_request=lambda msg, param, code: vllm_error(400, msg, param),
    model_not_found=lambda model: vllm_error(404, f"The model `{model}` does not exist.", "model"),
    context_length=lambda limit, got: vllm_error(
        400,
        f"This model's maximum context length is {limit} tokens. However, your request has "
        f"{got} input tokens. Please reduce the length of the input messages.",
        "input_tokens",
    ),
    stream_error=lambda message: vllm_error_body(500, message or "Internal server error"),
)


# --------------------------------------------------------------------------- checks

_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")


def _check(state: ServerState, body: dict[str, Any]) -> web.Response | None:
    """vLLM's SamplingParams / StructuredOutputsParams checks, with the field they name."""
    top_k = body.get("top_k")
    if isinstance(top_k, int) and top_k < -1:
        return vllm_error(400, f"top_k must be 0 (disable), or at least 1, got {top_k}.", "top_k")
    min_p = body.get("min_p")
    if isinstance(min_p, int | float) and not 0.0 <= min_p <= 1.0:
        return vllm_error(400, f"min_p must be in [0, 1], got {min_p}.", "min_p")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    prompt = messages_words(body.get("messages") or [])
    if isinstance(limit, int) and prompt + limit > state.context_length:
        return vllm_error(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {limit}. This model's "
            f"maximum context length is {state.context_length} tokens and your request has "
            f"{prompt} input tokens ({limit} > {state.context_length} - {prompt}).",
            "max_tokens",
        )
    so = body.get("structured_outputs")
    if isinstance(so, dict):
        given = [k for k in _CONSTRAINTS if so.get(k) is not None]
        if len(given) > 1:
            return vllm_error(
                400,
                "You can only use one kind of structured outputs constraint but multiple "
                f"are specified: {so}",
            )
        if so.get("choice") == []:
            return vllm_error(400, "structured_outputs.choice must not be empty")
        if isinstance(so.get("regex"), str):
            try:
                re.compile(so["regex"])
            except re.error as exc:
                return vllm_error(400, f"Invalid regex {so['regex']!r}: {exc}")
        if isinstance(so.get("grammar"), str) and grammar_instance(so["grammar"]) is None:
            return vllm_error(400, "Invalid grammar specification.")
    return None


# --------------------------------------------------------------------------- constraints


def _spaced(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _constrained_text(body: dict[str, Any]) -> str | None:
    so = body.get("structured_outputs")
    if isinstance(so, dict):
        if isinstance(so.get("choice"), list) and so["choice"]:
            return str(so["choice"][0])
        if isinstance(so.get("regex"), str):
            return regex_instance(so["regex"])
        if so.get("json") is not None:
            schema = so["json"]
            if isinstance(schema, str):
                schema = json.loads(schema)
            return _spaced(schema_instance(schema))
        if isinstance(so.get("grammar"), str):
            return grammar_instance(so["grammar"])
        if so.get("json_object"):
            return _spaced({"result": "text"})
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        spec = rf.get("json_schema") or {}
        return _spaced(schema_instance(spec.get("schema", {}) if isinstance(spec, dict) else {}))
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return _spaced({"result": "text"})
    return None


def regex_instance(pattern: str) -> str:
    """A short, deterministic string that ``pattern`` fully matches (the first branch,
    the first character of a set, the fewest repetitions)."""
    import re._parser as sre  # the stdlib's own regex parser

    def walk(items: Any) -> str:
        out = []
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(arg))
            elif name == "ANY":
                out.append("a")
            elif name == "IN":
                out.append(_first_in(arg))
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, _high, sub = arg
                out.append(walk(sub) * low)
            elif name == "SUBPATTERN":
                out.append(walk(arg[-1]))
            elif name == "BRANCH":
                out.append(walk(arg[1][0]))
            elif name == "CATEGORY":
                out.append(_category(str(arg)))
            elif name in ("AT", "ASSERT", "ASSERT_NOT"):
                continue
            else:
                raise ValueError(f"regex construct {name} not supported by the test server")
        return "".join(out)

    text = walk(sre.parse(pattern))
    if re.fullmatch(pattern, text) is None:
        raise ValueError(f"could not build an instance of {pattern!r}")
    return text


def _category(name: str) -> str:
    if "DIGIT" in name:
        return "0" if "NOT" not in name else "a"
    if "SPACE" in name:
        return " " if "NOT" not in name else "a"
    return "a" if "NOT" not in name else " "


def _first_in(items: Any) -> str:
    negate = any(str(op) == "NEGATE" for op, _ in items)
    if negate:
        excluded = {chr(arg) for op, arg in items if str(op) == "LITERAL"}
        return next(c for c in "a0 b1" if c not in excluded)
    op, arg = items[0]
    name = str(op)
    if name == "LITERAL":
        return chr(arg)
    if name == "RANGE":
        return chr(arg[0])
    if name == "CATEGORY":
        return _category(str(arg))
    raise ValueError(f"character set item {name} not supported by the test server")


_RULE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*::=\s*(.+?)\s*$")
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([A-Za-z_][\w-]*)|(\|)|(\S)')


def grammar_instance(grammar: str) -> str | None:
    """The first sentence of a small EBNF / GBNF grammar (``root ::= ...`` rules of quoted
    literals, rule names and ``|``); None when the grammar is not of that form."""
    rules: dict[str, str] = {}
    for line in grammar.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _RULE.match(line)
        if m is None:
            return None
        rules[m.group(1)] = m.group(2)
    if "root" not in rules:
        return None

    def expand(rule: str, depth: int) -> str | None:
        if depth > 16 or rule not in rules:
            return None
        out = []
        for lit, ref, bar, other in _TOKEN.findall(rules[rule]):
            if bar:
                break  # the first alternative
            if other:
                return None
            if ref:
                sub = expand(ref, depth + 1)
                if sub is None:
                    return None
                out.append(sub)
            else:
                out.append(bytes(lit, "utf-8").decode("unicode_escape"))
        return "".join(out)

    return expand("root", 0)


# --------------------------------------------------------------------------- the dialect


def _reasoning_field(model: str) -> str | None:
    reasons = ("reasoner", "gpt-oss", "qwen3", "r1")
    return "reasoning" if any(r in model.lower() for r in reasons) else None


def _usage(openai_usage: dict[str, Any]) -> dict[str, Any]:
    cached = openai_usage["prompt_tokens_details"]["cached_tokens"]
    return {
        "prompt_tokens": openai_usage["prompt_tokens"],
        "total_tokens": openai_usage["total_tokens"],
        "completion_tokens": openai_usage["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": cached} if cached else None,
    }


VLLM_DIALECT = ChatDialect(
    name="vllm",
    reasoning_field=_reasoning_field,
    check=_check,
    constrained_text=_constrained_text,
    strict_tools_constrained=True,
    tool_call_id_prefix="chatcmpl-tool-",
    choice_extra={"stop_reason": None, "token_ids": None},
    body_extra={"prompt_logprobs": None, "prompt_token_ids": None, "kv_transfer_params": None},
    usage=_usage,
    chunk_fingerprint=False,
)

# Ollama's OpenAI-compatible endpoint (/v1/chat/completions): a stream sends each tool
# call whole, in its own chunk, under index 0 with its own id.
OLLAMA_OPENAI_DIALECT = ChatDialect(name="ollama-openai", whole_tool_calls_at_index0=True)


def vllm_model_card(model_id: str, state: ServerState) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 1735689600,
        "owned_by": "vllm",
        "root": model_id,
        "parent": None,
        "max_model_len": state.context_length,
        "permission": [],
    }


def vllm_embedding_too_long(state: ServerState, texts: list[str]) -> web.Response | None:
    longest = max((count_words(t) for t in texts), default=0)
    if longest <= state.context_length:
        return None
    return vllm_error(
        400,
        f"This model's maximum context length is {state.context_length} tokens. However, "
        f"you requested {longest} tokens in the input for embedding generation. Please "
        "reduce the length of the input.",
        "input_tokens",
    )
