"""Hugging Face (``provider="huggingface"``): the Inference Providers router, Text
Generation Inference servers, the Hub API, and local transformers models.

Modes, chosen from the configuration:

* **router** (default, ``base_url`` is ``https://router.huggingface.co``): OpenAI-compatible
  ``POST {base}/v1/chat/completions`` (model ids may carry a provider suffix such as
  ``"meta-llama/Llama-3.1-8B-Instruct:novita"``; they are passed through), embeddings through
  the hf-inference feature-extraction pipeline
  ``POST {base}/hf-inference/models/{model}/pipeline/feature-extraction``.
* **TGI** (``base_url`` points at a Text Generation Inference server). ``extra["api"]``:

  - ``"auto"`` (the default for any ``base_url`` that is not the router): ``GET {base}/info`` is
    probed once; a TGI server is then used through its messages API
    (``/v1/chat/completions``, TGI >= 1.4) or ``/generate`` for older versions; a server
    without ``/info`` is treated as a plain OpenAI-compatible one.
  - ``"tgi-chat"``: TGI's ``/v1/chat/completions``.
  - ``"tgi"``: ``/generate`` and ``/generate_stream``; messages are rendered to one prompt
    with a plain template (see :func:`render_prompt`).
  - ``"router"``: the router wire format at ``base_url`` (e.g. a proxy).

* **local** (``base_url="local"`` or :meth:`HuggingFaceLLM.set_use_local`): transformers and
  sentence-transformers through :class:`llmkit.providers.hf_local.LocalBackend`, imported only
  when local mode is first used. Options from ``extra``: ``device``, ``dtype``,
  ``trust_remote_code`` (default False), ``embedding_model``, ``normalize_embeddings``,
  ``max_batch_size``.

The token comes from ``api_key``, else ``HUGGINGFACE_API_TOKEN``, else ``HF_TOKEN``. A 503
"model is loading" reply (``{"error": ..., "estimated_time": N}``) is retried after ``N``
seconds, capped by ``extra["retry_max_after"]``. The Hub is reached at ``extra["hub_url"]``,
else ``HF_ENDPOINT``, else ``https://huggingface.co``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from multidict import MultiDict

from llmkit.base import PromptCache, _check_texts, parse_structured, response_format_payload
from llmkit.config import LLMConfig
from llmkit.errors import (
    ConfigError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
    NotSupportedError,
    StreamError,
    error_from_payload,
    register_secret,
)
from llmkit.providers.openai import OpenAICompatible
from llmkit.streaming import SSEEvent
from llmkit.types import (
    Capabilities,
    ChatResponse,
    Message,
    MessagesInput,
    ModelInfo,
    StreamChunk,
    Usage,
    normalize_messages,
)

if TYPE_CHECKING:
    from llmkit.providers.hf_local import LocalBackend

__all__ = ["HuggingFaceLLM", "extract_code", "render_prompt"]

ROUTER_URL = "https://router.huggingface.co"
HUB_URL = "https://huggingface.co"
_APIS = ("router", "tgi", "tgi-chat", "auto")
_TGI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}
_LOCAL_OPTIONS = ("device", "dtype", "trust_remote_code", "embedding_model",
                  "normalize_embeddings", "max_batch_size")


# --------------------------------------------------------------------------- helpers


def render_prompt(messages: Sequence[Message]) -> str:
    """The prompt sent to TGI's ``/generate`` in ``api="tgi"`` mode.

    Each message becomes ``"<Role>: <text>"`` (``System``, ``User``, ``Assistant``, ``Tool``),
    messages are separated by a blank line, and the prompt ends with ``"Assistant:"`` so the
    model continues as the assistant. Servers whose model needs its own chat template should
    use ``api="tgi-chat"`` (TGI applies the template itself).
    """
    parts = [f"{str(m.role).capitalize()}: {m.text()}" for m in messages]
    parts.append("Assistant:")
    return "\n\n".join(parts)


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_OPEN_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*\n(.*)\Z", re.M | re.S)
_ALIASES = {
    "python": {"python", "py", "python3"},
    "javascript": {"javascript", "js", "node", "jsx"},
    "typescript": {"typescript", "ts", "tsx"},
    "c++": {"c++", "cpp", "cxx", "cc"},
    "c#": {"c#", "csharp", "cs"},
    "shell": {"shell", "sh", "bash", "zsh"},
    "bash": {"bash", "sh", "shell"},
    "rust": {"rust", "rs"},
    "go": {"go", "golang"},
    "ruby": {"ruby", "rb"},
    "kotlin": {"kotlin", "kt"},
    "yaml": {"yaml", "yml"},
    "markdown": {"markdown", "md"},
}


def extract_code(text: str, language: str | None = None) -> str:
    """The code in a model reply: the first fenced block tagged with ``language`` (or one of
    its usual aliases), else the first fenced block, else the whole text stripped. A fence
    left open at the end of the reply (a truncated answer) counts as a block."""
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]
    if not blocks:
        m = _OPEN_FENCE.search(text)
        if m:
            blocks = [(m.group(2).lower(), m.group(3))]
    if not blocks:
        return text.strip()
    if language:
        lang = language.strip().lower()
        names = _ALIASES.get(lang, set()) | {lang}
        for tag, code in blocks:
            if tag in names:
                return code.strip("\n").rstrip()
    return blocks[0][1].strip("\n").rstrip()


def _env_token() -> str | None:
    return os.environ.get("HUGGINGFACE_API_TOKEN") or os.environ.get("HF_TOKEN") or None


def _is_router(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "router.huggingface.co"


def _tgi_last(ev: SSEEvent) -> bool:
    data = ev.data.strip()
    if not data or data == "[DONE]":
        return data == "[DONE]"
    try:
        obj = ev.json()
    except (ValueError, StreamError):
        return False
    return isinstance(obj, dict) and (
        "error" in obj or obj.get("generated_text") is not None
    )


def _stop_hold(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` might start a stop sequence."""
    hold = 0
    for s in stops:
        for k in range(min(len(s), len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def _cut_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _pool(value: Any) -> list[float]:
    """One embedding from a feature-extraction item: a vector, or token vectors (mean)."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        if value[0] and isinstance(value[0][0], list):  # [1, tokens, dim]
            if len(value) != 1:
                raise StreamError(f"unexpected embedding shape: {len(value)} sequences for one input")
            value = value[0]
        rows = [[float(x) for x in row] for row in value]
        if not rows:
            raise StreamError("empty token embeddings")
        n = len(rows)
        return [sum(col) / n for col in zip(*rows, strict=True)]
    if isinstance(value, list):
        return [float(x) for x in value]
    raise StreamError(f"unexpected embedding item: {type(value).__name__}")


def _depth(value: Any) -> int:
    d = 0
    while isinstance(value, list) and value:
        d += 1
        value = value[0]
    return d


# --------------------------------------------------------------------------- provider


class HuggingFaceLLM(OpenAICompatible):
    """Hugging Face: the Inference Providers router, TGI servers, the Hub, local models."""

    provider_name: ClassVar[str] = "huggingface"
    _chat_path: ClassVar[str] = "v1/chat/completions"
    embedding_batch_size: ClassVar[int] = 32
    embedding_concurrency: ClassVar[int | None] = 8

    def __init__(self, config: LLMConfig | dict[str, Any] | str | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        extra = self.config.extra
        api = extra.get("api")
        if api is not None and api not in _APIS:
            raise ConfigError(
                f"extra['api'] must be one of {', '.join(_APIS)}, not {api!r}",
                provider=self.provider,
            )
        self._use_local = (self.config.base_url or "").strip().lower() == "local"
        self._api: str | None = None  # resolved: "router", "openai", "tgi", "tgi-chat"
        if api in ("router", "tgi", "tgi-chat"):
            self._api = str(api)
        elif api is None and _is_router(self._http.base_url):
            self._api = "router"
        self._tgi_info: dict[str, Any] | None = None
        self._probe: tuple[asyncio.AbstractEventLoop, asyncio.Future[str]] | None = None
        self._hub = self._make_transport(self._hub_base(), self._auth_headers(self.config.key()))
        self._local: LocalBackend | None = None

    # ------------------------------------------------------------------ configuration

    def _base_url(self) -> str:
        base = (self.config.base_url or ROUTER_URL).strip()
        if base.lower() == "local":
            base = ROUTER_URL
        base = base.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        return base

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        token = key or _env_token()
        register_secret(token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _hub_base(self) -> str:
        url = self.config.extra.get("hub_url") or os.environ.get("HF_ENDPOINT") or HUB_URL
        return str(url).rstrip("/")

    @property
    def use_local(self) -> bool:
        return self._use_local

    def _sends_through_transport(self) -> bool:
        return not self._use_local

    def set_use_local(self, use_local: bool) -> None:
        """Switch between local inference and the remote API."""
        self._use_local = bool(use_local)

    async def _resolve_api(self) -> str:
        if self._api is not None:
            return self._api
        loop = asyncio.get_running_loop()
        probe = self._probe
        if probe is None or probe[0] is not loop:
            task: asyncio.Future[str] = loop.create_task(self._detect())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._probe = probe = (loop, task)
        try:
            api = await asyncio.shield(probe[1])
        except BaseException:
            if self._probe is probe and probe[1].done():
                self._probe = None  # probe again next time
            raise
        self._api = api
        return api

    async def _detect(self) -> str:
        try:
            info = await self._http.request(
                "GET", "info", retry=False, timeout=min(self.config.timeout, 10.0)
            )
        except LLMError as exc:
            if exc.status in (400, 404, 405, 422):
                return "openai"  # no /info: a generic OpenAI-compatible server
            raise
        if not isinstance(info, dict) or not ("model_id" in info or "max_total_tokens" in info):
            return "openai"
        self._tgi_info = info
        version = str(info.get("version") or "")
        m = re.match(r"(\d+)\.(\d+)", version)
        if m and (int(m.group(1)), int(m.group(2))) < (1, 4):
            return "tgi"
        return "tgi-chat"

    # ------------------------------------------------------------------ generation

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        if self._use_local:
            return await self._local_chat(
                messages, tools=tools, response_format=response_format, **options
            )
        if await self._resolve_api() == "tgi":
            return await self._tgi_chat(
                messages, tools=tools, response_format=response_format, **options
            )
        return await super().chat(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
            **options,
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
        if self._use_local:
            gen = self._local_stream(messages, tools=tools, **options)
        elif await self._resolve_api() == "tgi":
            gen = self._tgi_stream(
                messages, tools=tools, response_format=response_format, **options
            )
        else:
            gen = super().chat_stream(
                messages, tools=tools, tool_choice=tool_choice,
                response_format=response_format, **options,
            )
        async with aclosing(gen):
            async for chunk in gen:
                yield chunk

    async def generate_stream(
        self, messages: MessagesInput, **options: Any
    ) -> AsyncGenerator[str, None]:
        if self._use_local or await self._resolve_api() == "tgi":
            gen: AsyncGenerator[Any, None] = self.chat_stream(messages, **options)
        else:
            gen = super().generate_stream(messages, **options)
        async with aclosing(gen):
            async for item in gen:
                text = item if isinstance(item, str) else item.delta
                if text:
                    yield text

    # ------------------------------------------------------------------ TGI /generate

    def _tgi_body(
        self, messages: MessagesInput, options: dict[str, Any], response_format: Any
    ) -> tuple[dict[str, Any], list[str], Any]:
        msgs = normalize_messages(messages)
        opts = self._options(options)
        params: dict[str, Any] = {"max_new_tokens": opts["max_tokens"], "details": True}
        temperature = opts.get("temperature")
        if temperature is None or float(temperature) <= 0.0:
            params["do_sample"] = False
        else:
            params["do_sample"] = True
            params["temperature"] = float(temperature)
            top_p = opts.get("top_p")
            if top_p is not None and 0.0 < float(top_p) < 1.0:
                params["top_p"] = float(top_p)
        stops = [s for s in (opts.get("stop") or []) if s]
        if stops:
            params["stop"] = stops
        if opts.get("seed") is not None:
            params["seed"] = int(opts["seed"])
        for key in ("top_k", "repetition_penalty", "frequency_penalty", "truncate", "watermark"):
            if opts.get(key) is not None:
                params[key] = opts[key]
        model_cls = None
        if response_format is not None:
            payload, model_cls = response_format_payload(response_format)
            schema = ((payload or {}).get("json_schema") or {}).get("schema")
            params["grammar"] = {"type": "json", "value": schema if schema else {"type": "object"}}
        return {"inputs": render_prompt(msgs), "parameters": params}, stops, model_cls

    async def _tgi_chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        response_format: Any,
        **options: Any,
    ) -> ChatResponse:
        if tools:
            raise NotSupportedError(
                "tools need TGI's messages API (extra['api']='tgi-chat')", provider=self.provider
            )
        body, stops, model_cls = self._tgi_body(messages, options, response_format)
        data = await self._http.request("POST", "generate", json=body, model=self.model)
        if isinstance(data, list) and data:
            data = data[0]
        if not isinstance(data, dict) or "generated_text" not in data:
            raise error_from_payload(
                data, status=200, provider=self.provider,
                default_message="TGI response has no generated_text",
            )
        details = data.get("details") or {}
        raw_finish = details.get("finish_reason")
        text = str(data.get("generated_text") or "")
        if stops:
            text, _ = _cut_stop(text, stops)
        usage = Usage.of(
            details.get("input_length") or len(details.get("prefill") or ()),
            details.get("generated_tokens"),
        )
        self._record_usage(usage)
        response = ChatResponse(
            content=text,
            finish_reason=_TGI_FINISH.get(str(raw_finish), raw_finish),
            usage=usage,
            model=self.model,
            raw=data,
        )
        if response_format is not None:
            response.parsed = parse_structured(text, model_cls or response_format, self.provider)
        return response

    async def _tgi_stream(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        response_format: Any,
        **options: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        if tools:
            raise NotSupportedError(
                "tools need TGI's messages API (extra['api']='tgi-chat')", provider=self.provider
            )
        body, stops, _ = self._tgi_body(messages, options, response_format)
        provider = self.provider

        def parse(ev: SSEEvent) -> dict[str, Any] | None:  # runs inside the transport
            if not ev.data.strip() or ev.data.strip() == "[DONE]":
                return None
            obj = ev.json()
            if not isinstance(obj, dict):
                raise StreamError(f"unexpected stream event: {ev.data[:200]!r}", provider=provider)
            if "error" in obj:
                raise error_from_payload(obj, status=None, provider=provider)
            return obj

        events = self._http.stream(
            "POST", "generate_stream", json=body, kind="sse", is_last=_tgi_last,
            model=self.model, end_marker="the final event (generated_text)", parse=parse,
        )
        text = ""
        sent = 0
        usage: Usage | None = None
        try:
            async with aclosing(events):
                async for obj in events:
                    if obj is None:
                        continue
                    token = obj.get("token") or {}
                    if not token.get("special"):
                        text += str(token.get("text") or "")
                    final = obj.get("generated_text")
                    if final is None:
                        visible, hit = _cut_stop(text, stops)
                        upto = len(visible) if hit else len(text) - _stop_hold(text, stops)
                        if upto > sent:
                            yield StreamChunk(delta=text[sent:upto], raw=obj)
                            sent = upto
                        continue
                    details = obj.get("details") or {}
                    full, _ = _cut_stop(str(final), stops) if stops else (str(final), False)
                    if not full.startswith(text[:sent]):  # decoding differs: use the tokens
                        full = _cut_stop(text, stops)[0] if stops else text
                    rest = full[sent:]
                    usage = Usage.of(details.get("input_length"), details.get("generated_tokens"))
                    raw_finish = details.get("finish_reason")
                    yield StreamChunk(
                        delta=rest,
                        finish_reason=_TGI_FINISH.get(str(raw_finish), raw_finish or "stop"),
                        usage=usage,
                        raw=obj,
                    )
        finally:
            self._record_usage(usage)

    # ------------------------------------------------------------------ embeddings

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        if self._use_local:
            items = _check_texts(texts)
            if not items:
                return []
            with self._local_errors():
                return await self._local_backend().embed(items)
        return await super().embed_batch(texts)

    async def _embed_request(self, texts: list[str]) -> list[list[float]]:
        model = self._embedding_model()
        extra = self.config.extra
        body: dict[str, Any] = {"inputs": texts}
        for key in ("normalize", "truncate", "truncation_direction", "prompt_name"):
            if extra.get(key) is not None:
                body[key] = extra[key]
        if extra.get("normalize_embeddings") is not None and "normalize" not in body:
            body["normalize"] = bool(extra["normalize_embeddings"])
        base = str(extra.get("embedding_base_url") or self._http.base_url).rstrip("/")
        url = f"{base}/hf-inference/models/{quote(model, safe='/:@')}/pipeline/feature-extraction"
        data = await self._http.request("POST", url, json=body, model=model)
        depth = _depth(data)
        if len(texts) == 1 and (depth == 1 or (depth == 2 and len(data) != 1)):
            return [_pool(data)]  # one vector, or one text's token vectors
        if not isinstance(data, list) or depth < 2 or len(data) != len(texts):
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise StreamError(
                f"feature-extraction returned {got} embeddings for {len(texts)} inputs",
                provider=self.provider,
            )
        return [_pool(item) for item in data]

    # ------------------------------------------------------------------ local mode

    def _local_backend(self) -> LocalBackend:
        if self._local is None:
            try:
                from llmkit.providers.hf_local import LocalBackend
            except ImportError as exc:  # pragma: no cover - part of the package
                raise ConfigError(f"local mode is unavailable: {exc}", provider=self.provider) from None
            extra = self.config.extra
            kwargs: dict[str, Any] = {k: extra[k] for k in _LOCAL_OPTIONS if k in extra}
            kwargs.setdefault("trust_remote_code", False)
            try:
                self._local = LocalBackend(self.model, **kwargs)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid local option: {exc}", provider=self.provider) from None
        return self._local

    @contextmanager
    def _local_errors(self) -> Iterator[None]:
        """Local failures as typed errors; request metrics recorded."""
        started = time.perf_counter()
        self._metrics.start()
        error: str | None = None
        try:
            yield
        except LLMError as exc:
            error = exc.type
            raise
        except ImportError as exc:
            error = "configuration"
            raise ConfigError(
                f"local mode needs the [local] extra (torch, transformers, "
                f"sentence-transformers): {exc}",
                provider=self.provider,
            ) from None
        except ValueError as exc:
            error = "invalid_request"
            raise InvalidRequestError(str(exc), provider=self.provider) from None
        except OSError as exc:
            error = "model_not_found"
            raise ModelNotFoundError(
                f"cannot load local model {self.model!r}: {exc}", provider=self.provider
            ) from None
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except Exception as exc:
            error = "local_error"
            raise LLMError(f"local generation failed: {exc!r}", provider=self.provider) from exc
        finally:
            if error is None:
                self._metrics.finish(time.perf_counter() - started)
            else:
                self._metrics.finish(0.0, error)

    def _local_params(self, options: dict[str, Any]) -> dict[str, Any]:
        opts = self._options(options)
        top_p = opts.get("top_p")
        return {
            "max_new_tokens": opts["max_tokens"],
            "temperature": float(opts.get("temperature") or 0.0),
            "top_p": float(top_p) if top_p is not None else 1.0,
            "stop": list(opts.get("stop") or []) or None,
            "seed": opts.get("seed"),
        }

    @staticmethod
    def _local_messages(messages: MessagesInput) -> list[dict[str, Any]]:
        return [{"role": str(m.role), "content": m.text()} for m in normalize_messages(messages)]

    def _no_local_tools(self, tools: Sequence[Any] | None) -> None:
        if tools:
            raise NotSupportedError("tools are not supported in local mode", provider=self.provider)

    async def _local_chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None,
        response_format: Any,
        **options: Any,
    ) -> ChatResponse:
        self._no_local_tools(tools)
        msgs = self._local_messages(messages)
        params = self._local_params(options)
        with self._local_errors():
            result = await self._local_backend().generate(msgs, **params)
        return self._local_response(result, response_format)

    def _local_response(self, result: Any, response_format: Any = None) -> ChatResponse:
        usage = Usage.of(result.prompt_tokens, result.completion_tokens)
        self._record_usage(usage)
        response = ChatResponse(
            content=result.text, finish_reason=result.finish_reason, usage=usage, model=self.model
        )
        if response_format is not None:
            response.parsed = parse_structured(result.text, response_format, self.provider)
        return response

    async def _local_stream(
        self, messages: MessagesInput, *, tools: Sequence[Any] | None, **options: Any
    ) -> AsyncGenerator[StreamChunk, None]:
        self._no_local_tools(tools)
        msgs = self._local_messages(messages)
        params = self._local_params(options)
        usage_out: dict[str, Any] = {}
        with self._local_errors():
            backend = self._local_backend()
            stream: AsyncIterator[str] = backend.stream(msgs, usage_out=usage_out, **params)
            async with aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    yield StreamChunk(delta=delta)
        usage = Usage.of(usage_out.get("prompt_tokens"), usage_out.get("completion_tokens"))
        self._record_usage(usage)
        yield StreamChunk(finish_reason=usage_out.get("finish_reason") or "stop", usage=usage)

    # ------------------------------------------------------------------ batches

    def supports_batching(self) -> bool:
        return self._use_local

    async def batch_generate(
        self,
        prompts: Iterable[MessagesInput],
        *,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: bool | Any = False,
        **options: Any,
    ) -> list[Any]:
        """One reply per prompt, in input order. Local mode batches natively
        (``max_batch_size`` prompts per forward pass); API mode fans out requests."""
        if not self._use_local:
            return await super().batch_generate(
                prompts, concurrency=concurrency, return_exceptions=return_exceptions,
                progress=progress, **options,
            )
        from llmkit.batch import _Progress

        items = list(prompts)
        results: list[Any] = [None] * len(items)
        valid: list[tuple[int, list[dict[str, Any]]]] = []
        for i, prompt in enumerate(items):
            try:
                valid.append((i, self._local_messages(prompt)))
            except LLMError as exc:
                if not return_exceptions:
                    raise
                results[i] = exc
        params = self._local_params(options)
        backend = self._local_backend()
        size = max(1, int(getattr(backend, "max_batch_size", 8)))
        bar = _Progress(progress, len(items), f"{self.provider} batch")
        try:
            for _ in range(len(items) - len(valid)):
                bar.update()
            for start in range(0, len(valid), size):
                chunk = valid[start : start + size]
                out: list[Any]
                try:
                    with self._local_errors():
                        out = await backend.generate_batch([m for _, m in chunk], **params)
                except LLMError as exc:
                    if not return_exceptions:
                        raise
                    out = [exc] * len(chunk)
                for (index, _), res in zip(chunk, out, strict=True):
                    if isinstance(res, BaseException):
                        results[index] = res
                    else:
                        results[index] = self._local_response(res).content
                    bar.update()
        finally:
            bar.close()
        return results

    # ------------------------------------------------------------------ caches

    async def build_cache(self, prefix_messages: MessagesInput) -> PromptCache:
        """Process a conversation prefix once (local mode) for :meth:`generate_with_cache`."""
        if not self._use_local:
            raise NotSupportedError(
                "prompt caches need local mode (base_url='local')", provider=self.provider
            )
        msgs = self._local_messages(prefix_messages)
        with self._local_errors():
            handle = await self._local_backend().build_cache(msgs)
        return PromptCache(self.provider, msgs, handle)

    async def generate_with_cache(
        self, messages: MessagesInput, cache: PromptCache, **options: Any
    ) -> str:
        """Generate for ``messages`` (the full conversation, starting with the cached
        prefix) reusing the prefix's KV cache. Local mode only."""
        if not self._use_local:
            raise NotSupportedError(
                "prompt caches need local mode (base_url='local')", provider=self.provider
            )
        if not isinstance(cache, PromptCache) or cache.provider != self.provider:
            raise InvalidRequestError(
                "cache must come from this provider's build_cache()", provider=self.provider
            )
        msgs = self._local_messages(messages)
        params = self._local_params(options)
        with self._local_errors():
            result = await self._local_backend().generate_with_cache(msgs, cache.handle, **params)
        return self._local_response(result).content

    # ------------------------------------------------------------------ Hub

    async def search_models(
        self, query: str | None = None, limit: int = 10, **filters: Any
    ) -> list[dict[str, Any]]:
        """Models on the Hub (``GET /api/models``). ``filters``: ``author``, ``filter`` (a tag
        or a list of tags), ``sort``, ``direction``, ``pipeline_tag``, ``library``, ``full``,
        ... passed through as query parameters."""
        params: MultiDict[str] = MultiDict()
        if query:
            params.add("search", str(query))
        if limit is not None:
            if int(limit) < 0:
                raise InvalidRequestError("limit must be >= 0", provider=self.provider)
            params.add("limit", str(int(limit)))
        for key, value in filters.items():
            if value is None:
                continue
            values = value if isinstance(value, (list, tuple, set)) else [value]
            for v in values:
                if isinstance(v, bool):
                    params.add(key, "true" if v else "false")
                else:
                    params.add(key, str(v))
        data = await self._hub.request("GET", "api/models", params=params)
        if not isinstance(data, list):
            raise error_from_payload(
                data, status=200, provider=self.provider,
                default_message="Hub model search did not return a list",
            )
        return [dict(m) for m in data if isinstance(m, dict)]

    async def get_model_details(self, model_id: str | None = None) -> dict[str, Any]:
        """A model's Hub record (``GET /api/models/{model_id}``); unknown ids raise
        :class:`ModelNotFoundError`."""
        repo = model_id or self.model.split(":", 1)[0]
        if not repo or not isinstance(repo, str):
            raise InvalidRequestError("model_id must be a non-empty string", provider=self.provider)
        data = await self._hub.request("GET", f"api/models/{quote(repo, safe='/')}", model=repo)
        if not isinstance(data, dict):
            raise error_from_payload(
                data, status=200, provider=self.provider,
                default_message="Hub model details are not a JSON object",
            )
        return dict(data)

    # ------------------------------------------------------------------ code

    async def generate_code(self, prompt: str, language: str = "python", **options: Any) -> str:
        """Code only: asks for ``language`` code in one fenced block and returns the block's
        contents (see :func:`extract_code`)."""
        lang = language.strip() or "python"
        messages = [
            {
                "role": "system",
                "content": (
                    f"You are an expert {lang} programmer. Reply with only the {lang} code, "
                    f"in a single fenced code block (```{lang.lower()} ... ```), "
                    "with no explanation before or after it."
                ),
            },
            {"role": "user", "content": prompt},
        ]
        text = await self.generate(messages, **options)
        return extract_code(text, lang)

    # ------------------------------------------------------------------ health, info

    async def health_check(self) -> None:
        if self._use_local:
            with self._local_errors():
                await self._local_backend().load()
            return
        api = await self._resolve_api()
        timeout = min(self.config.timeout, 10.0)
        if api in ("tgi", "tgi-chat"):
            await self._http.request("GET", "health", timeout=timeout, parse="bytes")
        else:
            await self._http.request("GET", "v1/models", timeout=timeout)

    def get_model_info(self) -> ModelInfo:
        if self._use_local:
            info = self._local_backend().info()
            return ModelInfo(
                provider=self.provider,
                model=self.model,
                base_url="local",
                capabilities=Capabilities(
                    streaming=True, embeddings=True, tools=False, batching=True, kv_cache=True
                ),
                context_length=info.get("context_length"),
                details={"mode": "local", **info},
            )
        api = self._api or (self.config.extra.get("api") or "auto")
        tgi = self._tgi_info or {}
        context = tgi.get("max_total_tokens") or tgi.get("max_input_length")
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self._http.base_url,
            capabilities=Capabilities(
                streaming=True,
                embeddings=True,
                tools=api != "tgi",
                batching=False,
                kv_cache=False,
            ),
            context_length=int(context) if context else None,
            details={"mode": "api", "api": api, "hub_url": self._hub.base_url,
                     **({"tgi": tgi} if tgi else {})},
        )

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        try:
            await self._hub.aclose()
            if self._local is not None:
                local, self._local = self._local, None
                await local.aclose()
        finally:
            await super().aclose()

