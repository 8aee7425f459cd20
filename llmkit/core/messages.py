"""Messages as llmkit takes them (:class:`Message`, roles, tool calls and their streamed
pieces) and :func:`normalize_messages`, which turns every accepted input form into a list
of :class:`Message`."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ConfigDict, Field

from llmkit.core.errors import InvalidRequestError
from llmkit.core.model_base import TrustedModel as _Model

__all__ = [
    "Message",
    "MessageList",
    "MessagesInput",
    "Role",
    "ToolCall",
    "ToolCallDelta",
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
