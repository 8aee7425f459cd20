"""The per-call options of the OpenAI provider, typed for ``Unpack``: the portable and
client options, ``model``, and the documented request fields of OpenAI's API and of the
llama.cpp and vLLM servers, which are passed through under their own names. vLLM's
constrained decoding is its ``structured_outputs`` field; the ``guided_*`` fields it
removed in v0.12 are refused with the new form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from llmkit.core.options import CLIENT_OPTIONS, PORTABLE_OPTIONS, CallOptions

__all__ = ["OPENAI_PROVIDER_OPTIONS", "REMOVED_OPTIONS", "OpenAIOptions", "StructuredOutputs"]


class StructuredOutputs(TypedDict, total=False):
    """vLLM's ``structured_outputs`` (one constraint at a time; docs "Structured Outputs")."""

    choice: list[str]
    regex: str
    json: Mapping[str, Any] | str
    grammar: str
    json_object: bool
    structural_tag: str
    disable_any_whitespace: bool
    disable_additional_properties: bool
    whitespace_pattern: str


class OpenAIOptions(CallOptions, total=False):
    model: str
    """This call's model (the config's by default)."""
    # OpenAI
    logit_bias: Mapping[str | int, float]
    """Token id (a str or an int, as openai-python takes it) -> bias."""
    parallel_tool_calls: bool
    user: str
    service_tier: str
    store: bool
    metadata: Mapping[str, str]
    modalities: list[str]
    audio: Mapping[str, Any]
    prediction: Mapping[str, Any]
    web_search_options: Mapping[str, Any]
    verbosity: str
    prompt_cache_key: str
    prompt_cache_retention: str
    safety_identifier: str
    max_completion_tokens: int
    stream_options: Mapping[str, Any]
    # OpenAI's Responses API (extra={"api": "responses"}); refused on chat completions
    previous_response_id: str
    instructions: str
    reasoning: Mapping[str, Any]
    include: list[str]
    truncation: str
    max_tool_calls: int
    conversation: Any
    background: bool
    prompt: Mapping[str, Any]
    # llama.cpp server
    min_p: float
    typical_p: float
    repeat_penalty: float
    repeat_last_n: int
    mirostat: int
    mirostat_tau: float
    mirostat_eta: float
    grammar: str
    json_schema: Mapping[str, Any]
    cache_prompt: bool
    n_probs: int
    samplers: list[str]
    dynatemp_range: float
    dynatemp_exponent: float
    xtc_probability: float
    xtc_threshold: float
    dry_multiplier: float
    dry_base: float
    dry_allowed_length: int
    dry_penalty_last_n: int
    id_slot: int
    n_keep: int
    n_indent: int
    t_max_predict_ms: int
    reasoning_format: str
    chat_template_kwargs: Mapping[str, Any]
    timings_per_token: bool
    post_sampling_probs: bool
    return_tokens: bool
    ignore_eos: bool
    # vLLM
    repetition_penalty: float
    min_tokens: int
    best_of: int
    use_beam_search: bool
    length_penalty: float
    skip_special_tokens: bool
    include_stop_str_in_output: bool
    stop_token_ids: list[int]
    structured_outputs: StructuredOutputs
    add_generation_prompt: bool
    continue_final_message: bool
    chat_template: str
    truncate_prompt_tokens: int


# vLLM's fields removed in v0.12 (vLLM ignores them now: 200, unconstrained text).
REMOVED_OPTIONS: dict[str, str] = {
    f"guided_{key}": (
        f"vLLM removed guided_{key} in v0.12 and ignores it; use "
        f"structured_outputs={{{key!r}: ...}}"
    )
    for key in ("json", "regex", "choice", "grammar", "whitespace_pattern")
}
REMOVED_OPTIONS["guided_decoding_backend"] = (
    "vLLM removed guided_decoding_backend in v0.12; leave it out"
)

# Passed through by name (``model`` is taken out before the options are resolved); the
# removed ones are known here so that they are refused with their reason.
OPENAI_PROVIDER_OPTIONS: frozenset[str] = (
    OpenAIOptions.__optional_keys__ - PORTABLE_OPTIONS - CLIENT_OPTIONS - {"model"}
) | frozenset(REMOVED_OPTIONS)
