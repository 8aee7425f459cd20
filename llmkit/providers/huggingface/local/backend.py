"""``LocalBackend``: the asyncio face of local generation and embedding.

Every call becomes a request to the backend's decoding engine or embedding batcher,
whose worker threads do all the blocking work, so concurrent calls are batched together
and the event loop is never blocked. Results and streamed text come back to the
caller's loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmkit.providers.huggingface.local.delivery import poster, settle
from llmkit.providers.huggingface.local.embedder import EmbedBatcher, EmbedRequest
from llmkit.providers.huggingface.local.engine import DecodeEngine
from llmkit.providers.huggingface.local.kv_cache import LocalKVCache
from llmkit.providers.huggingface.local.loading import (
    DTYPES,
    LoadedLM,
    context_length_of,
    load_causal_lm,
    load_sentence_transformer,
    resolve_device,
)
from llmkit.providers.huggingface.local.requests import (
    GenParams,
    GenRequest,
    LocalResult,
    encode_messages,
)

__all__ = ["LocalBackend"]

Messages = Sequence[Mapping[str, Any]]


async def _all_or_none(calls: Sequence[Coroutine[Any, Any, LocalResult]]) -> list[LocalResult]:
    """Every call's result in order; when one fails (or the caller is cancelled) the
    others are cancelled at once, so no generation goes on for a reply nobody gets."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


