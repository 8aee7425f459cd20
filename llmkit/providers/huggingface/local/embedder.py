"""The embedding batcher: concurrent ``embed`` requests share encoder calls.

One worker thread owns the sentence-transformers model. It takes the waiting requests
(whole requests, up to ``max_texts`` texts and ``max_tokens`` estimated tokens; a larger
request goes alone) and encodes their texts in runs of about two mini-batches
(``encode_batch_size`` texts each), shortest requests first, handing each run's callers
their vectors as soon as it is done.

The wait for more requests adapts to load: a request arriving at an idle batcher is
encoded at once; while requests keep arriving together (the previous call served more
than one), the worker waits up to a tenth of the previous call's duration, at most
``max_wait`` seconds, or until the call is full.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from llmkit.core.errors import ConfigError
from llmkit.providers.huggingface.local.loading import PROVIDER
from llmkit.providers.huggingface.local.worker import QueueWorker

__all__ = ["EMBED_THREAD_NAME", "EmbedBatcher", "EmbedRequest"]

EMBED_THREAD_NAME: Final = "llmkit-hf-embed"


@dataclass
class EmbedRequest:
    texts: list[str]
    normalize: bool
    on_done: Callable[[list[list[float]] | BaseException], None]

    @property
    def tokens(self) -> int:
        """An estimate (about 4 characters a token), used only to bound a call's size."""
        return sum(len(t) // 4 + 2 for t in self.texts)


class EmbedBatcher(QueueWorker[EmbedRequest]):
    thread_name = EMBED_THREAD_NAME

    def __init__(
        self,
        load: Callable[[], Any],
        *,
        encode_batch_size: int = 32,
        max_texts: int = 256,
        max_tokens: int = 32768,
        max_wait: float = 0.005,
    ) -> None:
        self._load = load
        self.encode_batch_size = encode_batch_size
        self.max_texts = max_texts
        self.max_tokens = max_tokens
        self.max_wait = max_wait
        super().__init__()
        self._last_requests = 0
        self._last_duration = 0.0
        self.encoder_calls = 0


    def _pending_texts(self) -> int:
        return sum(len(r.texts) for r in self._pending)

    def _take(self) -> list[EmbedRequest] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self._last_requests > 1:
                deadline = time.monotonic() + min(self.max_wait, self._last_duration / 10)
                while self._pending_texts() < self.max_texts and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken = [self._pending.popleft()]
            texts, tokens = len(taken[0].texts), taken[0].tokens
            while self._pending:
                nxt = self._pending[0]
                if texts + len(nxt.texts) > self.max_texts or tokens + nxt.tokens > self.max_tokens:
                    break
                taken.append(self._pending.popleft())
                texts, tokens = texts + len(nxt.texts), tokens + nxt.tokens
            return taken

    def _run(self) -> None:
        try:
            while (taken := self._take()) is not None:
                started = time.perf_counter()
                for group in self._groups(taken):
                    try:
                        vectors = self._encode(group)
                    except BaseException as exc:
                        for request in group:
                            request.on_done(exc)
                    else:
                        for request, result in zip(group, vectors, strict=True):
                            request.on_done(result)
                self._last_requests = len(taken)
                self._last_duration = time.perf_counter() - started
        finally:
            closed = ConfigError("the local backend is closed", provider=PROVIDER)
            with self._cond:
                leftover = list(self._pending)
                self._pending.clear()
            for request in leftover:
                request.on_done(closed)

    def _groups(self, taken: list[EmbedRequest]) -> list[list[EmbedRequest]]:
        """Requests in runs of about two mini-batches of texts: each run's callers get their
        vectors as soon as it is encoded, rather than all callers waking at once at the end.
        Requests are ordered by text length first, so a run pads about as little as one
        ``encode`` of everything would (it sorts by length too)."""
        groups: list[list[EmbedRequest]] = [[]]
        texts = 0
        for request in sorted(taken, key=lambda r: max(len(t) for t in r.texts)):
            if groups[-1] and texts + len(request.texts) > 2 * self.encode_batch_size:
                groups.append([])
                texts = 0
            groups[-1].append(request)
            texts += len(request.texts)
        return groups

    def _encode(self, group: list[EmbedRequest]) -> list[list[list[float]]]:
        import numpy as np

        model = self._load()
        texts = [t for request in group for t in request.texts]
        matrix = model.encode(
            texts,
            batch_size=self.encode_batch_size,
            normalize_embeddings=False,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.encoder_calls += 1
        out: list[list[list[float]]] = []
        start = 0
        for request in group:
            part = matrix[start : start + len(request.texts)]
            start += len(request.texts)
            if request.normalize:
                norms = np.linalg.norm(part, axis=1, keepdims=True)
                part = part / np.maximum(norms, 1e-12)
            out.append(part.tolist())
        return out
