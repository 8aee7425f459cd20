"""StreamChunk: a plain slots object (no per-instance dict, no validation on the wire
parsers' path) with the surface of the other result types: fields and defaults, keyword
construction with type checks, value equality, repr, model_dump / model_validate round
trips (the reply cache's form), copies, pickling and use inside pydantic models."""

from __future__ import annotations

import copy
import pickle

import pytest
from pydantic import BaseModel

from llmkit import StreamChunk, ToolCall, Usage
from llmkit.core.types import ToolCallDelta
from llmkit.http.streaming import SSEEvent
from llmkit.providers.ollama.wire import stream_chunk
from llmkit.providers.openai.chat import parse_stream_event


def full_chunk() -> StreamChunk:
    return StreamChunk(
        delta="a", reasoning="r", refusal=None, finish_reason="stop",
        tool_calls=[ToolCallDelta(index=0, id="c1", name="f", arguments='{"x"')],
        usage=Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5), index=1,
        logprobs=[{"token": "a", "logprob": -0.1}],
        completed_tool_calls=[ToolCall("c1", "f", {"x": 1})], raw={"id": "x"},
    )


def test_defaults_and_fields() -> None:
    chunk = StreamChunk()
    assert [getattr(chunk, n) for n in StreamChunk.model_fields] == [
        "", "", None, [], None, None, 0, None, None, None]
    assert StreamChunk().tool_calls is not chunk.tool_calls  # a list per chunk
    assert not hasattr(chunk, "__dict__")
    with pytest.raises(AttributeError):
        chunk.unknown = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("kwargs", [{"delta": 1}, {"reasoning": None}, {"index": "0"},
                                    {"refusal": 3}, {"finish_reason": 1}])
def test_keyword_construction_checks_types(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="StreamChunk"):
        StreamChunk(**kwargs)  # type: ignore[arg-type]


def test_equality_repr_and_hash() -> None:
    assert full_chunk() == full_chunk()
    assert full_chunk() != StreamChunk(delta="a")
    assert StreamChunk(delta="a") != "a"
    text = repr(StreamChunk(delta="a", raw={"secret": "x"}, logprobs=[]))
    assert text == ("StreamChunk(delta='a', reasoning='', refusal=None, tool_calls=[], "
                    "finish_reason=None, usage=None, index=0, completed_tool_calls=None)")
    with pytest.raises(TypeError):
        hash(StreamChunk())


def test_dump_and_validate_round_trip() -> None:
    chunk = full_chunk()
    for mode in ("python", "json"):
        dumped = chunk.model_dump(mode=mode)
        assert set(dumped) == set(StreamChunk.model_fields)
        assert dumped["usage"]["total_tokens"] == 5 and dumped["tool_calls"][0]["id"] == "c1"
        assert StreamChunk.model_validate(dumped) == chunk
    short = StreamChunk(delta="a", usage=Usage(total_tokens=1)).model_dump(
        mode="json", exclude_defaults=True)
    assert set(short) == {"delta", "usage"}
    assert StreamChunk.model_validate(short) == StreamChunk(delta="a", usage=Usage(total_tokens=1))
    assert set(StreamChunk().model_dump(exclude_none=True)) == {"delta", "reasoning", "tool_calls", "index"}
    assert StreamChunk.model_validate(chunk) is chunk
    with pytest.raises(ValueError, match="no field"):
        StreamChunk.model_validate({"delta": "a", "bogus": 1})


def test_copies_and_pickle() -> None:
    chunk = full_chunk()
    assert pickle.loads(pickle.dumps(chunk)) == chunk
    assert copy.copy(chunk) == chunk and copy.deepcopy(chunk) == chunk
    changed = chunk.model_copy(update={"delta": "b"})
    assert changed.delta == "b" and chunk.delta == "a" and changed.usage is chunk.usage
    assert chunk.model_copy(deep=True).usage is not chunk.usage


def test_a_field_of_a_pydantic_model() -> None:
    class Holder(BaseModel):
        chunks: list[StreamChunk]

    held = Holder.model_validate({"chunks": [{"delta": "x"}, StreamChunk(delta="y")]})
    assert [c.delta for c in held.chunks] == ["x", "y"]
    assert held.model_dump()["chunks"][0]["delta"] == "x"


def test_wire_parsers_build_complete_chunks() -> None:
    event = SSEEvent(b'{"choices": [{"index": 0, "delta": {"content": "a", "reasoning_content": "t"},'
                     b' "finish_reason": null}]}')
    chunk = parse_stream_event(event, "openai")
    assert chunk == StreamChunk(delta="a", reasoning="t", raw=chunk.raw)  # type: ignore[union-attr]
    assert stream_chunk(delta="b") == StreamChunk(delta="b")
    assert stream_chunk(delta="b").tool_calls == []
