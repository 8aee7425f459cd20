"""The decoding engine: every generation request of a backend decodes in one shared batch.

One worker thread owns the model. Between decoding steps it admits waiting requests (up
to ``max_batch_size`` rows): their prompts are prefilled together (a request reusing a
prefix cache is prefilled on a copy of it) and their KV caches are joined to the running
batch's, left-padded. Each step then runs one forward pass over every row, samples each
row with its own options (greedy, or temperature / top-p with the request's own seeded
generator), and hands each request its token. Finished or cancelled rows leave the batch
at once and free their slot; the others go on undisturbed.

This is padded batching with admission at every step, written on the model's forward
pass rather than ``generate()`` (whose batch is fixed for its whole run, with one set of
sampling options). transformers' own continuous batching (``generate_batch``, paged
attention) took 24-90x as long as a padded ``generate()`` on CPU for 16 and 64 prompts x
32 tokens (see benchmarks/README.md), so it is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from llmkit.core.errors import ConfigError
from llmkit.providers.huggingface.local.kv_cache import BatchState, is_batchable, merge, select
from llmkit.providers.huggingface.local.loading import PROVIDER, LoadedLM
from llmkit.providers.huggingface.local.requests import GenRequest
from llmkit.providers.huggingface.local.worker import QueueWorker

__all__ = ["ENGINE_THREAD_NAME", "DecodeEngine"]

ENGINE_THREAD_NAME: Final = "llmkit-hf-decode"


class DecodeEngine(QueueWorker[GenRequest]):
    """Runs submitted :class:`GenRequest` s in a shared decoding batch on its own thread."""

    thread_name = ENGINE_THREAD_NAME

    def __init__(self, load: Callable[[], LoadedLM], max_batch_size: int) -> None:
        self._load = load
        self.max_batch_size = max_batch_size
        super().__init__()
        self._batchable = True  # rows of this model's cache can be joined and split
        self._checked: object = None  # the load _batchable was worked out for
        self.forward_passes = 0  # prefills and decoding steps since creation
        self.active_rows = 0  # rows in the decoding batch now

    # ----------------------------------------------------------------- engine thread

    def _take(self, running: int) -> list[GenRequest] | None:
        """Wait for work; the requests to admit now (None when closed)."""
        with self._cond:
            while not self._pending and running == 0 and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            room = (self.max_batch_size if self._batchable else 1) - running
            taken: list[GenRequest] = []
            while self._pending and len(taken) < room:
                taken.append(self._pending.popleft())
            return taken

    def _run(self) -> None:
        import torch
        from transformers import DynamicCache

        batch: BatchState | None = None
        try:
            while True:
                new = self._take(batch.size if batch is not None else 0)
                if new is None:
                    break
                try:
                    lm = self._load()
                except BaseException as exc:
                    for request in new:
                        request.fail_or_finish(exc)
                    continue
                if lm.token is not self._checked:
                    self._checked = lm.token
                    self._batchable = is_batchable(DynamicCache(config=lm.model.config))
                try:
                    with torch.inference_mode():
                        if new:
                            batch = self._admit(lm, batch, new)
                        if batch is not None:
                            batch = self._step(lm, batch)
                except Exception as exc:  # a failed forward pass fails the rows in it, not the engine
                    for request in (batch.rows if batch is not None else []) + new:
                        request.fail_or_finish(exc)
                    batch = None
                self.active_rows = batch.size if batch is not None else 0
        finally:
            self.active_rows = 0
            closed = ConfigError("the local backend is closed", provider=PROVIDER)
            with self._cond:
                leftover = list(self._pending) + (batch.rows if batch is not None else [])
                self._pending.clear()
            for request in leftover:
                request.fail_or_finish(closed)

    def _admit(
        self, lm: LoadedLM, batch: BatchState | None, new: list[GenRequest]
    ) -> BatchState | None:
        ready: list[GenRequest] = []
        for request in new:
            if request.cancelled.is_set():
                continue
            try:
                request.prepare(lm)
            except Exception as exc:
                request.fail_or_finish(exc)
                continue
            ready.append(request)
        if not self._batchable and ready:  # one row at a time: the rest wait their turn
            with self._cond:
                self._pending.extendleft(reversed(ready[1:]))
            ready = ready[:1]
        plain = [r for r in ready if r.prefix is None]
        groups = [plain] if plain else []
        groups += [[r] for r in ready if r.prefix is not None]
        for group in groups:
            part = self._prefill(lm, group)
            if part is not None:
                batch = part if batch is None else merge(batch, part)
        return batch

    def _forward(self, lm: LoadedLM, input_ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": positions,
            lm.cache_kwarg: cache,
            "use_cache": True,
        }
        if lm.logits_kwarg is not None:
            kwargs[lm.logits_kwarg] = 1
        out = lm.model(**kwargs)
        self.forward_passes += 1
        return out.logits[:, -1, :]

    def _prefill(self, lm: LoadedLM, group: list[GenRequest]) -> BatchState | None:
        import torch
        from transformers import DynamicCache

        device = lm.device
        prefix = group[0].prefix
        if prefix is not None:  # one request, on a private copy of its prefix cache
            ids = group[0].ids
            start = prefix.prefix_tokens
            cache = prefix.copy_cache()
            mask = torch.ones((1, len(ids)), dtype=torch.long, device=device)
            input_ids = torch.tensor([ids[start:]], dtype=torch.long, device=device)
            positions = torch.arange(start, len(ids), device=device)[None, :]
        else:
            width = max(len(r.ids) for r in group)
            input_ids = torch.full((len(group), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, request in enumerate(group):
                input_ids[row, width - len(request.ids) :] = torch.tensor(request.ids)
                mask[row, width - len(request.ids) :] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache()
        logits = self._forward(lm, input_ids, mask, positions, cache)
        lengths = torch.tensor([len(r.ids) for r in group], device=device)
        state = BatchState(rows=group, cache=cache, mask=mask, positions=lengths, last=lengths)
        return self._advance(state, logits)

    def _step(self, lm: LoadedLM, batch: BatchState) -> BatchState | None:
        import torch

        mask = torch.cat([batch.mask, batch.mask.new_ones((batch.size, 1))], dim=1)
        logits = self._forward(lm, batch.last[:, None], mask, batch.positions[:, None], batch.cache)
        batch.mask = mask
        batch.positions = batch.positions + 1
        return self._advance(batch, logits)

    def _advance(self, state: BatchState, logits: Any) -> BatchState | None:
        """Sample each row's next token, hand it over, keep the rows still going."""
        tokens = sample(logits, state.rows)
        logprobs = _logprobs(logits, state.rows, tokens)
        keep: list[int] = []
        for i, (request, token) in enumerate(zip(state.rows, tokens, strict=True)):
            if request.cancelled.is_set():
                continue
            try:
                if i in logprobs:
                    request.note_logprob(token, *logprobs[i])
                finished = request.accept(token)
            except Exception as exc:
                request.fail_or_finish(exc)
                continue
            if not finished:
                keep.append(i)
        state.last = state.mask.new_tensor(tokens)
        return select(state, keep)


