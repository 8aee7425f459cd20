"""Local Hugging Face inference backend.

Text generation runs on ``transformers`` causal LMs and embeddings on
``sentence-transformers``. Both are optional dependencies (the ``[local]`` extra)
and are imported lazily, inside the functions that need them, so importing this
module (or :mod:`llmkit`) never imports torch.

All blocking work (loading, tokenizing, generation, encoding) runs in worker
threads; the event loop is never blocked. Models are loaded on first use, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

__all__ = ["LocalBackend", "LocalKVCache", "LocalResult"]

Messages = Sequence[Mapping[str, Any]]

_DTYPES: Final = ("auto", "float32", "float16", "bfloat16")
_STREAM_THREAD_NAME: Final = "llmkit-hf-generate"
# torch's RNG is process-global: seeded generations are serialised so that a
# seed gives the same output whatever else runs concurrently.
_SEED_LOCK = threading.Lock()


@dataclass(frozen=True)
class LocalResult:
    """The outcome of one local generation."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos token or stop string) or "length"


class LocalKVCache:
    """An opaque handle over the KV cache of a rendered prompt prefix.

    Created by :meth:`LocalBackend.build_cache`. It is never mutated: each use
    works on a private copy, so one handle can serve many (concurrent) calls.
    """

    __slots__ = ("_cache", "_owner", "_prefix_ids")

    def __init__(self, cache: Any, prefix_ids: Sequence[int], owner: object) -> None:
        self._cache = cache
        self._prefix_ids: tuple[int, ...] = tuple(prefix_ids)
        self._owner = owner

    @property
    def prefix_tokens(self) -> int:
        """Number of prefix tokens held in the cache."""
        return len(self._prefix_ids)

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        return self._prefix_ids

    def copy_cache(self) -> Any:
        """A private, mutable copy of the underlying model cache."""
        return copy.deepcopy(self._cache)

    def __repr__(self) -> str:
        return f"LocalKVCache(prefix_tokens={self.prefix_tokens})"


@dataclass
class _GenParams:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @classmethod
    def make(
        cls,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str] | None,
        seed: int | None,
    ) -> _GenParams:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        stops = tuple(s for s in (stop or ()) if s)
        return cls(max_new_tokens, float(temperature), float(top_p), stops, seed)


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    token: object = field(default_factory=object)
    cache_kwarg: str = "cache"
    eos_ids: frozenset[int] = frozenset()
    pad_id: int = 0
    has_template: bool = False
    tok_lock: threading.Lock = field(default_factory=threading.Lock)


def _truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; report whether one was found."""
    cut = -1
    for s in stops:
        i = text.find(s)
        if i != -1 and (cut == -1 or i < cut):
            cut = i
    if cut == -1:
        return text, False
    return text[:cut], True


def _streamable_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of a partial output that can be sent without ever being retracted.

    Holds back a trailing incomplete character (U+FFFD from a partial UTF-8
    sequence) and any suffix that could still grow into a stop string.
    """
    text, hit = _truncate_at_stop(text, stops)
    if hit:
        return text
    text = text.rstrip("\ufffd")
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return text[: len(text) - hold] if hold else text


def _resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype: str | None, device: str) -> Any:
    """A torch dtype, or the string "auto" (use the checkpoint's dtype)."""
    import torch

    if dtype == "auto":
        return "auto"
    if dtype is None:
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.startswith("mps"):
            return torch.float16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _has_safetensors(model: str) -> bool | None:
    p = Path(model)
    if not p.is_dir():
        return None
    if any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists():
        return True
    return None


def _dtype_kwarg() -> str:
    import transformers

    parts = transformers.__version__.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):  # pragma: no cover - unusual version string
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise RuntimeError("the model did not return a KV cache")
    return cache


