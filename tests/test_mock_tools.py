"""The mock and tools: checked as every provider checks them, and a ``tool_choice`` that
forces a call answered with one (nothing accepted and dropped)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from llmkit import InvalidRequestError, MockLLM


class Weather(BaseModel):
    city: str
    days: int


def get_time(zone: str) -> str:
    """The time in a zone."""
    return zone


TOOLS: list[Any] = [Weather, get_time]


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        ("required", "Weather"),
        ("get_time", "get_time"),
        (get_time, "get_time"),
        ({"type": "function", "function": {"name": "Weather"}}, "Weather"),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
            {"type": "function", "name": "get_time"}]}}, "get_time"),
    ],
)
async def test_a_forced_tool_choice_is_answered_with_a_call(choice: Any, name: str) -> None:
    llm = MockLLM("mock")
    reply = await llm.chat("what now?", tools=TOOLS, tool_choice=choice)
    assert reply.finish_reason == "tool_calls"
    assert reply.content == ""
    [call] = reply.tool_calls
    assert call.name == name and call.arguments_error is None
    if name == "Weather":
        assert Weather.model_validate(call.arguments)  # arguments fit the tool's schema
    else:
        assert set(call.arguments) == {"zone"} and isinstance(call.arguments["zone"], str)
    again = await llm.chat("what now?", tools=TOOLS, tool_choice=choice)
    assert again.tool_calls == reply.tool_calls  # deterministic


async def test_a_streamed_forced_call_arrives_as_deltas_and_assembled() -> None:
    llm = MockLLM("mock")
    chunks = [c async for c in llm.chat_stream("hi", tools=TOOLS, tool_choice="Weather")]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [d.name for d in deltas] == ["Weather"]
    assert Weather.model_validate_json(deltas[0].arguments)
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert last.completed_tool_calls is not None
    assert [c.name for c in last.completed_tool_calls] == ["Weather"]
    assert "".join(c.delta for c in chunks) == ""


@pytest.mark.parametrize("choice", [None, "auto", "none"])
async def test_an_unforced_choice_gives_the_text_reply(choice: Any) -> None:
    llm = MockLLM("mock", responses=["plain text"])
    reply = await llm.chat("hi", tools=TOOLS, tool_choice=choice)
    assert (reply.content, reply.tool_calls, reply.finish_reason) == ("plain text", [], "stop")


@pytest.mark.parametrize(
    ("tools", "choice", "match"),
    [
        ([42], None, "tool"),
        (TOOLS, "no_such_tool", "tool_choice"),
        (None, "required", "needs tools"),
        (TOOLS, {"type": "function", "function": {"name": "elsewhere"}}, "not among the tools"),
        (TOOLS, 7, "tool_choice"),
    ],
)
async def test_bad_tools_and_choices_are_refused_before_anything_runs(
    tools: Any, choice: Any, match: str
) -> None:
    llm = MockLLM("mock")
    with pytest.raises(InvalidRequestError, match=match):
        await llm.chat("hi", tools=tools, tool_choice=choice)
    with pytest.raises(InvalidRequestError, match=match):
        async for _ in llm.chat_stream("hi", tools=tools, tool_choice=choice):
            pass
    assert llm.calls == []  # nothing ran
