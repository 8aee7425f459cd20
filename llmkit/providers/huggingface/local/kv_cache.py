"""KV caches: reusable prompt-prefix handles, and the running batch's cache.

The decoding batch keeps one ``DynamicCache`` for all its rows, left-padded to a common
length. Rows join (:func:`merge`) and leave (:func:`select`) between decoding steps; the
padding columns every row has stopped needing are dropped (:func:`select` trims them).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BatchState", "LocalKVCache", "is_batchable", "merge", "select"]


class LocalKVCache:
    """An opaque handle over the KV cache of a rendered prompt prefix.

    Created by :meth:`LocalBackend.build_cache`. It is never mutated: each use works on a
    private copy, so one handle can serve many (concurrent) calls.
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

    @property
    def owner(self) -> object:
        """The load of the model that built it (a cache is valid for that load only)."""
        return self._owner

    def copy_cache(self) -> Any:
        """A private, mutable copy of the underlying model cache."""
        return copy.deepcopy(self._cache)

    def __repr__(self) -> str:
        return f"LocalKVCache(prefix_tokens={self.prefix_tokens})"


@dataclass
class BatchState:
    """Tensors of the rows decoding together (row ``i`` of each belongs to ``rows[i]``).

    ``mask`` is the left-padded attention mask ``[rows, cached tokens]``, ``positions`` the
    position id of each row's next token and ``last`` the token each row feeds next.
    """

    rows: list[Any]
    cache: Any
    mask: Any
    positions: Any
    last: Any

    @property
    def size(self) -> int:
        return len(self.rows)


def _layers(cache: Any) -> list[Any]:
    return list(getattr(cache, "layers", ()))


def is_batchable(cache: Any) -> bool:
    """Whether rows of this cache type can be joined and split (full-attention layers)."""
    from transformers.cache_utils import DynamicLayer

    layers = _layers(cache)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _left_pad(tensor: Any, width: int, dim: int) -> Any:
    import torch

    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge(a: BatchState, b: BatchState) -> BatchState:
    """The rows of ``a`` then those of ``b`` in one state (the shorter is left-padded)."""
    import torch

    width = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(_layers(a.cache), _layers(b.cache), strict=True):
        la.keys = torch.cat([_left_pad(la.keys, width, -2), _left_pad(lb.keys, width, -2)])
        la.values = torch.cat([_left_pad(la.values, width, -2), _left_pad(lb.values, width, -2)])
    return BatchState(
        rows=a.rows + b.rows,
        cache=a.cache,
        mask=torch.cat([_left_pad(a.mask, width, 1), _left_pad(b.mask, width, 1)]),
        positions=torch.cat([a.positions, b.positions]),
        last=torch.cat([a.last, b.last]),
    )


def select(state: BatchState, keep: list[int]) -> BatchState | None:
    """Only the rows at ``keep`` (None when none is left), without all-padding columns."""
    if not keep:
        return None
    if len(keep) == state.size:
        return state
    import torch

    index = torch.tensor(keep, device=state.mask.device)
    mask = state.mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else 0
    mask = mask[:, start:]
    for layer in _layers(state.cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
        layer.values = layer.values.index_select(0, index)[:, :, start:, :]
    return BatchState(
        rows=[state.rows[i] for i in keep],
        cache=state.cache,
        mask=mask,
        positions=state.positions.index_select(0, index),
        last=state.last.index_select(0, index),
    )
