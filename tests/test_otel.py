"""OpenTelemetry instrumentation: spans and metrics with the GenAI semantic-convention
names, received by the SDK's in-memory exporters."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import llmkit
from llmkit import MockLLM, OpenAILLM, ServerError, create_llm
from llmkit.wrap.otel import uninstrument
from tests.servers import ServerHandle, ServerState, serve_openai

KEY = "sk-otel-secret-0123456789abcdef"
CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parents[1]


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    llmkit.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    try:
        yield telemetry
    finally:
        uninstrument()
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown()


@pytest.fixture
async def server() -> AsyncIterator[ServerHandle]:
    async with serve_openai(ServerState(reply="one two three four")) as handle:
        yield handle


def make(server: ServerHandle, **kw: Any) -> OpenAILLM:
    return OpenAILLM(
        {"model": "gpt-4o-mini", "base_url": server.url, "api_key": KEY, "max_retries": 1,
         "extra": {"retry_initial_delay": 0.01}, **kw}
    )


async def test_chat_span_and_metrics_follow_the_conventions(otel: Telemetry, server: ServerHandle) -> None:
    async with make(server) as llm:
        response = await llm.chat("hi", temperature=0.2, max_tokens=50)
    [span] = otel.finished()
    assert span.name == "chat gpt-4o-mini" and span.kind == SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    port = int(server.url.split(":")[2].split("/")[0])
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 50,
        "server.address": "127.0.0.1",
        "server.port": port,
        "gen_ai.response.model": response.model,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
    }
    assert span.status.status_code == StatusCode.UNSET
    [duration] = otel.points("gen_ai.client.operation.duration")
    assert duration.count == 1 and duration.sum > 0
    assert duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["gen_ai.provider.name"] == "openai"
    assert "error.type" not in duration.attributes
    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert tokens["input"].sum == response.usage.prompt_tokens
    assert tokens["output"].sum == response.usage.completion_tokens


async def test_a_stream_span_ends_with_the_stream(otel: Telemetry, server: ServerHandle) -> None:
    async with make(server) as llm:
        async with aclosing(llm.chat_stream("hi")) as stream:
            first = await stream.__anext__()
            assert first is not None
            assert otel.finished() == []  # still open while the stream is
            rest = [c async for c in stream]
        [span] = otel.finished()
        attrs = dict(span.attributes or {})
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        usage = rest[-1].usage
        assert usage is not None and attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens

        text = "".join([d async for d in llm.generate_stream("hi")])
        assert text == "one two three four"
        assert len(otel.finished()) == 2
        assert otel.finished()[1].attributes["gen_ai.usage.input_tokens"] > 0  # type: ignore[index]


async def test_errors_are_recorded_with_error_type(otel: Telemetry, server: ServerHandle) -> None:
    server.state.add_fault("status", path=CHAT, status=503, times=2)
    async with make(server) as llm:
        with pytest.raises(ServerError):
            await llm.generate("hi")
    [span] = otel.finished()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "server_error"  # type: ignore[index]
    [duration] = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "server_error"


async def test_fallback_members_are_child_spans_and_the_key_is_nowhere(
    otel: Telemetry, server: ServerHandle
) -> None:
    server.state.add_fault("status", path=CHAT, status=500, times=2)
    llm = create_llm(
        {"provider": "fallback", "chain": [
            {"provider": "openai", "model": "gpt-4o-mini", "base_url": server.url,
             "api_key": KEY, "max_retries": 1, "extra": {"retry_initial_delay": 0.01}},
            {"provider": "mock", "model": "backup", "extra": {"responses": ["from mock"]}},
        ]}
    )
    async with llm:
        assert await llm.generate("hi") == "from mock"
        vector = await llm.embed("hi")
    spans = {(s.attributes or {})["gen_ai.provider.name"]: s for s in otel.finished()[:3]}
    outer, failed, served = spans["fallback"], spans["openai"], spans["mock"]
    assert failed.parent is not None and failed.parent.span_id == outer.context.span_id
    assert served.parent is not None and served.parent.span_id == outer.context.span_id
    assert failed.status.status_code == StatusCode.ERROR and outer.status.status_code == StatusCode.UNSET
    assert served.attributes["gen_ai.response.model"] == "backup"  # type: ignore[index]
    embeddings = [s for s in otel.finished() if s.name.startswith("embeddings ")]
    assert len(embeddings) == 2 and len(vector) > 0  # the fallback's and the mock's

    texts = []
    for span in otel.finished():
        texts.append(repr(dict(span.attributes or {})))
        texts.append(span.status.description or "")
        texts.extend(repr(dict(e.attributes or {})) for e in span.events)
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        texts.extend(repr(dict(p.attributes)) for p in otel.points(name))
    assert texts and KEY not in "".join(texts)


async def test_cache_hits_are_marked(otel: Telemetry, tmp_path: Path) -> None:
    llm = MockLLM({"cache": str(tmp_path / "c.sqlite")}, responses=["same"])
    assert await llm.generate("hi") == await llm.generate("hi")
    spans = otel.finished()
    assert [s.attributes.get("llmkit.cache_hit") for s in spans] == [None, True]  # type: ignore[union-attr]
    assert len(otel.points("gen_ai.client.token.usage")) == 2  # input and output, first call only
    assert sum(p.count for p in otel.points("gen_ai.client.token.usage")) == 2


def test_without_instrument_nothing_is_imported() -> None:
    code = (
        "import sys, asyncio, llmkit\n"
        "llm = llmkit.create_llm({'provider': 'mock'})\n"
        "llm.on('response', lambda e: None)\n"
        "asyncio.run(llm.generate('hi'))\n"
        "fb = llmkit.FallbackLLM(chain=[llm])\n"
        "import llmkit.sync\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'sqlite3', 'torch', 'transformers', 'sentence_transformers'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


async def test_a_stream_failing_before_its_first_chunk_ends_its_span(otel: Telemetry, tmp_path: Path) -> None:
    llm = MockLLM({"cache": str(tmp_path / "no-such-dir" / "c.sqlite")})
    with pytest.raises(llmkit.ConfigError):
        _ = [d async for d in llm.generate_stream("hi")]
    [span] = otel.finished()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "configuration"  # type: ignore[index]