class _Stopper:
    """Per-row stop bookkeeping, called by ``generate`` after every decoding step.

    Records where each row finished (eos token or stop string), and stops all
    rows at once when ``cancel`` is set.
    """

    def __init__(
        self,
        prompt_len: int,
        batch: int,
        eos_ids: frozenset[int],
        stops: Sequence[str],
        decode: Callable[[Sequence[int]], str],
        cancel: threading.Event,
    ) -> None:
        self.prompt_len = prompt_len
        self.eos_ids = eos_ids
        self.stops = tuple(stops)
        self.decode = decode
        self.cancel = cancel
        self.done_at: list[int | None] = [None] * batch
        self.by_stop: list[bool] = [False] * batch
        # A character is at most 4 bytes and a byte-level token at least one byte.
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        length = int(input_ids.shape[1])
        last = input_ids[:, -1].tolist()
        start = max(self.prompt_len, length - self.window)
        result = [False] * len(self.done_at)
        for i in range(len(self.done_at)):
            if self.done_at[i] is not None:
                result[i] = True
                continue
            hit = last[i] in self.eos_ids
            if not hit and self.stops:
                tail = self.decode(input_ids[i, start:].tolist())
                hit = any(s in tail for s in self.stops)
            if hit:
                self.done_at[i] = length
                self.by_stop[i] = True
                result[i] = True
        if self.cancel.is_set():
            result = [True] * len(result)
        return torch.tensor(result, dtype=torch.bool, device=input_ids.device)


