"""Hugging Face (``provider="huggingface"``): the Inference Providers router, Text
Generation Inference servers, the Hub API, and local transformers models.

Modes, chosen from the configuration:

* **router** (default, ``base_url`` is ``https://router.huggingface.co``): OpenAI-compatible
  ``POST {base}/v1/chat/completions``. The inference provider is chosen with
  ``extra["inference_provider"]`` (a provider such as ``"together"`` or ``"hf-inference"``,
  or a policy: ``"auto"``, ``"fastest"``, ``"cheapest"``, ``"preferred"``) or a model suffix
  (``"meta-llama/Llama-3.1-8B-Instruct:novita"``). Embeddings go to the chosen provider's
  feature-extraction route (see :mod:`llmkit.providers.huggingface.router`).
* **TGI** (``base_url`` points at a Text Generation Inference server). ``extra["api"]``:

  - ``"auto"`` (the default for any ``base_url`` that is not the router): ``GET {base}/info`` is
    probed once; a TGI server is then used through its messages API
    (``/v1/chat/completions``, TGI >= 1.4) or ``/generate`` for older versions; a server
    without ``/info`` is treated as a plain OpenAI-compatible one.
  - ``"tgi-chat"``: TGI's ``/v1/chat/completions``.
  - ``"tgi"``: ``/generate`` and ``/generate_stream``; messages are rendered to one prompt
    with a plain template (see :func:`render_prompt`).
  - ``"router"``: the router wire format at ``base_url`` (e.g. a proxy).

  In both TGI modes ``/info`` is read once and its limits (``max_stop_sequences``,
  ``max_total_tokens``, ``max_best_of``, ``max_input_tokens``) are checked before a request
  is sent; ``response_format`` is sent as TGI's grammar (``{"type": "json", "value":
  schema}``). TGI has no embeddings: ``embed()`` goes to the Text Embeddings Inference
  server at ``extra["embedding_base_url"]`` (``POST /embed``), else raises
  :class:`NotSupportedError`.
* **local** (``base_url="local"`` or :meth:`HuggingFaceLLM.set_use_local`): see
  :mod:`llmkit.providers.huggingface.local_mode`.

The token comes from ``api_key``, else ``HUGGINGFACE_API_TOKEN``, else ``HF_TOKEN``. A 503
"model is loading" reply (``{"error": ..., "estimated_time": N}``) is retried after ``N``
seconds, capped by ``extra["retry_max_after"]``. The Hub is reached at ``extra["hub_url"]``,
else ``HF_ENDPOINT``, else ``https://huggingface.co``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, ClassVar
from urllib.parse import urlsplit

from llmkit.base import PromptCache, _check_texts
from llmkit.core.config import LLMConfig
from llmkit.core.errors import (
    ConfigError,
    NotSupportedError,
    register_secret,
)
from llmkit.core.types import (
    Capabilities,
    ChatResponse,
    MessagesInput,
    ModelInfo,
    StreamChunk,
)
from llmkit.providers.huggingface import hub as hf_hub
from llmkit.providers.huggingface import router as hf_router
from llmkit.providers.huggingface import tgi as hf_tgi
from llmkit.providers.huggingface.chat_mode import ChatWireMode
from llmkit.providers.huggingface.detect import ServerDetection
from llmkit.providers.huggingface.hub import extract_code
from llmkit.providers.huggingface.local_mode import LocalMode
from llmkit.providers.huggingface.tgi import render_prompt
from llmkit.providers.huggingface.tgi_mode import TGIGenerateMode
from llmkit.providers.openai.compatible import OpenAICompatible

__all__ = ["HuggingFaceLLM", "extract_code", "render_prompt"]

ROUTER_URL = "https://router.huggingface.co"
HUB_URL = "https://huggingface.co"
_APIS = ("router", "tgi", "tgi-chat", "auto")


def _env_token() -> str | None:
    return os.environ.get("HUGGINGFACE_API_TOKEN") or os.environ.get("HF_TOKEN") or None


def _is_router(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "router.huggingface.co"


class HuggingFaceLLM(OpenAICompatible):
    """Hugging Face: the Inference Providers router, TGI servers, the Hub, local models."""

    provider_name: ClassVar[str] = "huggingface"
    provider_options: ClassVar[frozenset[str]] = (
        OpenAICompatible.provider_options | hf_tgi.GENERATE_PARAMETERS | {"tool_prompt"}
    )
    _chat_path: ClassVar[str] = "v1/chat/completions"
    _embeddings_path: ClassVar[str] = "v1/embeddings"
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
        hf_router.check_choice(extra.get("inference_provider"))
        self._use_local = (self.config.base_url or "").strip().lower() == "local"
        known = "router" if api == "router" or (api is None and _is_router(self._http.base_url)) else None
        self._detection = ServerDetection(self._http, extra, self.config.timeout, known)
        self._chat_mode = ChatWireMode(self, self._detection)
        self._tgi_mode = TGIGenerateMode(self, self._detection)
        self._hub = self._make_transport(self._hub_base(), self._auth_headers(self.config.key()))
        self._mappings: dict[str, dict[str, Any]] = {}
        self._local_mode = LocalMode(self)

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

    def _chat_model(self) -> str:
        if self._detection.api == "router":
            return hf_router.chat_model(self.model, self.config.extra.get("inference_provider"))
        return self.model

    @property
    def use_local(self) -> bool:
        return self._use_local

    @property
    def attempts_through_transport(self) -> bool:
        return not self._use_local  # local mode: the call layer takes the slot per call

    def _reply_scope(self) -> str:
        """Where calls run, for the reply cache's key (the config does not say it)."""
        return "local" if self._use_local else "api"

    def set_use_local(self, use_local: bool) -> None:
        """Switch between local inference and the remote API."""
        self._use_local = bool(use_local)

    # ------------------------------------------------------------------ generation

    async def _mode(self) -> LocalMode | TGIGenerateMode | ChatWireMode:
        """The mode serving calls now: local, TGI's ``/generate``, or the chat wire (the
        router, an OpenAI-compatible server, TGI's messages API)."""
        if self._use_local:
            return self._local_mode
        api = await self._detection.resolve()
        return self._tgi_mode if api == "tgi" else self._chat_mode

    async def chat(
        self,
        messages: MessagesInput,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **options: Any,
    ) -> ChatResponse:
        mode = await self._mode()
        return await mode.chat(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
            options=options,
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
        mode = await self._mode()
        stream = mode.stream(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
            options=options,
        )
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def generate_stream(
        self, messages: MessagesInput, **options: Any
    ) -> AsyncGenerator[str, None]:
        mode = await self._mode()
        texts = mode.text_stream(messages, options)
        async with aclosing(texts):
            async for text in texts:
                yield text

    # ------------------------------------------------------------------ embeddings

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        if self._use_local:
            items = _check_texts(texts)
            if not items:
                return []
            return await self._local_mode.embed(items)
        return await super().embed_batch(texts)

    async def _embed_request(self, texts: list[str]) -> list[list[float]]:
        model = self._embedding_model()
        extra = self.config.extra
        api = await self._detection.resolve()
        if api in ("tgi", "tgi-chat"):
            if not extra.get("embedding_base_url"):
                raise NotSupportedError(
                    "a TGI server has no embeddings; set extra['embedding_base_url'] to a Text "
                    "Embeddings Inference server", provider=self.provider,
                )
            return await hf_tgi.tei_embed(
                self._http, str(extra["embedding_base_url"]), texts, extra, model
            )
        if api == "openai":
            return await super()._embed_request(texts)
        choice = extra.get("inference_provider")
        mapping = None
        if hf_router.needs_mapping(model, choice):
            repo = hf_router.split_model(model)[0]
            if repo not in self._mappings:
                self._mappings[repo] = await hf_hub.provider_mapping(self._hub, repo)
            mapping = self._mappings[repo]
        provider, provider_model = hf_router.pick_embedding_provider(model, choice, mapping)
        route, body = hf_router.embedding_request(provider, provider_model, texts, extra)
        base = str(extra.get("embedding_base_url") or self._http.base_url).rstrip("/")
        data = await self._http.request("POST", f"{base}/{route}", json=body, model=model)
        return hf_router.embedding_vectors(provider, data, texts)

    # ------------------------------------------------------------------ Hub, code

    async def search_models(
        self, query: str | None = None, limit: int = 10, **filters: Any
    ) -> list[dict[str, Any]]:
        """Models on the Hub (``GET /api/models``). ``filters``: ``author``, ``filter`` (a tag
        or a list of tags), ``sort``, ``direction``, ``pipeline_tag``, ``library``, ``full``,
        ``inference_provider``, ... passed through as query parameters."""
        return await hf_hub.search_models(self._hub, query, limit, filters)

    async def get_model_details(self, model_id: str | None = None) -> dict[str, Any]:
        """A model's Hub record (``GET /api/models/{model_id}``); unknown ids raise
        :class:`ModelNotFoundError`."""
        return await hf_hub.model_details(self._hub, model_id or hf_router.split_model(self.model)[0])

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

    # ------------------------------------------------------------------ local mode

    def _local_backend(self) -> Any:
        """The local backend (built, not loaded)."""
        return self._local_mode.backend()

    def supports_batching(self) -> bool:
        return self._use_local

    async def build_cache(self, prefix_messages: MessagesInput) -> PromptCache:
        """Process a conversation prefix once (local mode) for :meth:`generate_with_cache`."""
        if not self._use_local:
            raise NotSupportedError(
                "prompt caches need local mode (base_url='local')", provider=self.provider
            )
        return await self._local_mode.build_cache(prefix_messages)

    async def generate_with_cache(
        self, messages: MessagesInput, cache: PromptCache, **options: Any
    ) -> str:
        """Generate for ``messages`` (the full conversation, starting with the cached
        prefix) reusing the prefix's KV cache. Local mode only."""
        if not self._use_local:
            raise NotSupportedError(
                "prompt caches need local mode (base_url='local')", provider=self.provider
            )
        return await self._local_mode.generate_with_cache(messages, cache, options)

    # ------------------------------------------------------------------ health, info

    async def health_check(self) -> None:
        mode = await self._mode()
        await mode.health(min(self.config.timeout, 10.0))

    def get_model_info(self) -> ModelInfo:
        """Capabilities of the mode in use (exact once the API is resolved: after the first
        call or :meth:`health_check`), and the context length from TGI's ``/info``."""
        if self._use_local:
            info = self._local_mode.info()
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
        api = self._detection.api or (self.config.extra.get("api") or "auto")
        tei = self.config.extra.get("embedding_base_url")
        tgi = self._detection.tgi_info or {}
        context = tgi.get("max_total_tokens") or tgi.get("max_input_length")
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self._http.base_url,
            capabilities=Capabilities(
                streaming=True,
                embeddings=api in ("router", "openai") or bool(tei),
                tools=api != "tgi",
                batching=False,
                kv_cache=False,
            ),
            context_length=int(context) if context else None,
            details={"mode": "api", "api": api, "hub_url": self._hub.base_url,
                     **({"tgi": tgi} if tgi else {}),
                     **({"embedding_base_url": tei} if tei else {})},
        )

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        try:
            await self._hub.aclose()
            await self._local_mode.aclose()
        finally:
            await super().aclose()
