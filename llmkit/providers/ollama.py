"""Ollama's native API (``provider="ollama"``): ``/api/chat``, ``/api/generate``,
``/api/embed`` and the model-management endpoints."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from llmkit.base import parse_structured
from llmkit.config import normalize_ollama_host
from llmkit.errors import InvalidRequestError, StreamError, error_from_payload
from llmkit.providers._http_base import HTTPProvider
from llmkit.tools import normalize_tool_choice, to_openai_tools
from llmkit.types import (
    Capabilities,
    ChatResponse,
    Message,
    MessagesInput,
    ModelInfo,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    normalize_messages,
)

__all__ = ["OllamaLLM", "parse_modelfile"]

DEFAULT_BASE_URL = "http://localhost:11434"

# Runtime options Ollama reads from ``options`` (Modelfile parameters), with their types.
_INT_OPTIONS = frozenset(
    {
        "num_keep", "seed", "num_predict", "draft_num_predict", "top_k", "repeat_last_n",
        "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "mirostat",
        "num_gqa", "num_gpu_layers",
    }
)
_FLOAT_OPTIONS = frozenset(
    {
        "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "mirostat_tau", "mirostat_eta", "tfs_z",
    }
)
_BOOL_OPTIONS = frozenset(
    {"penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only"}
)
OLLAMA_OPTIONS = _INT_OPTIONS | _FLOAT_OPTIONS | _BOOL_OPTIONS | {"stop"}

# Request fields that live at the top level of a chat/generate body, not in ``options``.
_TOP_LEVEL = frozenset(
    {"format", "keep_alive", "think", "logprobs", "top_logprobs", "truncate", "shift"}
)
_GENERATE_FIELDS = frozenset({"system", "raw", "suffix", "images", "template", "context"})


def _is_done(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("done") is True


def _is_success(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("status") == "success"


def _raise_if_error(obj: Any, provider: str) -> None:
    if isinstance(obj, dict) and "error" in obj:
        raise error_from_payload(obj, provider=provider)
    if not isinstance(obj, dict):
        raise StreamError(f"unexpected stream line: {obj!r:.200}", provider=provider)


def _checked(obj: Any, provider: str) -> dict[str, Any]:
    """``obj`` if it is a stream object, else the typed error (run inside the transport)."""
    if type(obj) is not dict or "error" in obj:
        _raise_if_error(obj, provider)
    return obj  # type: ignore[no-any-return]


def _usage(data: Mapping[str, Any]) -> Usage:
    return Usage.of(data.get("prompt_eval_count"), data.get("eval_count"))


def _arguments(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {"_raw": value}
        return decoded if isinstance(decoded, dict) else {"_value": decoded}
    return {}


def _tool_calls(message: Mapping[str, Any], start: int = 0) -> list[ToolCall]:
    calls = []
    for i, tc in enumerate(message.get("tool_calls") or (), start):
        fn = tc.get("function") or {}
        calls.append(
            ToolCall(
                id=str(tc.get("id") or f"call_{i}"),
                name=str(fn.get("name", "")),
                arguments=_arguments(fn.get("arguments")),
            )
        )
    return calls


def _format_payload(response_format: Any) -> tuple[Any, Any]:
    """Ollama's ``format`` (``"json"`` or a JSON schema) and the pydantic class, if any."""
    if response_format is None:
        return None, None
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        return response_format.model_json_schema(), response_format
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_object":
            return "json", None
        if kind == "json_schema" and isinstance(response_format.get("json_schema"), Mapping):
            return dict(response_format["json_schema"].get("schema") or {}), None
        if kind == "text":
            return None, None
        return dict(response_format), None
    if response_format == "json":
        return "json", None
    raise InvalidRequestError(f"unsupported response_format: {response_format!r}")


def _images(msg: Message) -> tuple[str, list[str]]:
    """Text and base64 images of a message (OpenAI-style content parts included)."""
    images = list(msg.images or ())
    content = msg.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, Mapping) else url
                    if isinstance(url, str):
                        images.append(url.split(",", 1)[1] if url.startswith("data:") else url)
                elif part.get("type") == "image" and isinstance(part.get("data"), str):
                    images.append(part["data"])
        return "".join(texts), images
    return content or "", images