def _penalised(logits: Any, request: GenRequest) -> Any:
    """One row's logits with OpenAI's presence and frequency penalties applied (a copy)."""
    import torch

    p = request.params
    row = logits.float().clone()
    if request.generated:
        ids = torch.tensor(request.generated, device=row.device)
        counts = torch.bincount(ids, minlength=row.shape[-1])[: row.shape[-1]].to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
    return row


def _logprobs(
    logits: Any, rows: list[GenRequest], tokens: list[int]
) -> dict[int, tuple[float, list[tuple[int, float]]]]:
    """Row -> (log probability of its token, top alternatives) for rows that asked."""
    import torch

    out: dict[int, tuple[float, list[tuple[int, float]]]] = {}
    for i, request in enumerate(rows):
        p = request.params
        if not p.logprobs:
            continue
        lp = torch.log_softmax(logits[i].float(), dim=-1)
        top: list[tuple[int, float]] = []
        if p.top_logprobs:
            values, ids = lp.topk(min(p.top_logprobs, lp.shape[-1]))
            top = list(zip(ids.tolist(), values.tolist(), strict=True))
        out[i] = (float(lp[tokens[i]]), top)
    return out


def sample(logits: Any, rows: list[GenRequest]) -> list[int]:
    """The next token of each row: greedy at temperature 0, else temperature, top-k and
    top-p sampling with the row's own generator (so a seed gives the same tokens in any
    batch); presence and frequency penalties adjust a row's logits first."""
    import torch

    tokens: list[int] = logits.argmax(dim=-1).tolist()
    for i, request in enumerate(rows):
        p = request.params
        row = _penalised(logits[i], request) if p.penalised else logits[i]
        if p.temperature == 0 or request.generator is None:
            if p.penalised:
                tokens[i] = int(row.argmax())
            continue
        row = row.float() / p.temperature
        if 0 < p.top_k < row.shape[-1]:
            kth = row.topk(p.top_k).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        probs = torch.softmax(row, dim=-1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > p.top_p
            sorted_probs[outside] = 0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        tokens[i] = int(torch.multinomial(probs, 1, generator=request.generator))
    return tokens
