"""Text Generation Inference: ``/generate`` and ``/generate_stream`` bodies and replies,
grammars in TGI's shape, the server's limits from ``/info``, and embeddings from a Text
Embeddings Inference server (``/embed``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmkit.base import parse_structured, response_format_payload
from llmkit.core.errors import InvalidRequestError, StreamError
from llmkit.core.stop_sequences import StopScanner
from llmkit.core.types import ChatResponse, Message, StreamChunk, Usage
from llmkit.http.error_mapping import error_from_payload
from llmkit.http.streaming import SSEEvent
from llmkit.http.transport import HTTPTransport

__all__ = [
    "GENERATE_PARAMETERS",
    "GENERATE_UNSUPPORTED",
    "TGILimits",
    "generate_body",
    "generate_response",
    "generate_stream_chunks",
    "grammar",
    "render_prompt",
    "tei_embed",
]

TGI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}
# TGI's own ``parameters`` of /generate, passed through by name.
GENERATE_PARAMETERS = frozenset(
    {"best_of", "repetition_penalty", "truncate", "watermark", "typical_p", "top_n_tokens",
     "do_sample", "return_full_text", "adapter_id", "decoder_input_details"}
)
GENERATE_UNSUPPORTED = {
    "presence_penalty": "TGI's /generate has no presence_penalty (use repetition_penalty)",
    "n": "TGI's /generate returns one sequence (best_of picks the best of several)",
    "reasoning_effort": "TGI's /generate has no reasoning control",
    "think": "TGI's /generate has no reasoning control",
}


def render_prompt(messages: Sequence[Message]) -> str:
    """The prompt sent to TGI's ``/generate`` in ``api="tgi"`` mode.

    Each message becomes ``"<Role>: <text>"`` (``System``, ``User``, ``Assistant``, ``Tool``),
    messages are separated by a blank line, and the prompt ends with ``"Assistant:"`` so the
    model continues as the assistant. Servers whose model needs its own chat template should
    use ``api="tgi-chat"`` (TGI applies the template itself).
    """
    parts = [f"{str(m.role).capitalize()}: {m.text()}" for m in messages]
    parts.append("Assistant:")
    return "\n\n".join(parts)


def grammar(response_format: Any) -> tuple[dict[str, Any] | None, Any]:
    """TGI's grammar for a ``response_format`` (``{"type": "json", "value": <schema>}``, the
    shape of both ``parameters.grammar`` and the messages API's ``response_format``), and
    the pydantic class to validate the reply into, if any."""
    payload, model_cls = response_format_payload(response_format)
    if payload is None or payload.get("type") == "text":
        return None, model_cls
    if payload.get("type") == "json_object":
        return {"type": "json", "value": {"type": "object"}}, model_cls
    schema = (payload.get("json_schema") or {}).get("schema")
    return {"type": "json", "value": schema or {"type": "object"}}, model_cls


@dataclass(frozen=True, slots=True)
class TGILimits:
    """A TGI server's request limits (``GET /info``); ``None`` where it does not say."""

    max_stop_sequences: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_best_of: int | None = None
    max_client_batch_size: int | None = None

    @classmethod
    def of(cls, info: Mapping[str, Any] | None) -> TGILimits:
        if not info:
            return cls()

        def number(*keys: str) -> int | None:
            for key in keys:
                value = info.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
            return None

        return cls(
            max_stop_sequences=number("max_stop_sequences"),
            max_input_tokens=number("max_input_tokens", "max_input_length"),
            max_total_tokens=number("max_total_tokens"),
            max_best_of=number("max_best_of"),
            max_client_batch_size=number("max_client_batch_size"),
        )

    def check(self, send: Mapping[str, Any], provider: str) -> None:
        """Raise :class:`InvalidRequestError` for options the server would reject."""

        def fail(message: str) -> InvalidRequestError:
            return InvalidRequestError(f"{message} (limits from the server's /info)", provider=provider)

        stops = send.get("stop") or ()
        if self.max_stop_sequences is not None and len(stops) > self.max_stop_sequences:
            raise fail(
                f"stop has {len(stops)} sequences; this TGI server accepts at most "
                f"{self.max_stop_sequences}"
            )
        max_new = send.get("max_tokens")
        if self.max_total_tokens is not None and isinstance(max_new, int):
            if max_new >= self.max_total_tokens:
                raise fail(
                    f"max_tokens={max_new} leaves no room for the prompt: this TGI server's "
                    f"max_total_tokens (prompt + reply) is {self.max_total_tokens}"
                )
        best_of = send.get("best_of")
        if self.max_best_of is not None and isinstance(best_of, int) and best_of > self.max_best_of:
            raise fail(f"best_of={best_of} exceeds this TGI server's max_best_of={self.max_best_of}")
        truncate = send.get("truncate")
        if (
            self.max_input_tokens is not None
            and isinstance(truncate, int)
            and truncate > self.max_input_tokens
        ):
            raise fail(
                f"truncate={truncate} exceeds this TGI server's max_input_tokens="
                f"{self.max_input_tokens}"
            )


