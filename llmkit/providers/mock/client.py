"""A deterministic provider with no network, for users' own tests."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import struct
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from llmkit.base import BaseLLM
from llmkit.core.config import LLMConfig
from llmkit.core.errors import ConfigError, InvalidRequestError, LLMError, NotSupportedError
from llmkit.core.schema_example import SchemaExampleError, example_from_schema
from llmkit.core.stop_sequences import cut_at_stop
from llmkit.core.structured import parse_structured, response_format_payload
from llmkit.core.types import (
    ChatResponse,
    Choice,
    MessagesInput,
    StreamChunk,
    ToolCallDelta,
    Usage,
    normalize_messages,
)
from llmkit.providers.mock.tool_calls import forced_tool_call

__all__ = ["MockLLM"]

Reply = str | Callable[[list[Any]], str]


class MockLLM(BaseLLM):
    """Replies come from ``responses`` (cycled), a function of the messages, or echo.

    Options (keyword arguments or ``config.extra``): ``responses``, ``chunk_size`` (characters
    per streamed delta), ``latency`` (seconds per call), ``failures`` (a list of exceptions
    raised by the next calls, in order; ``None`` entries succeed), ``embedding_dim``.

    Structured output: with ``response_format=Model`` (a pydantic class) or a ``json_schema``
    response format and no scripted reply, the reply is a valid instance built from the
    schema (deterministic). A scripted reply that does not validate raises ``ConfigError``:
    the mock's setup is wrong, not the request.

    Options it honours as a server would: ``max_tokens`` (words), ``stop`` (the reply is
    cut at the first stop sequence, ``finish_reason="stop"``), ``n`` (``n`` identical
    choices); sampling options have nothing to change in a scripted reply. It has no token
    probabilities: ``logprobs=True`` and ``top_logprobs`` raise ``InvalidRequestError``.
    Tools are checked as every provider checks them; a ``tool_choice`` that forces a call
    is answered with one (arguments made up from the tool's schema), see
    :mod:`llmkit.providers.mock.tool_calls`.
    """

    provider_name: ClassVar[str] = "mock"
    unsupported_options: ClassVar[dict[str, str]] = {
        "top_logprobs": "the mock has no token probabilities",
    }

    def __init__(
        self,
        config: LLMConfig | dict[str, Any] | str | None = None,
        *,
        responses: Iterable[Reply] | Reply | None = None,
        chunk_size: int | None = None,
        latency: float | None = None,
        failures: Iterable[BaseException | None] | None = None,
        embedding_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        extra = self.config.extra
        responses = responses if responses is not None else extra.get("responses")
        if responses is None:
            self._replies: Iterable[Reply] | None = None
        elif isinstance(responses, str) or callable(responses):
            self._replies = itertools.repeat(responses)
        else:
            self._replies = itertools.cycle(list(responses))
        self.chunk_size = int(chunk_size or extra.get("chunk_size", 4))
        self.latency = float(latency if latency is not None else extra.get("latency", 0.0))
        self._failures = list(failures if failures is not None else extra.get("failures", []))
        self.embedding_dim = int(embedding_dim or extra.get("embedding_dim", 16))
        self.calls: list[list[Any]] = []

    def inject_failure(self, error: BaseException) -> None:
        """Make the next call raise ``error``."""
        self._failures.append(error)

    async def _step(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._failures:
            failure = self._failures.pop(0)
            if failure is not None:
                raise failure

    def _reply(self, messages: list[Any]) -> str | None:
        """The next scripted reply; None when nothing is scripted."""
        if self._replies is None:
            return None
        reply = next(iter(self._replies))
        return reply(messages) if callable(reply) else reply

    @staticmethod
    def _echo(messages: list[Any]) -> str:
        last = next((m for m in reversed(messages) if m.role == "user"), messages[-1])
        return f"mock response to: {last.text()}"

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        msgs = normalize_messages(messages)
        opts, _ = self._options(options)
        if opts.get("logprobs"):
            raise InvalidRequestError(
                "option 'logprobs' is not supported by provider 'mock': the mock has no "
                "token probabilities", provider=self.provider,
            )
        payload, model = response_format_payload(response_format)  # checks it, as others do
        forced = forced_tool_call(tools, tool_choice, self.provider)
        await self._step()
        self.calls.append(msgs)
        scripted = self._reply(msgs)
        if scripted is None and response_format is not None:
            text = _structured_reply(payload, model, self._echo(msgs))
        else:
            text = self._echo(msgs) if scripted is None else scripted
        words = text.split()
        limit = opts.get("max_tokens")
        if limit is not None and len(words) > limit and response_format is None:
            text = " ".join(words[:limit])
            finish = "length"
        else:
            finish = "stop"
        if opts.get("stop") and response_format is None:
            text, hit = cut_at_stop(text, opts["stop"])
            finish = "stop" if hit else finish
        if forced is not None:  # a server that must call a tool answers with the call
            text, finish = "", "tool_calls"
        n = int(opts.get("n", 1))
        usage = Usage.of(sum(len(m.text().split()) for m in msgs), n * len(text.split()))
        self._record_usage(usage)
        response = ChatResponse(
            content=text, finish_reason=finish, usage=usage, model=self.model, raw={},
            tool_calls=[] if forced is None else [forced],
        )
        if n > 1:
            response.choices = [
                Choice(index=i, content=text, finish_reason=finish) for i in range(n)
            ]
        if response_format is not None and forced is None:
            response.parsed = self._parse(
                text, response_format, scripted=scripted is not None, response=response
            )
        return response

    def _parse(
        self, text: str, response_format: Any, *, scripted: bool, response: Any = None
    ) -> Any:
        try:
            return parse_structured(text, response_format, self.provider, response)
        except LLMError as exc:
            if not scripted:
                raise
            name = getattr(response_format, "__name__", "the response format")
            raise ConfigError(
                f"MockLLM's scripted reply does not validate as {name} ({exc.message}). "
                f"The request is fine: fix the reply given in `responses`, or give none and "
                f"the mock builds a valid {name} from its schema",
                provider=self.provider,
            ) from None

    async def chat_stream(self, messages: MessagesInput, **options: Any) -> AsyncGenerator[StreamChunk, None]:
        response = await self.chat(messages, **options)
        text = response.content
        for i in range(0, len(text), self.chunk_size):
            await asyncio.sleep(0)
            yield StreamChunk(delta=text[i : i + self.chunk_size])
        calls = response.tool_calls
        for i, call in enumerate(calls):
            wire = call.to_openai()
            yield StreamChunk(tool_calls=[ToolCallDelta(
                index=i, id=call.id, name=call.name,
                arguments=wire["function"]["arguments"] if "function" in wire else "",
            )])
        yield StreamChunk(
            finish_reason=response.finish_reason, usage=response.usage,
            completed_tool_calls=list(calls) if calls else None,
        )

    async def embed(self, text: str) -> list[float]:
        from llmkit.base import _check_texts

        (item,) = _check_texts([text])
        await self._step()
        return _hash_vector(item, self.embedding_dim)

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        from llmkit.base import _check_texts

        items = _check_texts(texts)
        await self._step()
        return [_hash_vector(t, self.embedding_dim) for t in items]

    async def health_check(self) -> None:
        if self._failures and self._failures[0] is not None:
            raise self._failures.pop(0)


def _structured_reply(payload: dict[str, Any] | None, model: Any, echo: str) -> str:
    """A reply that satisfies the response format (``response_format_payload``'s pair),
    made up from its JSON schema."""
    if model is not None:
        try:
            example = example_from_schema(model.model_json_schema())
            return str(model.model_validate(example).model_dump_json())
        except (SchemaExampleError, ValidationError) as exc:
            reason = exc.errors()[:3] if isinstance(exc, ValidationError) else exc
            raise NotSupportedError(
                f"MockLLM cannot make up a valid {model.__name__} from its JSON schema "
                f"({reason}); script the reply: "
                f"MockLLM(responses=[{model.__name__}(...).model_dump_json()])",
                provider=MockLLM.provider_name,
            ) from None
    kind = (payload or {}).get("type")
    if kind == "json_schema":
        spec = (payload or {}).get("json_schema") or {}
        try:
            return json.dumps(example_from_schema(spec.get("schema", {})))
        except SchemaExampleError as exc:
            raise NotSupportedError(
                f"MockLLM cannot make up a reply for this JSON schema ({exc}); "
                "script the reply with `responses`",
                provider=MockLLM.provider_name,
            ) from None
    if kind == "json_object":
        return json.dumps({"response": echo})
    return echo


def _hash_vector(text: str, dim: int) -> list[float]:
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(v / 2**31 for v in struct.unpack("<8i", digest))
        counter += 1
    vec = out[:dim]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]
