"""Messages, results and model information."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator
from pydantic.fields import FieldInfo

from llmkit.core.chunk import SlotsResult
from llmkit.core.errors import InvalidRequestError, redact

if TYPE_CHECKING:
    from typing_extensions import Self

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


class Role(str, enum.Enum):
    system = "system"
    developer = "developer"
    user = "user"
    assistant = "assistant"
    tool = "tool"

    def __str__(self) -> str:
        return self.value


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """The setter of one of BaseModel's own slots: called directly, it costs a fraction of
    ``object.__setattr__`` (no attribute lookup through the model's class)."""
    slot = BaseModel.__dict__.get(name)
    setter = getattr(slot, "__set__", None)
    if setter is None:  # pragma: no cover - a pydantic without these slots
        return lambda obj, value: object.__setattr__(obj, name, value)
    return setter  # type: ignore[no-any-return]


_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
_new_object = object.__new__


class _Model(BaseModel):
    # Schemas are built on first use, not at import time.
    model_config = ConfigDict(defer_build=True)

    @classmethod
    def _trusted(cls, fields: dict[str, Any]) -> Self:
        """An instance from values a wire parser has already checked, without validation
        (the hot path of responses and stream chunks): ``fields`` must name every field
        and is used as the instance's ``__dict__``."""
        obj = _new_object(cls)
        _set_dict(obj, fields)
        _set_fields_set(obj, set(fields))
        # (a set per instance: pydantic adds to it when a field is assigned)
        _set_extra(obj, None)
        _set_private(obj, None)
        return obj


class ToolCall(_Model):
    """A complete tool call: ``arguments`` is the decoded JSON object, or ``{}`` when the
    text the server sent (``raw_arguments``, kept exactly) is not valid JSON or not an
    object; ``arguments_error`` then says why. Nothing is wrapped or invented."""

    id: str = ""
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    type: str = "function"
    """``"function"``, or ``"custom"`` for a custom tool (its input is in ``arguments["input"]``)."""
    raw_arguments: str = ""
    """The arguments exactly as the server sent them (an object sent as JSON: its JSON text)."""
    arguments_error: str | None = None
    """Why ``arguments`` is ``{}`` although the server sent text (None when it decoded)."""

    def __init__(
        self,
        id: str = "",
        name: str | None = None,
        arguments: dict[str, Any] | None = None,
        **data: Any,
    ) -> None:
        if name is not None:
            data["name"] = name
        if arguments is not None:
            data["arguments"] = arguments
        super().__init__(id=id, **data)

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's wire form (a custom tool call keeps its text input)."""
        if self.type == "custom":
            text = self.arguments.get("input", "")
            return {
                "id": self.id,
                "type": "custom",
                "custom": {"name": self.name, "input": text if isinstance(text, str) else str(text)},
            }
        import orjson

        text = self.raw_arguments
        if not text or (self.arguments_error is None and not _decodes_to(text, self.arguments)):
            text = orjson.dumps(self.arguments).decode()  # built here, or changed since
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": text},
        }


def _decodes_to(text: str, arguments: dict[str, Any]) -> bool:
    import orjson

    try:
        return bool(orjson.loads(text) == arguments)
    except orjson.JSONDecodeError:
        return False


class ToolCallDelta(_Model):
    """A piece of a tool call as streamed: ``arguments`` is a fragment of JSON text."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Message(_Model):
    model_config = ConfigDict(use_enum_values=True, defer_build=True)

    role: Role
    content: str | list[Any] | None = ""
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    images: list[str] | None = None

    def __init__(self, role: Role | str, content: str | list[Any] | None = "", **data: Any):
        super().__init__(role=role, content=content, **data)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)


MessageList = list[Message]
MessagesInput = str | Message | Mapping[str, Any] | Iterable[Message | Mapping[str, Any]]


def normalize_messages(messages: MessagesInput) -> list[Message]:
    """A list of :class:`Message` from a string, a Message, a dict or a list of either."""
    if isinstance(messages, str):
        return [Message(Role.user, messages)]
    if isinstance(messages, Message):
        return [messages]
    if isinstance(messages, Mapping):
        messages = [messages]
    out: list[Message] = []
    try:
        items = list(messages)
    except TypeError:
        raise InvalidRequestError(
            f"messages must be a string, a dict or a list of messages, not {type(messages).__name__}"
        ) from None
    for i, m in enumerate(items):
        if isinstance(m, Message):
            out.append(m)
        elif isinstance(m, Mapping):
            if "role" not in m:
                raise InvalidRequestError(f"message {i} has no 'role'")
            try:
                out.append(Message.model_validate(dict(m)))
            except ValueError as exc:
                raise InvalidRequestError(f"message {i} is invalid: {exc}") from None
        elif isinstance(m, str):
            out.append(Message(Role.user, m))
        else:
            raise InvalidRequestError(
                f"message {i} must be a Message or a dict, not {type(m).__name__}"
            )
    if not out:
        raise InvalidRequestError("messages must not be empty")
    return out


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
