"""MockLLM and structured output: replies made up from a model's JSON schema, and scripted
replies that do not fit the model."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from llmkit import ConfigError, InvalidRequestError, MockLLM, NotSupportedError
from llmkit.core.schema_example import example_from_schema


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Address(BaseModel):
    street: str = Field(min_length=10)
    zip_code: Annotated[str, Field(max_length=3)]


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Tree(BaseModel):
    name: str
    children: list[Tree]
    parent: Tree | None


class Everything(BaseModel):
    count: int = Field(gt=5, multiple_of=3)
    ratio: float = Field(gt=0, lt=0.1)
    color: Color
    addresses: list[Address] = Field(min_length=2)
    maybe_address: Address | None
    scores: dict[str, int]
    pair: tuple[int, str]
    when: datetime.datetime
    day: datetime.date
    wait: datetime.timedelta
    ident: uuid.UUID
    pet: Cat | Dog = Field(discriminator="kind")
    tree: Tree
    note: str | None = None
    tags: set[str] = Field(min_length=3)
    flag: bool
    limit: int = 7


async def test_structured_reply_is_a_valid_instance_built_from_the_schema() -> None:
    async with MockLLM("mock") as llm:
        response = await llm.chat("anything", response_format=Everything)
    value = response.parsed
    assert isinstance(value, Everything)
    assert Everything.model_validate_json(response.content) == value
    assert value.count > 5 and value.count % 3 == 0
    assert 0 < value.ratio < 0.1
    assert value.color is Color.red
    assert len(value.addresses) == 2 and all(len(a.street) >= 10 for a in value.addresses)
    assert all(len(a.zip_code) <= 3 for a in value.addresses)
    assert isinstance(value.maybe_address, Address)  # optional without default: filled in
    assert isinstance(value.pet, Cat) and 1 <= value.pet.lives <= 9
    assert len(value.tags) == 3
    assert value.note is None and value.limit == 7  # fields with a default keep it
    # A recursive model stops after one level of recursion.
    assert value.tree.children[0].children == [] and value.tree.parent is not None
    assert value.tree.parent.parent is None
    assert response.finish_reason == "stop"


async def test_structured_reply_is_deterministic_and_streams() -> None:
    async with MockLLM("mock", chunk_size=5) as llm:
        first = await llm.chat("a", response_format=Everything)
        second = await llm.chat("another prompt", response_format=Everything)
        chunks = [c async for c in llm.chat_stream("b", response_format=Cat)]
    assert first.content == second.content
    streamed = "".join(c.delta for c in chunks)
    assert Cat.model_validate_json(streamed) == Cat(kind="cat", lives=1)
    assert all(len(c.delta) <= 5 for c in chunks) and chunks[-1].finish_reason == "stop"


async def test_json_schema_and_json_object_formats() -> None:
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "dog", "schema": Dog.model_json_schema(), "strict": True},
    }
    async with MockLLM("mock") as llm:
        response = await llm.chat("a dog", response_format=schema_format)
        assert response.parsed == {"kind": "dog", "good": True}
        response = await llm.chat("hi", response_format={"type": "json_object"})
        assert response.parsed == {"response": "mock response to: hi"}


async def test_scripted_reply_that_does_not_validate_says_the_reply_is_wrong() -> None:
    async with MockLLM("mock", responses=['{"kind": "cat"}', '{"kind": "cat", "lives": 3}']) as llm:
        with pytest.raises(ConfigError, match=r"scripted reply does not validate as Cat") as info:
            await llm.chat("x", response_format=Cat)
        assert not isinstance(info.value, InvalidRequestError)
        assert "lives" in str(info.value) and "responses" in str(info.value)
        # The next scripted reply is fine and is used as given.
        assert (await llm.chat("x", response_format=Cat)).parsed == Cat(kind="cat", lives=3)


async def test_scripted_reply_in_code_fences_validates() -> None:
    reply = '```json\n{"kind": "dog", "good": false}\n```'
    async with MockLLM("mock", responses=[reply]) as llm:
        assert (await llm.chat("x", response_format=Dog)).parsed == Dog(kind="dog", good=False)


async def test_a_schema_the_mock_cannot_satisfy_is_not_supported_with_a_hint() -> None:
    class Code(BaseModel):
        code: str = Field(pattern=r"^[A-Z]{3}-\d+$")

    class Impossible(BaseModel):
        n: int = Field(gt=1, lt=2)

    async with MockLLM("mock") as llm:
        with pytest.raises(NotSupportedError, match=r"pattern|matching.*responses=\[Code"):
            await llm.chat("x", response_format=Code)
        with pytest.raises(NotSupportedError, match="'n'"):
            await llm.chat("x", response_format=Impossible)
    async with MockLLM("mock", responses=['{"code": "ABC-1"}']) as llm:
        assert (await llm.chat("x", response_format=Code)).parsed == Code(code="ABC-1")


async def test_plain_text_replies_still_truncate_at_max_tokens() -> None:
    async with MockLLM("mock", responses=["one two three four"]) as llm:
        response = await llm.chat("x", max_tokens=2)
        assert response.content == "one two" and response.finish_reason == "length"
    async with MockLLM("mock") as llm:  # a made-up structured reply is never cut short
        response = await llm.chat("x", max_tokens=1, response_format=Everything)
        assert isinstance(response.parsed, Everything)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "minimum": 10, "maximum": 20}, 10),
        ({"type": "integer", "exclusiveMaximum": 0}, -1),
        ({"type": "number", "multipleOf": 0.25, "minimum": 1.1}, 1.25),
        ({"type": "string", "format": "email"}, "user@example.com"),
        ({"type": "string", "minLength": 7}, "valuexx"),
        ({"type": ["null", "boolean"]}, True),
        ({"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 2}]}, "va"),
        ({"enum": ["b", "a"]}, "b"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 0}, []),
        ({"type": "object", "properties": {"x": {"const": 3}}}, {"x": 3}),
        ({"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"type": "boolean"}}}, True),
    ],
)
def test_example_from_schema_cases(schema: dict[str, object], expected: object) -> None:
    assert example_from_schema(schema) == expected


async def test_bad_inputs_are_invalid_requests_before_anything_is_consumed() -> None:
    async with MockLLM("mock", responses=["scripted"]) as llm:
        with pytest.raises(InvalidRequestError, match="response_format"):
            await llm.chat("x", response_format=int)
        with pytest.raises(InvalidRequestError, match="not str"):
            await llm.embed(None)  # type: ignore[arg-type]
        assert llm.calls == []
        assert await llm.generate("x") == "scripted"  # the scripted reply is still next


async def test_bare_schema_and_json_shorthand_formats() -> None:
    async with MockLLM("mock") as llm:
        bare = await llm.chat("x", response_format=Cat.model_json_schema())
        assert bare.parsed == {"kind": "cat", "lives": 1}
        assert (await llm.chat("x", response_format="json")).parsed == {
            "response": "mock response to: x"
        }
