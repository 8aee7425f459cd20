"""Results and model information (usage, chat responses and their choices, stream chunks,
model info); the message types are :mod:`llmkit.core.messages`, re-exported here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SkipValidation, field_validator
from pydantic.fields import FieldInfo

from llmkit.core.chunk import SlotsResult
from llmkit.core.errors import redact
from llmkit.core.messages import (
    Message,
    MessageList,
    MessagesInput,
    Role,
    ToolCall,
    ToolCallDelta,
    normalize_messages,
)
from llmkit.core.model_base import TrustedModel as _Model

if TYPE_CHECKING:
    from typing_extensions import Self

_new_object = object.__new__

__all__ = [
    "Capabilities",
    "ChatResponse",
    "Choice",
    "Message",
    "MessageList",
    "MessagesInput",
    "ModelInfo",
    "Role",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "new_chunk",
    "normalize_finish_reason",
    "normalize_messages",
]


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the provider's prompt cache (0 where it does not say)."""
    reasoning_tokens: int = 0
    """Completion tokens spent on reasoning (0 where the provider does not say)."""

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def __radd__(self, other: Any) -> Usage:
        if other == 0:  # sum([...])
            return self
        return NotImplemented

    @classmethod
    def of(cls, prompt: int | None, completion: int | None) -> Usage:
        p, c = int(prompt or 0), int(completion or 0)
        return cls(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


_FINISH_REASONS: dict[str, str] = {
    "stop": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "safety": "content_filter",
}


def normalize_finish_reason(value: Any) -> str | None:
    """``stop``, ``length``, ``tool_calls`` or ``content_filter`` for the values servers
    send (OpenAI's, TGI's ``eos_token`` / ``stop_sequence``, the deprecated
    ``function_call``, ...); another string is kept as is, None stays None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return str(value)
    return _FINISH_REASONS.get(value, _FINISH_REASONS.get(value.lower(), value))


class Choice(_Model):
    """One of the ``n`` choices of a reply."""

    index: int = 0
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    """Normalised: ``stop``, ``length``, ``tool_calls``, ``content_filter`` (or None)."""
    reasoning: str | None = None
    refusal: str | None = None
    logprobs: SkipValidation[list[dict[str, Any]] | None] = Field(default=None, repr=False)


class ChatResponse(_Model):
    id: str | None = None
    """The server's id of the response (the Responses API's ``resp_...``), where it gives one."""
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    """Normalised across providers: ``stop``, ``length``, ``tool_calls``,
    ``content_filter``; the provider's own value stays in ``raw``."""
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    raw: SkipValidation[dict[str, Any]] = Field(default_factory=dict, repr=False)
    """The provider's decoded JSON, as received (not copied or validated)."""
    parsed: Any = Field(default=None, repr=False)
    """The reply validated into the ``response_format`` model, when one was given."""
    reasoning: str | None = None
    """Reasoning / thinking text (``reasoning_content``, Ollama's ``thinking``)."""
    refusal: str | None = None
    logprobs: SkipValidation[list[dict[str, Any]] | None] = Field(default=None, repr=False)
    """Per-token log probabilities when requested (OpenAI's ``logprobs.content`` shape)."""
    choices: list[Choice] = Field(default_factory=list, repr=False)
    """Every choice (``n > 1``); the top-level fields are choice 0's."""

    @classmethod
    def _trusted(cls, fields: dict[str, Any]) -> Self:
        fields.setdefault("id", None)
        return super()._trusted(fields)