# --------------------------------------------------------------------------- /generate


def generate_body(
    messages: Sequence[Message], send: Mapping[str, Any], response_format: Any, *, stream: bool
) -> tuple[dict[str, Any], list[str], Any]:
    """The ``/generate`` (or ``/generate_stream``) body from what the user set, the stop
    sequences to cut the reply at, and the pydantic class for ``parsed``."""
    params: dict[str, Any] = {"details": True}
    if not stream:
        params["decoder_input_details"] = True  # prefill tokens: the prompt's token count
    if "max_tokens" in send:
        params["max_new_tokens"] = send["max_tokens"]
    temperature = send.get("temperature")
    if temperature is not None:
        if float(temperature) <= 0.0:
            params["do_sample"] = False  # TGI rejects temperature 0: greedy decoding
        else:
            params["do_sample"] = True
            params["temperature"] = float(temperature)
    top_p = send.get("top_p")
    if top_p is not None:
        if not 0.0 < float(top_p) <= 1.0:
            raise InvalidRequestError(f"TGI needs 0 < top_p <= 1, not {top_p!r}", provider="huggingface")
        if float(top_p) < 1.0:  # TGI rejects top_p == 1.0, which is no nucleus filter
            params["top_p"] = float(top_p)
    stops = [s for s in (send.get("stop") or []) if s]
    if stops:
        params["stop"] = stops
    for key in ("seed", "top_k", "frequency_penalty"):
        if send.get(key) is not None:
            params[key] = send[key]
    if send.get("logprobs") and send.get("top_logprobs"):
        params["top_n_tokens"] = send["top_logprobs"]
    for key in GENERATE_PARAMETERS:
        if key in send:
            params[key] = send[key]
    fmt, model_cls = grammar(response_format)
    if fmt is not None:
        params["grammar"] = fmt
    return {"inputs": render_prompt(messages), "parameters": params}, stops, model_cls


def cut_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _token_logprobs(tokens: Any) -> list[dict[str, Any]] | None:
    if not isinstance(tokens, list) or not tokens:
        return None
    return [
        {"token": t.get("text", ""), "logprob": t.get("logprob")}
        for t in tokens
        if isinstance(t, dict) and not t.get("special")
    ]


def generate_response(
    data: Any,
    stops: Sequence[str],
    model: str,
    provider: str,
    response_format: Any,
    model_cls: Any,
    want_logprobs: bool,
) -> ChatResponse:
    """A ``/generate`` reply: the text cut at the first stop sequence, the prompt's token
    count from the prefill tokens (``decoder_input_details``)."""
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict) or "generated_text" not in data:
        raise error_from_payload(
            data, status=200, provider=provider, default_message="TGI response has no generated_text"
        )
    details = data.get("details") or {}
    raw_finish = details.get("finish_reason")
    text = str(data.get("generated_text") or "")
    if stops:
        text, _ = cut_stop(text, stops)
    usage = Usage.of(
        details.get("input_length") or len(details.get("prefill") or ()),
        details.get("generated_tokens"),
    )
    response = ChatResponse(
        content=text,
        finish_reason=TGI_FINISH.get(str(raw_finish), "stop"),
        usage=usage,
        model=model,
        raw=data,
        logprobs=_token_logprobs(details.get("tokens")) if want_logprobs else None,
    )
    if response_format is not None:
        response.parsed = parse_structured(text, model_cls or response_format, provider, response)
    return response