class _StreamSink:
    """A ``generate`` streamer: decodes new tokens incrementally and posts text deltas.

    Decodes a sliding window (the previous token run plus the new tokens) so the
    cost per step stays constant, and holds back text while it ends in an
    incomplete character.
    """

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        post: Callable[[str], None],
        cancel: threading.Event,
    ) -> None:
        self.decode = decode
        self.post = post
        self.cancel = cancel
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.skipped_prompt = False

    def put(self, value: Any) -> None:
        if not self.skipped_prompt:
            self.skipped_prompt = True
            return
        if self.cancel.is_set():
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        before = self.decode(self.ids[self.prefix_offset : self.read_offset])
        after = self.decode(self.ids[self.prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.post(after[len(before) :])

    def end(self) -> None:
        return None


class LocalBackend:
    """Local inference with ``transformers`` (generation) and ``sentence-transformers`` (embeddings).

    ``model`` is a local directory, or a hub id resolved only from the local
    cache (nothing is downloaded). ``device="auto"`` picks cuda, then mps, then
    cpu. ``dtype`` is ``None`` (float32 on cpu, bfloat16/float16 on accelerators),
    ``"auto"`` (the checkpoint's dtype), ``"float32"``, ``"float16"`` or
    ``"bfloat16"``. Embeddings use ``embedding_model``, or ``model`` when unset.
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
        max_batch_size: int = 8,
    ) -> None:
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES} or None, got {dtype!r}")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = str(model)
        self.embedding_model = str(embedding_model) if embedding_model is not None else self.model
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.normalize_embeddings = normalize_embeddings
        self.max_batch_size = max_batch_size
        self._lm: _Loaded | None = None
        self._st: Any = None
        self._st_device: str | None = None
        self._lm_lock = threading.Lock()
        self._st_lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def _load_lm(self) -> _Loaded:
        lm = self._lm
        if lm is not None:
            return lm
        with self._lm_lock:
            if self._lm is not None:
                return self._lm
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = _resolve_device(self.device)
            torch_dtype = _resolve_dtype(self.dtype, device)
            tokenizer = AutoTokenizer.from_pretrained(
                self.model, trust_remote_code=self.trust_remote_code, local_files_only=True
            )
            kwargs: dict[str, Any] = {
                "trust_remote_code": self.trust_remote_code,
                "local_files_only": True,
                _dtype_kwarg(): torch_dtype,
            }
            safetensors = _has_safetensors(self.model)
            if safetensors is not None:
                kwargs["use_safetensors"] = safetensors
            model: Any = AutoModelForCausalLM.from_pretrained(self.model, **kwargs)
            model.to(device)
            model.eval()

            eos: set[int] = set()
            gen_eos = getattr(model.generation_config, "eos_token_id", None)
            for value in (gen_eos, tokenizer.eos_token_id):
                if isinstance(value, int):
                    eos.add(value)
                elif isinstance(value, (list, tuple)):
                    eos.update(int(v) for v in value)
            if tokenizer.pad_token_id is None:
                if tokenizer.eos_token is not None:
                    tokenizer.pad_token = tokenizer.eos_token
                elif getattr(tokenizer, "unk_token", None) is not None:
                    tokenizer.pad_token = tokenizer.unk_token
            pad_id = tokenizer.pad_token_id
            if pad_id is None:
                pad_id = min(eos) if eos else 0
            tokenizer.padding_side = "left"

            params = inspect.signature(model.forward).parameters
            cache_kwarg = "cache" if "cache" in params else "past_key_values"
            self._lm = _Loaded(
                model=model,
                tokenizer=tokenizer,
                device=device,
                dtype=str(model.dtype).removeprefix("torch."),
                cache_kwarg=cache_kwarg,
                eos_ids=frozenset(eos),
                pad_id=int(pad_id),
                has_template=bool(getattr(tokenizer, "chat_template", None)),
            )
            return self._lm

    def _load_st(self) -> Any:
        st = self._st
        if st is not None:
            return st
        with self._st_lock:
            if self._st is not None:
                return self._st
            from sentence_transformers import SentenceTransformer

            device = _resolve_device(self.device)
            kwargs: dict[str, Any] = {}
            if self.dtype not in (None, "auto", "float32"):
                kwargs["model_kwargs"] = {_dtype_kwarg(): _resolve_dtype(self.dtype, device)}
            self._st = SentenceTransformer(
                self.embedding_model,
                device=device,
                trust_remote_code=self.trust_remote_code,
                local_files_only=True,
                **kwargs,
            )
            self._st_device = device
            return self._st

    async def load(self, *, embeddings: bool = False) -> None:
        """Load the causal LM (or, with ``embeddings=True``, the embedding model) now."""
        await asyncio.to_thread(self._load_st if embeddings else self._load_lm)

    # --------------------------------------------------------------- tokenizing

    @staticmethod
    def _plain_prompt(messages: Messages, add_generation_prompt: bool) -> str:
        lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
        text = "\n".join(lines)
        if add_generation_prompt:
            text = f"{text}\nassistant:" if text else "assistant:"
        return text

    def _encode(self, lm: _Loaded, messages: Messages, add_generation_prompt: bool) -> list[int]:
        msgs = [dict(m) for m in messages]
        tok = lm.tokenizer
        with lm.tok_lock:
            if lm.has_template:
                text = tok.apply_chat_template(
                    msgs, tokenize=False, add_generation_prompt=add_generation_prompt
                )
                ids = tok(text, add_special_tokens=False)["input_ids"]
            else:
                text = self._plain_prompt(msgs, add_generation_prompt)
                ids = tok(text, add_special_tokens=True)["input_ids"]
        if not ids:
            raise ValueError("the rendered prompt is empty")
        return [int(i) for i in ids]

    def _decoder(self, lm: _Loaded) -> Callable[[Sequence[int]], str]:
        tok = lm.tokenizer

        def decode(ids: Sequence[int]) -> str:
            with lm.tok_lock:
                return str(tok.decode(list(ids), skip_special_tokens=True))

        return decode

    # --------------------------------------------------------------- generating

    def _generation_config(self, lm: _Loaded, p: _GenParams) -> Any:
        cfg = copy.deepcopy(lm.model.generation_config)
        cfg.max_new_tokens = p.max_new_tokens
        cfg.max_length = None
        cfg.min_new_tokens = None
        cfg.min_length = 0
        cfg.num_beams = 1
        cfg.num_return_sequences = 1
        cfg.pad_token_id = lm.pad_id
        if lm.eos_ids:
            cfg.eos_token_id = sorted(lm.eos_ids)
        cfg.top_k = None
        if p.temperature == 0:
            cfg.do_sample = False
            cfg.temperature = None
            cfg.top_p = None
        else:
            cfg.do_sample = True
            cfg.temperature = p.temperature
            cfg.top_p = p.top_p if p.top_p < 1 else None
        return cfg

    def _generate_sync(
        self,
        prompts: list[list[int]],
        p: _GenParams,
        cancel: threading.Event,
        *,
        cache: LocalKVCache | None = None,
        post: Callable[[str], None] | None = None,
    ) -> list[LocalResult]:
        import torch
        from transformers import StoppingCriteriaList

        lm = self._load_lm()
        decode = self._decoder(lm)
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), lm.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        stopper = _Stopper(width, len(prompts), lm.eos_ids, p.stop, decode, cancel)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(lm.device),
            "attention_mask": attention.to(lm.device),
            "generation_config": self._generation_config(lm, p),
            "stopping_criteria": StoppingCriteriaList([stopper]),
        }
        if post is not None:
            kwargs["streamer"] = _StreamSink(decode, post, cancel)
        if cache is not None:
            kwargs[lm.cache_kwarg] = cache.copy_cache()

        seed_lock = _SEED_LOCK if p.seed is not None else contextlib.nullcontext()
        with seed_lock, torch.inference_mode():
            if p.seed is not None:
                torch.manual_seed(p.seed)
            out = lm.model.generate(**kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        rows = sequences[:, width:].tolist()

        results: list[LocalResult] = []
        for i, ids in enumerate(prompts):
            done_at = stopper.done_at[i]
            gen = rows[i] if done_at is None else rows[i][: done_at - width]
            text, hit = _truncate_at_stop(decode(gen), p.stop)
            stopped = hit or stopper.by_stop[i]
            results.append(
                LocalResult(
                    text=text,
                    prompt_tokens=len(ids),
                    completion_tokens=len(gen),
                    finish_reason="stop" if stopped else "length",
                )
            )
        return results

    async def _in_thread(
        self,
        fn: Callable[[threading.Event], list[LocalResult]],
    ) -> list[LocalResult]:
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(fn, cancel))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancel.set()
            with contextlib.suppress(BaseException):
                await task
            raise

    async def generate(
        self,
        messages: Messages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> LocalResult:
        """Generate one completion for a conversation (``temperature=0`` is greedy)."""
        p = _GenParams.make(max_new_tokens, temperature, top_p, stop, seed)

        def work(cancel: threading.Event) -> list[LocalResult]:
            lm = self._load_lm()
            return self._generate_sync([self._encode(lm, messages, True)], p, cancel)

        return (await self._in_thread(work))[0]

    async def generate_batch(
        self,
        conversations: Sequence[Messages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> list[LocalResult]:
        """Generate for several conversations with native (left-padded) batching.

        Runs in chunks of ``max_batch_size``; results are in input order.
        """
        p = _GenParams.make(max_new_tokens, temperature, top_p, stop, seed)
        if not conversations:
            return []
        lm = await asyncio.to_thread(self._load_lm)
        prompts = await asyncio.to_thread(
            lambda: [self._encode(lm, msgs, True) for msgs in conversations]
        )
        results: list[LocalResult] = []
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start : start + self.max_batch_size]

            def work(cancel: threading.Event, chunk: list[list[int]] = chunk) -> list[LocalResult]:
                return self._generate_sync(chunk, p, cancel)

            results.extend(await self._in_thread(work))
        return results

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
    ) -> AsyncIterator[str]:
        """Yield text deltas as the model produces them.

        Generation runs in its own thread. If the consumer stops early (closes
        the generator or is cancelled) the thread is told to stop and is joined
        before the generator finishes. When the stream ends normally,
        ``usage_out`` (if given) is filled with ``prompt_tokens``,
        ``completion_tokens``, ``finish_reason`` and ``text``. ``cache`` works as
        in :meth:`generate_with_cache`.
        """
        p = _GenParams.make(max_new_tokens, temperature, top_p, stop, seed)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Literal["text", "done", "error"], Any]] = asyncio.Queue()
        cancel = threading.Event()

        def post(item: tuple[Literal["text", "done", "error"], Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                cancel.set()

        def run() -> None:
            try:
                lm = self._load_lm()
                ids = self._encode(lm, messages, True)
                use = self._check_prefix(lm, ids, cache) if cache is not None else None
                result = self._generate_sync(
                    [ids], p, cancel, cache=use, post=lambda text: post(("text", text))
                )[0]
            except BaseException as exc:
                post(("error", exc))
            else:
                post(("done", result))

        thread = threading.Thread(target=run, name=_STREAM_THREAD_NAME, daemon=True)
        thread.start()
        produced = ""
        sent = ""
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    produced += value
                    safe = _streamable_prefix(produced, p.stop)
                    if len(safe) > len(sent) and safe.startswith(sent):
                        delta, sent = safe[len(sent) :], safe
                        yield delta
                elif kind == "error":
                    raise value
                else:
                    result: LocalResult = value
                    if result.text.startswith(sent) and len(result.text) > len(sent):
                        yield result.text[len(sent) :]
                    if usage_out is not None:
                        usage_out.update(
                            prompt_tokens=result.prompt_tokens,
                            completion_tokens=result.completion_tokens,
                            finish_reason=result.finish_reason,
                            text=result.text,
                        )
                    break
        finally:
            cancel.set()
            if thread.is_alive():
                await asyncio.to_thread(thread.join)

    # ----------------------------------------------------------------- caching

    async def build_cache(self, prefix_messages: Messages) -> LocalKVCache:
        """Run a conversation prefix through the model once and keep its KV cache.

        The prefix is rendered without the generation prompt.
        """

        def work() -> LocalKVCache:
            import torch

            lm = self._load_lm()
            ids = self._encode(lm, prefix_messages, False)
            input_ids = torch.tensor([ids], dtype=torch.long, device=lm.device)
            with torch.inference_mode():
                out = lm.model(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    use_cache=True,
                )
            return LocalKVCache(_output_cache(out), ids, lm.token)

        return await asyncio.to_thread(work)

    def _check_prefix(
        self, lm: _Loaded, ids: list[int], cache: LocalKVCache
    ) -> LocalKVCache | None:
        if cache._owner is not lm.token:
            raise ValueError("this LocalKVCache was built by another model or before a reload")
        n = cache.prefix_tokens
        if len(ids) < n or tuple(ids[:n]) != cache.prefix_ids:
            raise ValueError(
                "the rendered prompt does not start with the cached prefix tokens; "
                "build the cache from the leading messages of this conversation"
            )
        # The model needs at least one uncached token to produce logits from.
        return cache if len(ids) > n else None

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
    ) -> LocalResult:
        """Like :meth:`generate`, reusing a prefix cache so only the suffix is computed.

        ``messages`` is the full conversation; its rendered prompt must start with
        the cached prefix tokens, otherwise :class:`ValueError` is raised. The
        cache itself is not modified.
        """
        p = _GenParams.make(max_new_tokens, temperature, top_p, stop, seed)
        lm = await asyncio.to_thread(self._load_lm)
        ids = await asyncio.to_thread(self._encode, lm, messages, True)
        use = self._check_prefix(lm, ids, cache)

        def work(cancel: threading.Event) -> list[LocalResult]:
            return self._generate_sync([ids], p, cancel, cache=use)

        return (await self._in_thread(work))[0]

    # --------------------------------------------------------------- embedding

    async def embed(
        self, texts: list[str], *, normalize: bool | None = None, batch_size: int = 32
    ) -> list[list[float]]:
        """Embed texts with sentence-transformers; ``normalize`` defaults to the constructor's."""
        if not texts:
            return []
        norm = self.normalize_embeddings if normalize is None else normalize

        def work() -> list[list[float]]:
            st = self._load_st()
            vectors = st.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=norm,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out: list[list[float]] = vectors.tolist()
            return out

        return await asyncio.to_thread(work)

    # -------------------------------------------------------------------- info

    def info(self) -> dict[str, Any]:
        """Device, dtype, context length and model paths (what is known so far)."""
        lm = self._lm
        context_length: int | None = None
        if lm is not None:
            device, dtype = lm.device, lm.dtype
            context_length = getattr(lm.model.config, "max_position_embeddings", None)
        else:
            device = self.device
            if device == "auto" and "torch" in sys.modules:
                device = _resolve_device(device)
            dtype = self.dtype or ("float32" if device == "cpu" else "default")
            config = Path(self.model) / "config.json"
            with contextlib.suppress(OSError, ValueError, TypeError):
                data = json.loads(config.read_text(encoding="utf-8"))
                text_config = data.get("text_config") or data
                context_length = text_config.get("max_position_embeddings") or text_config.get(
                    "n_positions"
                )
        return {
            "model": self.model,
            "embedding_model": self.embedding_model,
            "device": device,
            "dtype": dtype,
            "context_length": int(context_length) if context_length else None,
            "loaded": lm is not None,
            "embeddings_loaded": self._st is not None,
        }

    async def aclose(self) -> None:
        """Release the loaded models (a later call loads them again)."""

        def work() -> None:
            with self._lm_lock, self._st_lock:
                self._lm = None
                self._st = None
            if "torch" in sys.modules:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

        await asyncio.to_thread(work)