class StreamChunk(SlotsResult):
    """One streamed piece: ``delta`` (text), ``reasoning`` (reasoning / thinking text
    delta), ``refusal``, ``tool_calls`` (partial), ``finish_reason``, ``usage`` (usually
    only on the last chunk), ``index`` (the choice it belongs to), ``logprobs``,
    ``completed_tool_calls`` (on the last chunk of a stream that called tools: the
    assembled calls) and ``raw`` (the decoded event, as received).

    A plain ``__slots__`` object, not a pydantic model: keyword construction checks the
    text and index fields' types; the wire parsers build chunks with :func:`new_chunk`."""

    __slots__ = (
        "completed_tool_calls",
        "delta",
        "finish_reason",
        "index",
        "logprobs",
        "raw",
        "reasoning",
        "refusal",
        "tool_calls",
        "usage",
    )
    delta: str
    reasoning: str
    refusal: str | None
    tool_calls: list[ToolCallDelta]
    finish_reason: str | None
    usage: Usage | None
    index: int
    logprobs: list[dict[str, Any]] | None
    completed_tool_calls: list[ToolCall] | None
    raw: dict[str, Any] | None

    model_fields: ClassVar[dict[str, FieldInfo]] = {
        "delta": FieldInfo(default=""),
        "reasoning": FieldInfo(default=""),
        "refusal": FieldInfo(default=None),
        "tool_calls": FieldInfo(default_factory=list),
        "finish_reason": FieldInfo(default=None),
        "usage": FieldInfo(default=None),
        "index": FieldInfo(default=0),
        "logprobs": FieldInfo(default=None, repr=False),
        "completed_tool_calls": FieldInfo(default=None),
        "raw": FieldInfo(default=None, repr=False),
    }
    nested: ClassVar[dict[str, Any]] = {"tool_calls": ToolCallDelta, "usage": Usage, "completed_tool_calls": ToolCall}

    def __init__(
        self,
        *,
        delta: str = "",
        reasoning: str = "",
        refusal: str | None = None,
        tool_calls: list[ToolCallDelta] | None = None,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        index: int = 0,
        logprobs: list[dict[str, Any]] | None = None,
        completed_tool_calls: list[ToolCall] | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        if type(delta) is not str or type(reasoning) is not str:
            raise TypeError("StreamChunk: delta and reasoning must be strings")
        if (refusal is not None and type(refusal) is not str) or (
            finish_reason is not None and type(finish_reason) is not str
        ):
            raise TypeError("StreamChunk: refusal and finish_reason must be strings or None")
        if type(index) is not int:
            raise TypeError("StreamChunk: index must be an int")
        _fill_chunk(
            self, delta, reasoning, refusal, [] if tool_calls is None else list(tool_calls),
            finish_reason, usage, index, logprobs, completed_tool_calls, raw,
        )


def _fill_chunk(
    chunk: StreamChunk,
    delta: str,
    reasoning: str,
    refusal: str | None,
    tool_calls: list[ToolCallDelta],
    finish_reason: str | None,
    usage: Usage | None,
    index: int,
    logprobs: list[dict[str, Any]] | None,
    completed_tool_calls: list[ToolCall] | None,
    raw: dict[str, Any] | None,
) -> None:
    chunk.delta = delta
    chunk.reasoning = reasoning
    chunk.refusal = refusal
    chunk.tool_calls = tool_calls
    chunk.finish_reason = finish_reason
    chunk.usage = usage
    chunk.index = index
    chunk.logprobs = logprobs
    chunk.completed_tool_calls = completed_tool_calls
    chunk.raw = raw


def new_chunk(
    delta: str,
    reasoning: str,
    refusal: str | None,
    tool_calls: list[ToolCallDelta],
    finish_reason: str | None,
    usage: Usage | None,
    index: int,
    logprobs: list[dict[str, Any]] | None,
    raw: dict[str, Any] | None,
) -> StreamChunk:
    """The wire parsers' path: a chunk of values they have checked, in field order."""
    chunk: StreamChunk = _new_object(StreamChunk)
    _fill_chunk(chunk, delta, reasoning, refusal, tool_calls, finish_reason, usage, index,
                logprobs, None, raw)
    return chunk


class Capabilities(_Model):
    streaming: bool = True
    embeddings: bool = False
    tools: bool = False
    batching: bool = False
    kv_cache: bool = False


class ModelInfo(_Model):
    provider: str
    model: str
    base_url: str | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    context_length: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        return redact(v) if v else v