def stream_last(ev: SSEEvent) -> bool:
    """Whether an SSE event ends a ``/generate_stream`` stream."""
    data = ev.data.strip()
    if not data or data == "[DONE]":
        return data == "[DONE]"
    try:
        obj = ev.json()
    except (ValueError, StreamError):
        return False
    return isinstance(obj, dict) and ("error" in obj or obj.get("generated_text") is not None)


def stream_event(ev: SSEEvent, provider: str) -> dict[str, Any] | None:
    """One decoded ``/generate_stream`` event (runs inside the transport)."""
    data = ev.data.strip()
    if not data or data == "[DONE]":
        return None
    obj = ev.json()
    if not isinstance(obj, dict):
        raise StreamError(f"unexpected stream event: {ev.data[:200]!r}", provider=provider)
    if "error" in obj:
        raise error_from_payload(obj, status=None, provider=provider)
    return obj


async def generate_stream_chunks(
    events: AsyncGenerator[dict[str, Any] | None, None], stops: Sequence[str]
) -> AsyncGenerator[StreamChunk, None]:
    """Stream chunks of ``/generate_stream`` events: text held back while it may start a
    stop sequence and cut at one; the last chunk has ``finish_reason`` and ``usage``."""
    text = ""
    sent = 0
    scanner = StopScanner(stops)  # linear: each token is searched with a short tail only
    async for obj in events:
        if obj is None:
            continue
        token = obj.get("token") or {}
        piece = "" if token.get("special") else str(token.get("text") or "")
        text += piece
        final = obj.get("generated_text")
        if final is None:
            delta = scanner.feed(piece)
            if delta:
                yield StreamChunk(delta=delta, raw=obj)
                sent += len(delta)
            continue
        details = obj.get("details") or {}
        full, _ = cut_stop(str(final), stops) if stops else (str(final), False)
        if not full.startswith(text[:sent]):  # decoding differs: use the tokens
            full = cut_stop(text, stops)[0] if stops else text
        raw_finish = details.get("finish_reason")
        yield StreamChunk(
            delta=full[sent:],
            finish_reason=TGI_FINISH.get(str(raw_finish), "stop"),
            usage=Usage.of(details.get("input_length"), details.get("generated_tokens")),
            raw=obj,
        )


# --------------------------------------------------------------------------- TEI


async def tei_embed(
    transport: HTTPTransport, base_url: str, texts: list[str], extra: Mapping[str, Any], model: str
) -> list[list[float]]:
    """Embeddings from a Text Embeddings Inference server: ``POST {base_url}/embed`` with
    ``inputs`` and TEI's ``normalize``, ``truncate``, ``truncation_direction``,
    ``prompt_name`` (from ``extra``); the reply is one vector per input."""
    body: dict[str, Any] = {"inputs": texts}
    for key in ("normalize", "truncate", "truncation_direction", "prompt_name"):
        if extra.get(key) is not None:
            body[key] = extra[key]
    if extra.get("normalize_embeddings") is not None and "normalize" not in body:
        body["normalize"] = bool(extra["normalize_embeddings"])
    data = await transport.request("POST", f"{base_url.rstrip('/')}/embed", json=body, model=model)
    if (
        not isinstance(data, list)
        or len(data) != len(texts)
        or not all(isinstance(v, list) for v in data)
    ):
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise StreamError(
            f"TEI /embed returned {got} vectors for {len(texts)} inputs", provider=transport.provider
        )
    return [[float(x) for x in v] for v in data]
