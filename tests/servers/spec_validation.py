"""Strict validation of what the test servers receive and send, against the providers'
own published specifications (``$LLMKIT_SPECS``, default ``<repo>/../shared/specs``).

Every request body a test server receives and every JSON body / stream event it sends is
checked against the schema of that endpoint:

* OpenAI server: ``openai/openapi-subset.json``.
* Ollama server: ``ollama/openapi.yaml``.
* TGI (``/generate``, ``/generate_stream``, ``/info``, TGI's ``/v1/chat/completions``):
  ``huggingface/tgi-openapi.json``.
* HF router: the chat endpoint uses the OpenAI chat schemas (the router is OpenAI-compatible,
  ``inference-providers-tasks-chat-completion.md``); feature extraction uses the payload
  table of ``inference-providers-tasks-feature-extraction.md`` (transcribed below).

**Strictly**: every schema node that lists ``properties`` (or combines parts with
``allOf``) is closed, so a property the specification does not define fails. The only
exceptions are :data:`ALLOWED_EXTRA_PROPERTIES`, each with the document that defines it.
OpenAPI quirks are normalised: ``nullable: true`` (with or without ``type``) means "may
also be null"; boolean ``exclusiveMinimum``/``exclusiveMaximum`` (OpenAPI 3.0) become the
numeric form; ``example``/``examples`` are dropped (TGI's are not always of the declared
type). Validators are compiled once per (spec, schema) and cached.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

JSON = Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- allow-list

# (spec, "Component" or "Component/property/...") -> {property: the document that defines
# it}. The ONLY properties accepted beyond what the OpenAPI files list.
ALLOWED_EXTRA_PROPERTIES: dict[tuple[str, str], dict[str, str]] = {
    ("ollama", "ChatMessage"): {
        "tool_name": "ollama/api.md, /api/chat parameters: `tool_name` on a tool message",
    },
    ("ollama", "ToolCall"): {"type": "ollama/tool-calling.mdx: `\"type\": \"function\"`"},
    ("ollama", "ToolCall/function"): {"index": "ollama/tool-calling.mdx: `function.index`"},
    ("ollama", "ModelSummary/details"): {
        "parent_model": "ollama/api.md, List Local Models response: `details.parent_model`",
    },
    ("ollama", "GenerateResponse"): {"context": "ollama/api.md, /api/generate responses"},
    ("ollama", "GenerateStreamEvent"): {"context": "ollama/api.md, /api/generate responses"},
    ("ollama", "ShowResponse"): {"modelfile": "ollama/api.md, Show Model Information response"},
    ("ollama", "CreateRequest"): {
        "files": "ollama/api.md, Create a Model parameters: `files` (file name -> blob digest)",
        "adapters": "ollama/api.md, Create a Model parameters: `adapters` (file name -> digest)",
    },
    # Reasoning text of OpenAI-compatible servers (not in OpenAI's own spec, which returns
    # none): llama.cpp tools/server/README.md (`reasoning_format`: "thoughts in
    # message.reasoning_content"), vLLM docs "Reasoning Outputs" (`reasoning_content`, and
    # `reasoning` in newer releases), DeepSeek API "Reasoning Model" (`reasoning_content`).
    ("openai", "ChatCompletionResponseMessage"): {
        "reasoning_content": "llama.cpp server README / vLLM Reasoning Outputs / DeepSeek API",
        "reasoning": "vLLM Reasoning Outputs (newer releases)",
    },
    ("openai", "ChatCompletionStreamResponseDelta"): {
        "reasoning_content": "llama.cpp server README / vLLM Reasoning Outputs / DeepSeek API",
        "reasoning": "vLLM Reasoning Outputs (newer releases)",
    },
    # vLLM's /v1/models: ModelCard.max_model_len (vLLM docs, OpenAI-compatible server).
    ("openai", "Model"): {"max_model_len": "vLLM OpenAI-compatible server, /v1/models"},
}

# vLLM's OpenAI-compatible server (flavour "vllm": the OpenAI spec plus what vLLM's own
# protocol defines). Request fields from vLLM's docs, "OpenAI-Compatible Server", "Extra
# parameters" of the Chat API (vllm/entrypoints/openai/chat_completion/protocol.py,
# ChatCompletionRequest), with their types; structured_outputs is
# vllm/sampling_params.py StructuredOutputsParams (docs "Structured Outputs").
_VLLM_DOC = "vLLM OpenAI-Compatible Server, chat extra parameters (ChatCompletionRequest)"
_VLLM_STRUCTURED_OUTPUTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "json": {"type": ["object", "string"]},
        "regex": {"type": "string"},
        "choice": {"type": "array", "items": {"type": "string"}},
        "grammar": {"type": "string"},
        "json_object": {"type": "boolean"},
        "disable_any_whitespace": {"type": "boolean"},
        "disable_additional_properties": {"type": "boolean"},
        "whitespace_pattern": {"type": "string"},
        "structural_tag": {"type": "string"},
    },
    "additionalProperties": False,
}
VLLM_REQUEST_FIELDS: dict[str, dict[str, Any]] = {
    "top_k": {"type": "integer"},
    "min_p": {"type": "number"},
    "repetition_penalty": {"type": "number"},
    "use_beam_search": {"type": "boolean"},
    "length_penalty": {"type": "number"},
    "stop_token_ids": {"type": "array", "items": {"type": "integer"}},
    "include_stop_str_in_output": {"type": "boolean"},
    "ignore_eos": {"type": "boolean"},
    "min_tokens": {"type": "integer", "minimum": 0},
    "skip_special_tokens": {"type": "boolean"},
    "spaces_between_special_tokens": {"type": "boolean"},
    "truncate_prompt_tokens": {"type": "integer", "minimum": -1},
    "prompt_logprobs": {"type": "integer"},
    "allowed_token_ids": {"type": "array", "items": {"type": "integer"}},
    "bad_words": {"type": "array", "items": {"type": "string"}},
    "echo": {"type": "boolean"},
    "add_generation_prompt": {"type": "boolean"},
    "continue_final_message": {"type": "boolean"},
    "add_special_tokens": {"type": "boolean"},
    "chat_template": {"type": "string"},
    "chat_template_kwargs": {"type": "object"},
    "include_reasoning": {"type": "boolean"},
    "structured_outputs": _VLLM_STRUCTURED_OUTPUTS,
    "priority": {"type": "integer"},
    "request_id": {"type": "string"},
    "cache_salt": {"type": "string", "minLength": 1},
}
# (spec, "Component/property/[]/...": "[]" steps into ``items``) -> {property: (schema,
# the document that defines it)}: properties added with a type.
TYPED_EXTRA_PROPERTIES: dict[tuple[str, str], dict[str, tuple[dict[str, Any], str]]] = {
    ("vllm", "CreateChatCompletionRequest"): {
        name: (schema, _VLLM_DOC) for name, schema in VLLM_REQUEST_FIELDS.items()
    },
    # vLLM's ChatMessage / DeltaMessage: `reasoning` (renamed from `reasoning_content`,
    # which vLLM 0.32 no longer sends: docs "Reasoning Outputs").
    ("vllm", "ChatCompletionResponseMessage"): {
        "reasoning": ({"type": ["string", "null"]}, "vLLM Reasoning Outputs: `reasoning`"),
    },
    ("vllm", "ChatCompletionStreamResponseDelta"): {
        "reasoning": ({"type": ["string", "null"]}, "vLLM Reasoning Outputs: `reasoning`"),
    },
    # ChatCompletionResponse / ChatCompletionResponseChoice (chat_completion/protocol.py).
    ("vllm", "CreateChatCompletionResponse"): {
        "prompt_logprobs": ({"type": ["array", "null"]}, "vLLM ChatCompletionResponse"),
        "prompt_token_ids": ({"type": ["array", "null"]}, "vLLM ChatCompletionResponse"),
        "kv_transfer_params": ({"type": ["object", "null"]}, "vLLM ChatCompletionResponse"),
    },
    ("vllm", "CreateChatCompletionResponse/choices/[]"): {
        "stop_reason": ({"type": ["integer", "string", "null"]},
                        "vLLM ChatCompletionResponseChoice.stop_reason"),
        "token_ids": ({"type": ["array", "null"]}, "vLLM ChatCompletionResponseChoice"),
    },
    ("vllm", "CreateChatCompletionStreamResponse/choices/[]"): {
        "stop_reason": ({"type": ["integer", "string", "null"]},
                        "vLLM ChatCompletionResponseStreamChoice.stop_reason"),
        "token_ids": ({"type": ["array", "null"]}, "vLLM ChatCompletionResponseStreamChoice"),
    },
    # vLLM's /v1/models: ModelCard (engine/protocol.py).
    ("vllm", "Model"): {
        "max_model_len": ({"type": ["integer", "null"]}, "vLLM ModelCard.max_model_len"),
        "root": ({"type": ["string", "null"]}, "vLLM ModelCard.root"),
        "parent": ({"type": ["string", "null"]}, "vLLM ModelCard.parent"),
        "permission": ({"type": "array"}, "vLLM ModelCard.permission"),
    },
}

# (spec, "Component/property") -> the schema that replaces the property's, with the doc.
WIDENED_PROPERTIES: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("openai", "Embedding/embedding"): (
        {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
        "openai/openapi-subset.json, CreateEmbeddingRequest.encoding_format: `base64`",
    ),
    ("vllm", "Embedding/embedding"): (
        {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
        "openai/openapi-subset.json, CreateEmbeddingRequest.encoding_format: `base64`",
    ),
    # vLLM's ErrorInfo.code is the HTTP status as an int (engine/protocol.py ErrorInfo).
    ("vllm", "Error/code"): ({"type": ["integer", "string", "null"]}, "vLLM ErrorInfo.code: int"),
    # vLLM's UsageInfo.prompt_tokens_details is null unless --enable-prompt-tokens-details.
    ("vllm", "CompletionUsage/prompt_tokens_details"): (
        {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
            "cached_tokens": {"type": ["integer", "null"]}}, "additionalProperties": False}]},
        "vLLM UsageInfo.prompt_tokens_details (PromptTokenUsageInfo | None)",
    ),
}

# HF router feature extraction, transcribed from the "Payload" and "Response" tables of
# huggingface/inference-providers-tasks-feature-extraction.md (there is no OpenAPI file).
FEATURE_EXTRACTION_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "inputs": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "normalize": {"type": "boolean"},
        "prompt_name": {"type": "string"},
        "truncate": {"type": "boolean"},
        "truncation_direction": {"enum": ["left", "right"]},
    },
    "additionalProperties": False,
}
FEATURE_EXTRACTION_RESPONSE: dict[str, Any] = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number"}},
}

# --------------------------------------------------------------------------- spec loading

SPEC_FILES = {
    "openai": "openai/openapi-subset.json",
    "vllm": "openai/openapi-subset.json",  # with vLLM's own fields (above)
    "ollama": "ollama/openapi.yaml",
    "tgi": "huggingface/tgi-openapi.json",
}


def specs_dir() -> Path:
    return Path(os.environ.get("LLMKIT_SPECS") or REPO_ROOT.parent / "shared" / "specs")


@cache
def load_spec(name: str) -> dict[str, Any]:
    path = specs_dir() / SPEC_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"API specification {path} is missing: set LLMKIT_SPECS to the specs folder "
            "(the one holding openai/, ollama/ and huggingface/)"
        )
    text = path.read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return doc


def require_specs() -> None:
    """Load every spec now: a missing specs folder fails here, with how to fix it."""
    for name in SPEC_FILES:
        load_spec(name)


_REF_PREFIX = "#/components/schemas/"
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
_SCHEMA_ONE = (
    "items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
)
_DROPPED = frozenset({"example", "examples", "discriminator", "xml", "externalDocs"})


class _StrictSchemas:
    """The components of one spec, rewritten closed (see the module docstring). A component
    used as an ``allOf`` part is referenced in an "open" variant (``<name>~open``) so the
    parts can add up; the schema that combines them is closed."""

    def __init__(self, spec_name: str) -> None:
        spec = load_spec(spec_name)
        self.source: dict[str, Any] = copy.deepcopy(spec["components"]["schemas"])
        for (spec_key, where), extra in ALLOWED_EXTRA_PROPERTIES.items():
            if spec_key == spec_name:
                props = self._at(where).setdefault("properties", {})
                for prop in extra:
                    props.setdefault(prop, {})
        for (spec_key, where), typed in TYPED_EXTRA_PROPERTIES.items():
            if spec_key == spec_name:
                props = self._at(where).setdefault("properties", {})
                for prop, (schema, _doc) in typed.items():
                    props[prop] = schema
        for (spec_key, where), (schema, _doc) in WIDENED_PROPERTIES.items():
            if spec_key == spec_name:
                parent, _, prop = where.rpartition("/")
                self._at(parent)["properties"][prop] = schema
        self.defs: dict[str, Any] = {}
        self._pending: list[tuple[str, bool]] = []

    def _at(self, where: str) -> dict[str, Any]:
        name, *path = where.split("/")
        node: dict[str, Any] = self.source[name]
        for prop in path:
            node = node["items"] if prop == "[]" else node["properties"][prop]
        return node

    def top_level_properties(self, name: str) -> set[str]:
        """The property names a component defines (its ``allOf`` parts' included)."""
        node = self.source[name]
        names = set(node.get("properties") or ())
        for part in node.get("allOf") or ():
            ref = part.get("$ref", "")
            if ref.startswith(_REF_PREFIX):
                names |= self.top_level_properties(ref[len(_REF_PREFIX):])
            else:
                names |= set(part.get("properties") or ())
        return names

    def ref(self, name: str, open_: bool) -> str:
        key = f"{name}~open" if open_ else name
        if key not in self.defs:
            self.defs[key] = {}  # placeholder against cycles
            self._pending.append((name, open_))
        return f"#/$defs/{key}"

    def build(self, root: dict[str, Any]) -> dict[str, Any]:
        while self._pending:
            name, open_ = self._pending.pop()
            self.defs[f"{name}~open" if open_ else name] = self.node(self.source[name], open_)
        root["$defs"] = self.defs
        return root

    def node(self, schema: Any, open_: bool = False) -> Any:
        if not isinstance(schema, dict):
            return schema
        out: dict[str, Any] = {}
        combines = "properties" in schema or "allOf" in schema
        for key, value in schema.items():
            if key in _DROPPED or key.startswith("x-") or key == "nullable":
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                out[key] = self.ref(value[len(_REF_PREFIX) :], open_)
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self.node(v) for k, v in value.items()}
            elif key in _SCHEMA_ONE and isinstance(value, dict):
                out[key] = self.node(value)
            elif key == "items" and isinstance(value, list):
                out["prefixItems"] = [self.node(v) for v in value]
            elif key == "allOf":
                out[key] = [self.node(v, True) for v in value]
            elif key in ("anyOf", "oneOf"):
                out[key] = [self.node(v, open_ or combines) for v in value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if value and bound in schema:
                    out[key] = schema[bound]
            else:
                out[key] = value
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if isinstance(schema.get(key), bool) and schema[key]:
                out.pop(bound, None)
        if (
            not open_
            and combines
            and "additionalProperties" not in schema
            and "unevaluatedProperties" not in schema
        ):
            out["unevaluatedProperties"] = False
        if schema.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out


@cache
def validator(spec_name: str, schema_name: str) -> Draft202012Validator:
    """A compiled validator for component ``schema_name`` of spec ``spec_name`` (cached)."""
    strict = _StrictSchemas(spec_name)
    root = strict.build({"$ref": strict.ref(schema_name, False)})
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


@cache
def _inline_validator(name: str) -> Draft202012Validator:
    schema = {"feature-extraction-request": FEATURE_EXTRACTION_REQUEST,
              "feature-extraction-response": FEATURE_EXTRACTION_RESPONSE}[name]
    return Draft202012Validator(schema)


# --------------------------------------------------------------------------- opt-out

_exemption: list[str | None] = [None]


def set_exemption(reason: str | None) -> None:
    """Set by tests/conftest.py from a test's ``spec_exempt`` marker (the only opt-out)."""
    _exemption[0] = reason


def exemption() -> str | None:
    """Why the running test may send requests the spec does not allow (``None``: it may not)."""
    return _exemption[0]


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    """The schemas of one endpoint: ``(spec, component)`` pairs, ``None`` when the spec
    defines none (e.g. no request body)."""

    request: tuple[str, str] | None
    response: tuple[str, str] | None
    stream_event: tuple[str, str] | None = None
    error: tuple[str, str] | None = None
    # Ollama: the last NDJSON object (``"done": true``) is the full response with the
    # statistics (api.md: "The final response in the stream also includes ...").
    final_event: tuple[str, str] | None = None
    # vLLM: request fields nobody defines are accepted and ignored (OpenAIBaseModel has
    # extra="allow" and logs "The following fields were present in the request but
    # ignored"); the fields it defines are still checked.
    ignores_unknown_fields: bool = False

    def event_schema(self, event: JSON) -> tuple[str, str] | None:
        done = isinstance(event, dict) and event.get("done") is True
        return self.final_event if done and self.final_event else self.stream_event


_OPENAI_ERROR = ("openai", "ErrorResponse")
_OLLAMA_ERROR = ("ollama", "ErrorResponse")
_TGI_ERROR = ("tgi", "ErrorResponse")
_INLINE = "inline"

OPENAI_CHAT = Endpoint(
    ("openai", "CreateChatCompletionRequest"),
    ("openai", "CreateChatCompletionResponse"),
    ("openai", "CreateChatCompletionStreamResponse"),
    _OPENAI_ERROR,
)

_VLLM_ERROR = ("vllm", "ErrorResponse")

# (method, path regex) -> Endpoint, per test-server flavour.
ENDPOINTS: dict[str, list[tuple[str, str, Endpoint]]] = {
    "openai": [
        ("POST", r"/v1/chat/completions", OPENAI_CHAT),
        # openapi-subset.json lists no stream schema for legacy completions; OpenAI streams
        # the same CreateCompletionResponse object there.
        ("POST", r"/v1/completions", Endpoint(
            ("openai", "CreateCompletionRequest"), ("openai", "CreateCompletionResponse"),
            ("openai", "CreateCompletionResponse"), _OPENAI_ERROR)),
        ("POST", r"/v1/embeddings", Endpoint(
            ("openai", "CreateEmbeddingRequest"), ("openai", "CreateEmbeddingResponse"),
            None, _OPENAI_ERROR)),
        ("GET", r"/v1/models", Endpoint(None, ("openai", "ListModelsResponse"), None,
                                        _OPENAI_ERROR)),
        ("GET", r"/v1/models/.+", Endpoint(None, ("openai", "Model"), None, _OPENAI_ERROR)),
    ],
    "vllm": [
        ("POST", r"/v1/chat/completions", Endpoint(
            ("vllm", "CreateChatCompletionRequest"), ("vllm", "CreateChatCompletionResponse"),
            ("vllm", "CreateChatCompletionStreamResponse"), _VLLM_ERROR,
            ignores_unknown_fields=True)),
        ("POST", r"/v1/completions", Endpoint(
            ("vllm", "CreateCompletionRequest"), ("vllm", "CreateCompletionResponse"),
            ("vllm", "CreateCompletionResponse"), _VLLM_ERROR, ignores_unknown_fields=True)),
        ("POST", r"/v1/embeddings", Endpoint(
            ("vllm", "CreateEmbeddingRequest"), ("vllm", "CreateEmbeddingResponse"),
            None, _VLLM_ERROR, ignores_unknown_fields=True)),
        ("GET", r"/v1/models", Endpoint(None, ("vllm", "ListModelsResponse"), None,
                                        _VLLM_ERROR)),
        ("GET", r"/v1/models/.+", Endpoint(None, ("vllm", "Model"), None, _VLLM_ERROR)),
    ],
    "ollama": [
        ("POST", r"/api/generate", Endpoint(
            ("ollama", "GenerateRequest"), ("ollama", "GenerateResponse"),
            ("ollama", "GenerateStreamEvent"), _OLLAMA_ERROR, ("ollama", "GenerateResponse"))),
        ("POST", r"/api/chat", Endpoint(
            ("ollama", "ChatRequest"), ("ollama", "ChatResponse"),
            ("ollama", "ChatStreamEvent"), _OLLAMA_ERROR, ("ollama", "ChatResponse"))),
        ("POST", r"/api/embed", Endpoint(
            ("ollama", "EmbedRequest"), ("ollama", "EmbedResponse"), None, _OLLAMA_ERROR)),
        ("GET", r"/api/tags", Endpoint(None, ("ollama", "ListResponse"), None, _OLLAMA_ERROR)),
        ("GET", r"/api/ps", Endpoint(None, ("ollama", "PsResponse"), None, _OLLAMA_ERROR)),
        ("POST", r"/api/show", Endpoint(
            ("ollama", "ShowRequest"), ("ollama", "ShowResponse"), None, _OLLAMA_ERROR)),
        ("POST", r"/api/create", Endpoint(
            ("ollama", "CreateRequest"), ("ollama", "StatusResponse"),
            ("ollama", "StatusEvent"), _OLLAMA_ERROR)),
        ("POST", r"/api/copy", Endpoint(("ollama", "CopyRequest"), None, None, _OLLAMA_ERROR)),
        ("POST", r"/api/pull", Endpoint(
            ("ollama", "PullRequest"), ("ollama", "StatusResponse"),
            ("ollama", "StatusEvent"), _OLLAMA_ERROR)),
        ("POST", r"/api/push", Endpoint(
            ("ollama", "PushRequest"), ("ollama", "StatusResponse"),
            ("ollama", "StatusEvent"), _OLLAMA_ERROR)),
        ("DELETE", r"/api/delete", Endpoint(
            ("ollama", "DeleteRequest"), None, None, _OLLAMA_ERROR)),
        ("GET", r"/api/version", Endpoint(None, ("ollama", "VersionResponse"), None,
                                          _OLLAMA_ERROR)),
    ],
    "tgi": [  # make_tgi_app: a TGI server (its messages API included)
        ("POST", r"/generate", Endpoint(
            ("tgi", "GenerateRequest"), ("tgi", "GenerateResponse"), None, _TGI_ERROR)),
        ("POST", r"/generate_stream", Endpoint(
            ("tgi", "GenerateRequest"), None, ("tgi", "StreamResponse"), _TGI_ERROR)),
        ("POST", r"/v1/chat/completions", Endpoint(
            ("tgi", "ChatRequest"), ("tgi", "ChatCompletion"), ("tgi", "ChatCompletionChunk"),
            _TGI_ERROR)),
        ("GET", r"/info", Endpoint(None, ("tgi", "Info"), None, _TGI_ERROR)),
    ],
    "huggingface": [  # make_hf_app: router + TGI (+ Hub, not covered by these specs)
        # The router's own error body is not specified (it relays the provider's).
        ("POST", r"/v1/chat/completions", replace(OPENAI_CHAT, error=None)),
        ("POST", r"/hf-inference/models/.+/pipeline/feature-extraction", Endpoint(
            (_INLINE, "feature-extraction-request"), (_INLINE, "feature-extraction-response"))),
        # Other providers' feature extraction behind the router is OpenAI's embeddings API
        # (huggingface_hub's together / scaleway / deepinfra helpers send and read it).
        ("POST", r"/(?:together|scaleway)/v1/embeddings|/deepinfra/v1/openai/embeddings",
         Endpoint(("openai", "CreateEmbeddingRequest"), ("openai", "CreateEmbeddingResponse"))),
        ("POST", r"/generate", Endpoint(
            ("tgi", "GenerateRequest"), ("tgi", "GenerateResponse"), None, _TGI_ERROR)),
        ("POST", r"/generate_stream", Endpoint(
            ("tgi", "GenerateRequest"), None, ("tgi", "StreamResponse"), _TGI_ERROR)),
        ("GET", r"/info", Endpoint(None, ("tgi", "Info"), None, _TGI_ERROR)),
    ],
}

_COMPILED = {
    flavour: [(method, re.compile(pattern), ep) for method, pattern, ep in rows]
    for flavour, rows in ENDPOINTS.items()
}


def endpoint_for(flavour: str, method: str, path: str) -> Endpoint | None:
    for m, pattern, ep in _COMPILED.get(flavour, ()):
        if m == method and pattern.fullmatch(path):
            return ep
    return None


@cache
def _known_fields(spec_name: str, schema_name: str) -> frozenset[str]:
    return frozenset(_StrictSchemas(spec_name).top_level_properties(schema_name))


def unknown_fields(ref: tuple[str, str] | None, body: JSON) -> list[str]:
    """The top-level fields of ``body`` that schema ``ref`` does not define, sorted."""
    if ref is None or ref[0] == _INLINE or not isinstance(body, dict):
        return []
    known = _known_fields(*ref)
    return sorted(k for k in body if k not in known)


def _validator_for(ref: tuple[str, str]) -> Draft202012Validator:
    spec_name, schema_name = ref
    if spec_name == _INLINE:
        return _inline_validator(schema_name)
    return validator(spec_name, schema_name)


def schema_errors(ref: tuple[str, str] | None, instance: JSON) -> str | None:
    """``None`` when ``instance`` is valid for schema ``ref`` (or there is no schema), else
    a one-paragraph description of the most relevant error."""
    if ref is None:
        return None
    errors = list(_validator_for(ref).iter_errors(instance))
    if not errors:
        return None
    # The deepest error says most (a bad field inside a message also leaves the message
    # list "unevaluated" at the top); inside anyOf/oneOf take the best branch's error.
    errors.sort(key=lambda e: -len(e.absolute_path))
    described = []
    for err in errors[:2]:
        while err.context:
            err = best_match(err.context)
        where = "/".join(str(p) for p in err.absolute_path) or "<body>"
        described.append(f"at {where}: {err.message[:300]}")
    return f"{ref[0]} {ref[1]}: " + "; ".join(described)