def _wire_messages(msgs: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool results
    for msg in msgs:
        if msg.images is None and (msg.content is None or isinstance(msg.content, str)):
            item: dict[str, Any] = {"role": str(msg.role), "content": msg.content or ""}
        else:
            text, images = _images(msg)
            item = {"role": str(msg.role), "content": text}
            if images:
                item["images"] = images
        if msg.tool_calls:
            calls = []
            for tc in msg.tool_calls:
                if tc.id:
                    names[tc.id] = tc.name
                call: dict[str, Any] = {"function": {"name": tc.name, "arguments": tc.arguments}}
                if tc.id:
                    call["id"] = tc.id
                calls.append(call)
            item["tool_calls"] = calls
        if str(msg.role) == "tool":
            name = msg.name or (names.get(msg.tool_call_id) if msg.tool_call_id else None)
            if name:
                item["tool_name"] = name
            if msg.tool_call_id:
                item["tool_call_id"] = msg.tool_call_id
        elif msg.name:
            item["name"] = msg.name
        out.append(item)
    return out


def _select_tools(tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[dict[str, Any]] | None:
    """Ollama has no ``tool_choice``: ``"none"`` drops the tools, a named function keeps
    only that one; ``"auto"`` and ``"required"`` send them all."""
    if not tools:
        return None
    choice = normalize_tool_choice(tool_choice, tools)
    if choice == "none":
        return None
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        picked = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not picked:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not among the tools")
        return picked
    return tools


class OllamaLLM(HTTPProvider):
    """A local or remote Ollama server.

    ``config.extra`` understands ``options`` (a dict of Ollama runtime options sent with
    every request), ``keep_alive``, ``think``, ``embedding_model`` and
    ``embedding_batch_size`` (inputs per ``/api/embed`` request, default 256).
    """

    # Ollama's runtime options, passed through by name.
    provider_options: ClassVar[frozenset[str]] = OLLAMA_OPTIONS

    provider_name: ClassVar[str] = "ollama"
    embedding_batch_size: ClassVar[int] = 256

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._shown: dict[str, dict[str, Any]] = {}

    def _base_url(self) -> str:
        raw = self.config.base_url
        if not raw:
            env = os.environ.get("OLLAMA_BASE_URL") or os.environ.get("OLLAMA_HOST")
            raw = normalize_ollama_host(env) if env else DEFAULT_BASE_URL
        elif "://" not in raw:
            raw = normalize_ollama_host(raw)
        return raw.rstrip("/")

    # ------------------------------------------------------------------ request bodies

    def _request_fields(self, opts: dict[str, Any], extra_top: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Top-level fields and ``options`` from per-call options over the config."""
        explicit = dict(opts.pop("options", None) or {})
        top: dict[str, Any] = {}
        for key in _TOP_LEVEL | extra_top:
            if key in opts:
                value = opts.pop(key)
                if value is not None:
                    top[key] = value
        for key in ("keep_alive", "think"):
            if key not in top and self.config.extra.get(key) is not None:
                top[key] = self.config.extra[key]
        per_call = {k for k, v in opts.items() if v is not None}
        merged, _ = self._options(opts)
        options: dict[str, Any] = {}
        for key, value in merged.items():
            if key not in per_call:
                options["num_predict" if key == "max_tokens" else key] = value
        options.update(self.config.extra.get("options") or {})
        for key in per_call:
            options["num_predict" if key == "max_tokens" else key] = merged[key]
        options.update(explicit)
        top["options"] = options
        return top

    def _chat_body(
        self,
        messages: MessagesInput,
        options: dict[str, Any],
        *,
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        stream: bool,
    ) -> tuple[dict[str, Any], str, Any, bool]:
        msgs = normalize_messages(messages)
        model = options.pop("model", None) or self.model
        fields = self._request_fields(options)
        fmt, model_cls = _format_payload(response_format)
        if fmt is not None:
            fields.setdefault("format", fmt)  # an explicit format= wins on the wire
        structured = "format" in fields
        body: dict[str, Any] = {"model": model, "messages": _wire_messages(msgs), "stream": stream}
        wire_tools = _select_tools(to_openai_tools(tools), tool_choice)
        if wire_tools:
            body["tools"] = wire_tools
        body.update(fields)
        return body, model, model_cls or response_format, structured

    # ------------------------------------------------------------------ chat

    async def generate(self, messages: MessagesInput, **options: Any) -> str:
        return (await self.chat(messages, **options)).content

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        """One chat turn (``POST /api/chat``, not streamed). ``response_format`` (a pydantic
        class, a JSON schema dict or ``"json"``) becomes Ollama's ``format`` and the reply
        is validated into ``ChatResponse.parsed``."""
        body, model, model_cls, structured = self._chat_body(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=False,
        )
        data = await self._http.request("POST", "api/chat", json=body, model=model)
        if not isinstance(data, dict):
            raise StreamError(f"unexpected /api/chat response: {data!r:.200}", provider=self.provider)
        message = data.get("message") or {}
        usage = _usage(data)
        self._record_usage(usage)
        response = ChatResponse(
            content=str(message.get("content") or ""),
            tool_calls=_tool_calls(message),
            finish_reason=data.get("done_reason") or ("stop" if data.get("done") else None),
            usage=usage,
            model=str(data.get("model") or model),
            raw=data,
        )
        if structured and not response.tool_calls:
            response.parsed = parse_structured(response.content, model_cls, self.provider)
        return response

    def _ndjson(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        *,
        is_last: Callable[[Any], bool] = _is_done,
        end_marker: str = 'the final "done": true line',
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The transport's stream of decoded NDJSON objects up to the last one (``done:
        true`` by default); error lines raise inside the transport."""
        provider = self.provider
        return self._http.stream(
            "POST", path, json=body, kind="ndjson", is_last=is_last, model=model,
            end_marker=end_marker,
            parse=lambda obj: _checked(obj, provider),
        )

    def _status_stream(
        self, path: str, body: dict[str, Any], model: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        return self._ndjson(
            path, body, model, is_last=_is_success, end_marker='the "success" status'
        )

    async def chat_stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream a chat turn: text deltas, tool calls (``tool_calls`` deltas as they come,
        all of them in ``completed_tool_calls`` on the last chunk), then the chunk with
        ``finish_reason`` and ``usage``."""
        body, model, _, _ = self._chat_body(
            messages, options, tools=tools, tool_choice=tool_choice,
            response_format=response_format, stream=True,
        )
        calls: list[ToolCall] = []
        construct = StreamChunk.model_construct
        usage: Usage | None = None
        try:
            async with aclosing(self._ndjson("api/chat", body, model)) as lines:
                async for obj in lines:
                    message = obj.get("message") or {}
                    delta = message.get("content") or ""
                    deltas: list[ToolCallDelta] = []
                    if message.get("tool_calls"):
                        new = _tool_calls(message, len(calls))
                        for i, call in enumerate(new, len(calls)):
                            deltas.append(
                                ToolCallDelta(
                                    index=i, id=call.id, name=call.name,
                                    arguments=orjson.dumps(call.arguments).decode(),
                                )
                            )
                        calls.extend(new)
                    if obj.get("done") is True:
                        usage = _usage(obj)
                        yield construct(
                            delta=delta, tool_calls=deltas,
                            finish_reason=obj.get("done_reason") or "stop", usage=usage,
                            completed_tool_calls=list(calls) if calls else None, raw=obj,
                        )
                    elif delta or deltas or message.get("thinking"):
                        yield construct(
                            delta=delta, tool_calls=deltas, finish_reason=None, usage=None,
                            completed_tool_calls=None, raw=obj,
                        )
        finally:
            self._record_usage(usage)

    async def generate_stream(self, messages: MessagesInput, **options: Any) -> AsyncGenerator[str, None]:
        tools = options.pop("tools", None)
        response_format = options.pop("response_format", None)
        body, model, _, _ = self._chat_body(
            messages, options, tools=tools, tool_choice=options.pop("tool_choice", None),
            response_format=response_format, stream=True,
        )
        usage: Usage | None = None
        try:
            async with aclosing(self._ndjson("api/chat", body, model)) as lines:
                async for obj in lines:
                    message = obj.get("message")
                    if message:
                        delta = message.get("content")
                        if delta:
                            yield delta
                    if obj.get("done") is True:
                        usage = _usage(obj)
        finally:
            self._record_usage(usage)

    # ------------------------------------------------------------------ /api/generate

    async def generate_completion(self, prompt: str, **options: Any) -> str:
        """Raw completion (``POST /api/generate``). Besides the generation options it takes
        ``system``, ``raw``, ``suffix``, ``images``, ``template``, ``context``, ``format``,
        ``keep_alive``, ``think`` and ``model``."""
        if not isinstance(prompt, str):
            raise InvalidRequestError("prompt must be a string")
        model = options.pop("model", None) or self.model
        fields = self._request_fields(options, _GENERATE_FIELDS)
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False, **fields}
        data = await self._http.request("POST", "api/generate", json=body, model=model)
        if not isinstance(data, dict):
            raise StreamError(f"unexpected /api/generate response: {data!r:.200}", provider=self.provider)
        self._record_usage(_usage(data))
        return str(data.get("response") or "")

    # ------------------------------------------------------------------ embeddings

    async def _embed_request(self, texts: list[str]) -> list[list[float]]:
        model = self._embedding_model()
        body: dict[str, Any] = {"model": model, "input": texts}
        extra = self.config.extra
        for key in ("truncate", "dimensions", "keep_alive"):
            if extra.get(key) is not None:
                body[key] = extra[key]
        if extra.get("options"):
            body["options"] = dict(extra["options"])
        data = await self._http.request("POST", "api/embed", json=body, model=model)
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            got = len(vectors) if isinstance(vectors, list) else "no"
            raise StreamError(
                f"/api/embed returned {got} vectors for {len(texts)} inputs", provider=self.provider
            )
        self._record_usage(Usage.of(data.get("prompt_eval_count"), 0))
        return [[float(x) for x in v] for v in vectors]

    # ------------------------------------------------------------------ model management

    async def get_version(self) -> str:
        data = await self._http.request("GET", "api/version")
        return str((data or {}).get("version", ""))

    async def list_models(self) -> list[dict[str, Any]]:
        """Local models (``GET /api/tags``)."""
        data = await self._http.request("GET", "api/tags")
        return list((data or {}).get("models") or [])

    async def list_running(self) -> list[dict[str, Any]]:
        """Models loaded in memory (``GET /api/ps``)."""
        data = await self._http.request("GET", "api/ps")
        return list((data or {}).get("models") or [])

    async def show_model(self, name: str | None = None, *, verbose: bool = False) -> dict[str, Any]:
        """Model details (``POST /api/show``): ``details``, ``model_info``, ``parameters``,
        ``template``, ``capabilities``, ..."""
        name = name or self.model
        body: dict[str, Any] = {"model": name}
        if verbose:
            body["verbose"] = True
        data = await self._http.request("POST", "api/show", json=body, model=name)
        result = dict(data or {})
        self._shown[_full_name(name)] = result
        return result

    async def delete_model(self, name: str) -> None:
        """Delete a local model (``DELETE /api/delete``); ModelNotFoundError if absent."""
        await self._http.request("DELETE", "api/delete", json={"model": name}, model=name)
        self._shown.pop(_full_name(name), None)

    async def pull_model(self, name: str, *, insecure: bool = False) -> AsyncGenerator[dict[str, Any], None]:
        """Download a model; yields the progress objects (``status`` and, while layers
        download, ``digest``, ``total``, ``completed``), the last one ``{"status": "success"}``.
        An error line raises :class:`StreamError`."""
        body: dict[str, Any] = {"model": name, "stream": True}
        if insecure:
            body["insecure"] = True
        async with aclosing(self._status_stream("api/pull", body, name)) as statuses:
            async for obj in statuses:
                yield obj

    async def create_model(
        self,
        name: str,
        modelfile: str | None = None,
        *,
        progress: Callable[[dict[str, Any]], Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create ``name`` (``POST /api/create``) from a Modelfile text and/or the create
        API's fields (``from_`` or ``from``, ``system``, ``template``, ``parameters``,
        ``messages``, ``license``, ``adapters``, ``files``, ``quantize``, ...; keywords win
        over the Modelfile, ``parameters`` merge key by key). The status lines are streamed
        (each passed to ``progress`` when given); returns the final status,
        ``{"status": "success"}``."""
        body: dict[str, Any] = parse_modelfile(modelfile) if modelfile else {}
        for key, value in fields.items():
            key = "from" if key == "from_" else key
            if value is None:
                continue
            if key == "parameters" and isinstance(body.get("parameters"), dict):
                body["parameters"] = {**body["parameters"], **dict(value)}
            else:
                body[key] = value
        body["model"] = name
        body["stream"] = True
        last: dict[str, Any] = {}
        statuses = self._status_stream("api/create", body, str(body.get("from") or name))
        async with aclosing(statuses):
            async for obj in statuses:
                last = obj
                if progress is not None:
                    progress(obj)
        self._shown.pop(_full_name(name), None)
        return last

    # ------------------------------------------------------------------ health, info

    async def health_check(self) -> None:
        await self._http.request("GET", "api/version", timeout=min(self.config.timeout, 10.0))

    def get_model_info(self) -> ModelInfo:
        """Capabilities, and the context length once :meth:`show_model` has fetched it."""
        shown = self._shown.get(_full_name(self.model)) or {}
        context: int | None = None
        info = shown.get("model_info")
        if isinstance(info, dict):
            for key, value in info.items():
                if key.endswith(".context_length") and isinstance(value, int):
                    context = value
                    break
        details = shown.get("details")
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self._http.base_url,
            capabilities=Capabilities(
                streaming=True, embeddings=True, tools=True, batching=False, kv_cache=False
            ),
            context_length=context,
            details=dict(details) if isinstance(details, dict) else {},
        )


def _full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


# --------------------------------------------------------------------------- Modelfile

_INSTRUCTIONS = frozenset(
    {"from", "parameter", "template", "system", "adapter", "license", "message",
     "renderer", "parser"}
)
_MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_LEADING = re.compile(r"\s*(\S+)\s*")


def _unquote(value: str, lineno: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return inner
        return str(decoded)
    if value.startswith('"'):
        raise InvalidRequestError(f"Modelfile line {lineno}: unterminated quote: {value!r}")
    return value


def _typed_parameter(key: str, raw: str, lineno: int) -> Any:
    def bad(kind: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"Modelfile line {lineno}: PARAMETER {key} needs {kind}, got {raw!r}"
        )

    if key in _INT_OPTIONS:
        try:
            return int(raw)
        except ValueError:
            raise bad("an integer") from None
    if key in _FLOAT_OPTIONS:
        try:
            return float(raw)
        except ValueError:
            raise bad("a number") from None
    if key in _BOOL_OPTIONS:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad("true or false")
    if key == "stop":
        return raw
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def parse_modelfile(text: str) -> dict[str, Any]:
    """The ``/api/create`` fields of a Modelfile.

    ``FROM`` -> ``from``; ``PARAMETER key value`` -> ``parameters`` (typed: ints, floats,
    bools; ``stop`` is always a list, one entry per line); ``SYSTEM``, ``TEMPLATE``,
    ``RENDERER``, ``PARSER`` -> strings; ``MESSAGE role content`` -> ``messages``;
    ``LICENSE`` -> a string, or a list when repeated; ``ADAPTER ref`` -> ``adapters``
    (``{file name: ref}``; ``ref`` must name a blob the server has, e.g. ``sha256:...``).
    Instructions are case-insensitive, ``#`` starts a comment line, values may be quoted
    (``"..."``) or triple-quoted over several lines (``\"\"\"...\"\"\"``). An unknown
    instruction raises :class:`InvalidRequestError` naming the line.
    """
    if not isinstance(text, str):
        raise InvalidRequestError("modelfile must be a string")
    lines = text.splitlines()
    out: dict[str, Any] = {}
    licenses: list[str] = []
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        m = _LEADING.match(line)
        assert m is not None
        word = m.group(1)
        instruction = word.lower()
        rest = line[m.end():]
        if instruction not in _INSTRUCTIONS:
            raise InvalidRequestError(
                f"Modelfile line {lineno}: unknown instruction {word!r}: {line[:80]!r}"
            )
        if instruction in ("parameter", "message"):
            m2 = _LEADING.match(rest)
            if m2 is None or not rest.strip():
                raise InvalidRequestError(
                    f"Modelfile line {lineno}: {word} needs a name and a value"
                )
            sub = m2.group(1)
            rest = rest[m2.end():]
        else:
            sub = ""
        # the value: triple-quoted (maybe over several lines), quoted, or the rest of the line
        if rest.startswith('"""'):
            body = rest[3:]
            if '"""' in body:
                value = body[: body.index('"""')]
            else:
                parts = [body]
                while True:
                    if i >= len(lines):
                        raise InvalidRequestError(
                            f'Modelfile line {lineno}: unterminated """ for {word}'
                        )
                    nxt = lines[i]
                    i += 1
                    if '"""' in nxt:
                        parts.append(nxt[: nxt.index('"""')])
                        break
                    parts.append(nxt)
                value = "\n".join(parts)
        else:
            value = _unquote(rest.strip(), lineno)
        if not value and instruction in ("from", "parameter", "adapter"):
            raise InvalidRequestError(f"Modelfile line {lineno}: {word} {sub}".rstrip() + " needs a value")

        if instruction == "from":
            out["from"] = value
        elif instruction == "parameter":
            key = sub.lower()
            params = out.setdefault("parameters", {})
            typed = _typed_parameter(key, value, lineno)
            if key == "stop":
                params.setdefault("stop", []).append(typed)
            else:
                params[key] = typed
        elif instruction == "message":
            role = sub.lower()
            if role not in _MESSAGE_ROLES:
                raise InvalidRequestError(
                    f"Modelfile line {lineno}: MESSAGE role must be one of "
                    f"{sorted(_MESSAGE_ROLES)}, not {sub!r}"
                )
            out.setdefault("messages", []).append({"role": role, "content": value})
        elif instruction == "license":
            licenses.append(value)
        elif instruction == "adapter":
            out.setdefault("adapters", {})[os.path.basename(value) or value] = value
        else:  # system, template, renderer, parser
            out[instruction] = value
    if licenses:
        out["license"] = licenses[0] if len(licenses) == 1 else licenses
    return out