class LocalBackend:
    """Local inference with ``transformers`` (generation) and ``sentence-transformers`` (embeddings).

    ``model`` is a local directory, or a hub id resolved only from the local cache
    (nothing is downloaded). ``device="auto"`` picks cuda, then mps, then cpu. ``dtype`` is
    ``None`` (float32 on cpu, bfloat16/float16 on accelerators), ``"auto"`` (the
    checkpoint's dtype), ``"float32"``, ``"float16"`` or ``"bfloat16"``. Embeddings use
    ``embedding_model``, or ``model`` when unset. ``max_batch_size`` bounds the rows that
    decode together; ``embed_batch_size`` the texts per encoder mini-batch.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str | None = None,
        trust_remote_code: bool = False,
        embedding_model: str | None = None,
        normalize_embeddings: bool = False,
        max_batch_size: int = 64,
        embed_batch_size: int = 32,
    ) -> None:
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES} or None, got {dtype!r}")
        if max_batch_size < 1 or embed_batch_size < 1:
            raise ValueError("max_batch_size and embed_batch_size must be >= 1")
        self.model = str(model)
        self.embedding_model = str(embedding_model) if embedding_model is not None else self.model
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.normalize_embeddings = normalize_embeddings
        self.max_batch_size = max_batch_size
        self._lm: LoadedLM | None = None
        self._st: Any = None
        self._lm_lock = threading.Lock()
        self._st_lock = threading.Lock()
        self.engine = DecodeEngine(self._load_lm, max_batch_size)
        self.embedder = EmbedBatcher(self._load_st, encode_batch_size=embed_batch_size)

    # ------------------------------------------------------------------ loading

    def _load_lm(self) -> LoadedLM:
        with self._lm_lock:
            if self._lm is None:
                self._lm = load_causal_lm(
                    self.model,
                    device=self.device,
                    dtype=self.dtype,
                    trust_remote_code=self.trust_remote_code,
                )
            return self._lm

    def _load_st(self) -> Any:
        with self._st_lock:
            if self._st is None:
                self._st = load_sentence_transformer(
                    self.embedding_model,
                    device=self.device,
                    dtype=self.dtype,
                    trust_remote_code=self.trust_remote_code,
                )
            return self._st

    async def load(self, *, embeddings: bool = False) -> None:
        """Load the causal LM (or, with ``embeddings=True``, the embedding model) now."""
        await asyncio.to_thread(self._load_st if embeddings else self._load_lm)

    # --------------------------------------------------------------- generating

    async def _run(self, request: GenRequest, future: asyncio.Future[LocalResult]) -> LocalResult:
        self.engine.submit(request)
        try:
            return await future
        finally:
            request.cancel()  # a no-op once finished; frees the slot when cancelled

    async def generate(
        self,
        messages: Messages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        **sampling: Any,
    ) -> LocalResult:
        """Generate one completion for a conversation (``temperature=0`` is greedy).
        ``sampling``: the other options of :class:`GenParams` (``top_k``, the penalties,
        ``logprobs``, ``top_logprobs``)."""
        params = GenParams.make(max_new_tokens, temperature, top_p, stop, seed, **sampling)
        return await self._generate(messages, params, None)

    async def _generate(
        self, messages: Messages, params: GenParams, prefix: LocalKVCache | None
    ) -> LocalResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LocalResult] = loop.create_future()
        holder: list[GenRequest] = []
        on_done = poster(loop, lambda outcome: settle(future, outcome), lambda: holder[0].cancel())
        request = GenRequest(messages, params, on_done=on_done, prefix=prefix)
        holder.append(request)
        return await self._run(request, future)

    async def generate_batch(
        self,
        conversations: Sequence[Messages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        **sampling: Any,
    ) -> list[LocalResult]:
        """Generate for several conversations in the shared batch; results in input order."""
        params = GenParams.make(max_new_tokens, temperature, top_p, stop, seed, **sampling)
        return await _all_or_none([self._generate(c, params, None) for c in conversations])

    async def generate_choices(
        self, messages: Messages, n: int, *, seed: int | None = None, **params: Any
    ) -> list[LocalResult]:
        """``n`` completions of one conversation, each sampling on its own (seeds ``seed``,
        ``seed + 1``, ... when a seed is given), as rows of the shared batch. The first
        failure cancels the others."""
        return await _all_or_none([
            self.generate(messages, seed=None if seed is None else seed + i, **params)
            for i in range(n)
        ])

    async def stream(
        self,
        messages: Messages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        cache: LocalKVCache | None = None,
        usage_out: dict[str, Any] | None = None,
        **sampling: Any,
    ) -> AsyncIterator[str]:
        """Yield text deltas as the model produces them.

        If the consumer stops early (closes the generator or is cancelled) the request
        leaves the decoding batch at the next step. When the stream ends normally,
        ``usage_out`` (if given) gets ``prompt_tokens``, ``completion_tokens``,
        ``finish_reason`` and ``text``. ``cache`` works as in :meth:`generate_with_cache`.
        """
        params = GenParams.make(max_new_tokens, temperature, top_p, stop, seed, **sampling)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        holder: list[GenRequest] = []

        def cancel() -> None:
            holder[0].cancel()

        request = GenRequest(
            messages,
            params,
            on_done=poster(loop, lambda outcome: queue.put_nowait((True, outcome)), cancel),
            on_text=poster(loop, lambda text: queue.put_nowait((False, text)), cancel),
            prefix=cache,
        )
        holder.append(request)
        self.engine.submit(request)
        sent = ""
        try:
            while True:
                done, value = await queue.get()
                if not done:
                    sent += value
                    yield value
                    continue
                if isinstance(value, BaseException):
                    raise value
                result: LocalResult = value
                if result.text.startswith(sent) and len(result.text) > len(sent):
                    yield result.text[len(sent) :]
                if usage_out is not None:
                    usage_out.update(
                        prompt_tokens=result.prompt_tokens,
                        completion_tokens=result.completion_tokens,
                        finish_reason=result.finish_reason,
                        text=result.text,
                        logprobs=result.logprobs,
                    )
                break
        finally:
            request.cancel()

    # ----------------------------------------------------------------- caching

    async def build_cache(self, prefix_messages: Messages) -> LocalKVCache:
        """Run a conversation prefix through the model once and keep its KV cache.

        The prefix is rendered without the generation prompt.
        """

        def work() -> LocalKVCache:
            import torch

            lm = self._load_lm()
            ids = encode_messages(lm, prefix_messages, False)
            input_ids = torch.tensor([ids], dtype=torch.long, device=lm.device)
            with torch.inference_mode():
                out = lm.model(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=True
                )
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            if cache is None:
                raise RuntimeError("the model did not return a KV cache")
            return LocalKVCache(cache, ids, lm.token)

        return await asyncio.to_thread(work)

    async def generate_with_cache(
        self,
        messages: Messages,
        cache: LocalKVCache,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        **sampling: Any,
    ) -> LocalResult:
        """Like :meth:`generate`, reusing a prefix cache so only the suffix is computed.

        ``messages`` is the full conversation; its rendered prompt must start with the
        cached prefix tokens, otherwise :class:`ValueError` is raised. The cache itself is
        not modified.
        """
        params = GenParams.make(max_new_tokens, temperature, top_p, stop, seed, **sampling)
        return await self._generate(messages, params, cache)

    # --------------------------------------------------------------- embedding

    async def embed(self, texts: list[str], *, normalize: bool | None = None) -> list[list[float]]:
        """Embed texts (batched with other concurrent calls); ``normalize`` defaults to the
        constructor's."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        norm = self.normalize_embeddings if normalize is None else normalize
        on_done = poster(loop, lambda outcome: settle(future, outcome), lambda: None)
        self.embedder.submit(EmbedRequest(list(texts), norm, on_done))
        return await future

    # -------------------------------------------------------------------- info

    def info(self) -> dict[str, Any]:
        """Device, dtype, context length and model paths (what is known so far)."""
        lm = self._lm
        context_length: int | None = None
        if lm is not None:
            device, dtype, context_length = lm.device, lm.dtype, lm.context_length
        else:
            device = self.device
            if device == "auto" and "torch" in sys.modules:
                device = resolve_device(device)
            dtype = self.dtype or ("float32" if device == "cpu" else "default")
            try:
                import json

                data = json.loads((Path(self.model) / "config.json").read_text(encoding="utf-8"))
                context_length = context_length_of(data) if isinstance(data, dict) else None
            except (OSError, ValueError):
                context_length = None
        return {
            "model": self.model,
            "embedding_model": self.embedding_model,
            "device": device,
            "dtype": dtype,
            "context_length": context_length,
            "loaded": lm is not None,
            "embeddings_loaded": self._st is not None,
            "max_batch_size": self.max_batch_size,
        }

    async def aclose(self) -> None:
        """Stop the worker threads and release the models."""

        def work() -> None:
            self.engine.close()
            self.embedder.close()
            with self._lm_lock, self._st_lock:
                self._lm = None
                self._st = None
            if "torch" in sys.modules:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

        await asyncio.to_thread(work)
