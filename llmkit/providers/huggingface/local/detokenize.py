"""Incremental detokenizing (token ids to text deltas); no torch import."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["IncrementalDecoder"]


class IncrementalDecoder:
    """Turns token ids into text deltas, one token at a time.

    Decodes a short window (the previous run of tokens plus the new ones) so the cost per
    token stays constant, and waits while the text ends in an incomplete character
    (a partial UTF-8 sequence decodes to U+FFFD).
    """

    __slots__ = ("_decode", "_ids", "_prefix_offset", "_read_offset")

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return after[len(before) :]
        return ""
