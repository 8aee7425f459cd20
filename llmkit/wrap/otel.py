"""OpenTelemetry instrumentation (``llmkit[otel]``): ``llmkit.instrument()``.

After ``instrument(tracer_provider=None, meter_provider=None)`` (the global providers when
None) every call of every provider instance (``generate``, ``chat``, both streams,
``embed``, ``embed_batch``) emits one CLIENT span and two histograms that follow the
OpenTelemetry semantic conventions for generative AI clients:

* span ``"{gen_ai.operation.name} {gen_ai.request.model}"`` with ``gen_ai.operation.name``
  (``chat`` or ``embeddings``), ``gen_ai.provider.name``, ``gen_ai.request.model``, the
  request's sampling options (``gen_ai.request.max_tokens``, ``temperature``, ``top_p``,
  ``seed``, ``top_k``, ``stop_sequences``), ``server.address`` / ``server.port``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens`` and
  ``gen_ai.response.finish_reasons``; a failure sets the span status to ERROR and
  ``error.type`` (llmkit's error type, e.g. ``rate_limit``). A stream's span ends with the
  stream. A reply served from the reply cache carries ``llmkit.cache_hit``.
* histogram ``gen_ai.client.operation.duration`` (seconds) and
  ``gen_ai.client.token.usage`` (tokens, ``gen_ai.token.type`` ``input`` / ``output``).

Nothing here reads headers or the config's key: no attribute can carry it. Message
contents are not recorded.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmkit.calls.protocol import LayerCall
from llmkit.calls.seam import set_instrumentation
from llmkit.core.errors import ConfigError, LLMError, redact
from llmkit.core.types import ChatResponse, StreamChunk, Usage

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from llmkit.calls.protocol import CallRecord, CallTarget

__all__ = ["instrument", "uninstrument"]

INSTRUMENTATION_NAME = "llmkit"
OPERATIONS = {
    "generate": "chat",
    "chat": "chat",
    "generate_stream": "chat",
    "chat_stream": "chat",
    "embed": "embeddings",
    "embed_batch": "embeddings",
}
# the semantic conventions' advisory bucket boundaries
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKEN_BUCKETS = [float(4**i) for i in range(14)]
REQUEST_OPTIONS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
}


def instrument(tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None) -> None:
    """Make every call of every instance emit spans and metrics (see the module doc)."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        raise ConfigError(
            "OpenTelemetry is not installed: pip install 'llmkit[otel]'"
        ) from None
    from llmkit.core.version import __version__

    tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider)
    meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider)
    duration = meter.create_histogram(
        "gen_ai.client.operation.duration",
        unit="s",
        description="GenAI operation duration",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )
    tokens = meter.create_histogram(
        "gen_ai.client.token.usage",
        unit="{token}",
        description="Measures number of input and output tokens used",
        explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
    )
    set_instrumentation(_OTelInstrumentation(tracer, duration, tokens))


def uninstrument() -> None:
    """Stop emitting spans and metrics."""
    set_instrumentation(None)


@functools.lru_cache(maxsize=256)
def _server(base_url: str | None) -> dict[str, Any]:
    if not base_url or "://" not in base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return {}
    out: dict[str, Any] = {}
    if parts.hostname:  # never the user-info part
        out["server.address"] = parts.hostname
        out["server.port"] = port or (443 if parts.scheme == "https" else 80)
    return out


class _OTelInstrumentation:
    """The call layer that gives every call of every instance a span and metrics."""

    def __init__(self, tracer: Tracer, duration: Histogram, tokens: Histogram) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.tracer = tracer
        self.duration = duration
        self.tokens = tokens
        self.attach = context.attach
        self.detach = context.detach
        self.in_context = trace.set_span_in_context
        self.client_kind = SpanKind.CLIENT
        self.error_status: Any = lambda description: Status(StatusCode.ERROR, description)

    def start(
        self, llm: CallTarget, operation: str, args: tuple[Any, ...], options: dict[str, Any]
    ) -> _OTelSpan:
        op = OPERATIONS.get(operation, operation)
        model = str(options.get("model") or llm.model)
        common: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": llm.provider,
            "gen_ai.request.model": model,
            **_server(llm.config.base_url),
        }
        attributes = dict(common)
        if op == "chat":
            cfg = llm.config
            effective: dict[str, Any] = {
                "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
            }
            effective.update({k: v for k, v in options.items() if v is not None})
            for name, attr in REQUEST_OPTIONS.items():
                value = effective.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    attributes[attr] = value
            stop = effective.get("stop")
            if stop:
                attributes["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
        span = self.tracer.start_span(f"{op} {model}", kind=self.client_kind, attributes=attributes)
        return _OTelSpan(self, span, common, model)


class _OTelSpan(LayerCall):
    """One call's span."""

    __slots__ = ("common", "finish_reasons", "owner", "request_model", "response_model", "span", "started")

    def __init__(self, owner: _OTelInstrumentation, span: Span, common: dict[str, Any], model: str):
        self.owner = owner
        self.span = span
        self.common = common
        self.request_model = model
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        self.started = time.perf_counter()

    def enter(self) -> object:
        return self.owner.attach(self.owner.in_context(self.span))

    def exit(self, token: object) -> None:
        self.owner.detach(token)  # type: ignore[arg-type]

    def chunk(self, item: Any) -> None:
        if isinstance(item, StreamChunk) and item.finish_reason:
            self.finish_reasons.append(item.finish_reason)

    def finish(self, result: Any, usage: Usage | None, *, cached: bool = False) -> None:
        span = self.span
        if isinstance(result, ChatResponse):
            self.response_model = result.model or None
            if result.finish_reason:
                self.finish_reasons.append(result.finish_reason)
            if usage is None and not cached:
                usage = result.usage
        elif isinstance(result, list) and result and isinstance(result[0], StreamChunk):
            for chunk in result:  # a stream replayed from the cache
                self.chunk(chunk)
        response_model = self.response_model or self.request_model
        done: dict[str, Any] = {"gen_ai.response.model": response_model}
        if self.finish_reasons:
            done["gen_ai.response.finish_reasons"] = self.finish_reasons
        if cached:
            done["llmkit.cache_hit"] = True
        attributes = {**self.common, "gen_ai.response.model": response_model}
        if usage is not None and not cached:
            done["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            done["gen_ai.usage.output_tokens"] = usage.completion_tokens
            self.owner.tokens.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.owner.tokens.record(usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"})
        span.set_attributes(done)
        self.owner.duration.record(time.perf_counter() - self.started, attributes)
        span.end()

    def fail(self, error: BaseException) -> None:
        error_type = error.type if isinstance(error, LLMError) else type(error).__qualname__
        span = self.span
        span.set_attribute("error.type", error_type)
        span.set_status(self.owner.error_status(redact(str(error))))
        self.owner.duration.record(
            time.perf_counter() - self.started, {**self.common, "error.type": error_type}
        )
        span.end()

    # the call layer

    def answered(self, result: Any) -> None:
        self.finish(result, None, cached=True)

    async def succeeded(self, result: Any, record: CallRecord) -> None:
        self.finish(result, record.usage)

    async def failed(self, error: BaseException, record: CallRecord) -> None:
        self.fail(error)

    def abandoned(self, record: CallRecord) -> None:
        self.finish(None, record.usage)
