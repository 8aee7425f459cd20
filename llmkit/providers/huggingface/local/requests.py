"""One generation request as the decoding engine sees it: options, token bookkeeping,
stop detection, and how its text and result get back to the caller."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmkit.core.errors import ContextLengthError
from llmkit.core.stop_sequences import StopScanner, cut_at_stop
from llmkit.providers.huggingface.local.detokenize import IncrementalDecoder
from llmkit.providers.huggingface.local.kv_cache import LocalKVCache
from llmkit.providers.huggingface.local.loading import PROVIDER, LoadedLM

__all__ = ["GenParams", "GenRequest", "LocalResult", "encode_messages"]

Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class LocalResult:
    """The outcome of one local generation."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos token or stop string) or "length"
    logprobs: list[dict[str, Any]] | None = None
    """With ``logprobs``: one entry a generated token, in OpenAI's ``logprobs.content``
    shape (``token``, ``logprob``, ``bytes``, ``top_logprobs``)."""


@dataclass(frozen=True)
class GenParams:
    """Sampling options of one request. ``top_k`` 0 is no limit; the penalties are
    OpenAI's (subtracted from a token's logit: ``presence_penalty`` once it occurred in the
    reply, ``frequency_penalty`` per occurrence); ``logprobs`` records each generated
    token's log probability (of the model's distribution, before temperature and
    penalties) with the ``top_logprobs`` most likely alternatives."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def penalised(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)

    @classmethod
    def make(
        cls,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str] | None,
        seed: int | None,
        *,
        top_k: int = 0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> GenParams:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if top_k < 0 or top_logprobs < 0:
            raise ValueError("top_k and top_logprobs must be >= 0")
        stops = tuple(s for s in (stop or ()) if s)
        return cls(
            max_new_tokens, float(temperature), float(top_p), stops, seed, int(top_k),
            float(presence_penalty), float(frequency_penalty), bool(logprobs), int(top_logprobs),
        )


def _plain_prompt(messages: Messages, add_generation_prompt: bool) -> str:
    text = "\n".join(f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages)
    if add_generation_prompt:
        text = f"{text}\nassistant:" if text else "assistant:"
    return text


def encode_messages(lm: LoadedLM, messages: Messages, add_generation_prompt: bool) -> list[int]:
    """Token ids of a conversation, rendered with the chat template when there is one."""
    msgs = [dict(m) for m in messages]
    tok = lm.tokenizer
    with lm.tok_lock:
        if lm.has_template:
            text = tok.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=add_generation_prompt
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(_plain_prompt(msgs, add_generation_prompt), add_special_tokens=True)[
                "input_ids"
            ]
    if not ids:
        raise ValueError("the rendered prompt is empty")
    return [int(i) for i in ids]


def make_decoder(lm: LoadedLM) -> Callable[[list[int]], str]:
    """A thread-safe ``ids -> text`` (special tokens skipped), on the fast tokenizer if any."""
    fast = getattr(lm.tokenizer, "_tokenizer", None)
    lock = lm.tok_lock
    if fast is not None and hasattr(fast, "decode"):

        def decode_fast(ids: list[int]) -> str:
            with lock:
                return str(fast.decode(ids, skip_special_tokens=True))

        return decode_fast

    def decode(ids: list[int]) -> str:
        with lock:
            return str(lm.tokenizer.decode(ids, skip_special_tokens=True))

    return decode


class GenRequest:
    """A request from submission to its result. Methods run on the engine thread except
    :meth:`cancel`; ``on_text`` and ``on_done`` are the caller's thread-safe callbacks."""

    def __init__(
        self,
        messages: Messages,
        params: GenParams,
        *,
        on_done: Callable[[LocalResult | BaseException], None],
        on_text: Callable[[str], None] | None = None,
        prefix: LocalKVCache | None = None,
    ) -> None:
        self.messages = messages
        self.params = params
        self.prefix = prefix
        self.on_done = on_done
        self.on_text = on_text
        self.cancelled = threading.Event()
        self.ids: list[int] = []
        self.generated: list[int] = []
        self.completion_tokens = 0
        self.generator: Any = None
        self.logprobs: list[dict[str, Any]] | None = [] if params.logprobs else None
        self._lm: LoadedLM | None = None
        self._decode: Callable[[list[int]], str] | None = None
        self._incremental: IncrementalDecoder | None = None
        self._scanner = StopScanner(params.stop)

    def cancel(self) -> None:
        """Drop this request at the next step; its slot goes to the next one."""
        self.cancelled.set()

    def prepare(self, lm: LoadedLM) -> None:
        """Render and check the prompt (before any forward pass)."""
        import torch

        self._lm = lm
        self.ids = encode_messages(lm, self.messages, True)
        limit = lm.context_length
        if limit is not None and len(self.ids) + 1 > limit:
            raise ContextLengthError(
                f"the prompt is {len(self.ids)} tokens; the model's maximum is {limit} positions",
                provider=PROVIDER,
            )
        if self.prefix is not None:
            self.prefix = self._usable_prefix(lm, self.prefix)
        self._decode = make_decoder(lm)
        if self.on_text is not None or self.params.stop:
            self._incremental = IncrementalDecoder(self._decode)
        if self.params.temperature > 0:
            self.generator = torch.Generator(device=lm.device)
            if self.params.seed is not None:
                self.generator.manual_seed(self.params.seed)
            else:
                self.generator.seed()

    def _usable_prefix(self, lm: LoadedLM, cache: LocalKVCache) -> LocalKVCache | None:
        if cache.owner is not lm.token:
            raise ValueError("this LocalKVCache was built by another model or before a reload")
        n = cache.prefix_tokens
        if len(self.ids) < n or tuple(self.ids[:n]) != cache.prefix_ids:
            raise ValueError(
                "the rendered prompt does not start with the cached prefix tokens; "
                "build the cache from the leading messages of this conversation"
            )
        # The model needs at least one uncached token to produce logits from.
        return cache if len(self.ids) > n else None

    def note_logprob(self, token: int, chosen: float, top: list[tuple[int, float]]) -> None:
        """Record the log probability of the token about to be accepted (not of the
        end-of-sequence token that ends the reply)."""
        assert self._lm is not None and self._decode is not None and self.logprobs is not None
        if token in self._lm.eos_ids:
            return
        self.logprobs.append({
            **self._token_entry(token, chosen),
            "top_logprobs": [self._token_entry(t, lp) for t, lp in top],
        })

    def _token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        assert self._decode is not None
        text = self._decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def accept(self, token: int) -> bool:
        """Take the next sampled token; True when the request is finished."""
        assert self._lm is not None
        self.completion_tokens += 1
        if token in self._lm.eos_ids:
            self._finish("stop")
            return True
        self.generated.append(token)
        if self._incremental is not None:
            piece = self._incremental.push(token)
            if piece:
                self._emit(self._scanner.feed(piece))
                if self._scanner.stopped:
                    self._finish("stop")
                    return True
        limit = self._lm.context_length
        if self.completion_tokens >= self.params.max_new_tokens or (
            limit is not None and len(self.ids) + self.completion_tokens >= limit
        ):
            self._finish("length")
            return True
        return False

    def _emit(self, text: str) -> None:
        if text and self.on_text is not None and not self.cancelled.is_set():
            self.on_text(text)

    def _finish(self, reason: str) -> None:
        assert self._decode is not None
        # One full decode per request: the exact text, however the pieces were split.
        text, hit = cut_at_stop(self._decode(self.generated), self.params.stop)
        result = LocalResult(
            text=text,
            prompt_tokens=len(self.ids),
            completion_tokens=self.completion_tokens,
            finish_reason="stop" if hit else reason,
            logprobs=self.logprobs,
        )
        self.fail_or_finish(result)

    def fail_or_finish(self, outcome: LocalResult | BaseException) -> None:
        if not self.cancelled.is_set():
            self.on_done(outcome)
