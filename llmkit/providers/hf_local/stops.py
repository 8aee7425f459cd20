"""Incremental detokenizing and stop-sequence scanning, linear in the output length.

Neither class imports torch: they work on token ids and text only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["IncrementalDecoder", "StopScanner", "cut_at_stop"]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut at the earliest stop string, and whether one was found (one pass per stop)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopScanner:
    """Finds stop strings in text that arrives piece by piece.

    Every piece is searched together with the held-back tail only (the longest suffix
    that could still grow into a stop string, shorter than the longest stop), so the
    total work is linear in the text length whatever its size. :meth:`feed` returns the
    text that can be sent without ever being retracted; a stop string and what follows
    it are never returned.
    """

    __slots__ = ("_held", "_prefixes", "stopped", "stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops: tuple[str, ...] = tuple(s for s in stops if s)
        # Every proper prefix of every stop string, for the hold-back check.
        self._prefixes = frozenset(s[:k] for s in self.stops for k in range(1, len(s)))
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; return the new text that is safe to send (may be empty)."""
        if self.stopped:
            return ""
        text = self._held + piece
        if not self.stops:
            self._held = ""
            return text
        cut, hit = cut_at_stop(text, self.stops)
        if hit:
            self.stopped = True
            self._held = ""
            return cut
        hold = 0
        for k in range(min(len(text), max(map(len, self.stops)) - 1), 0, -1):
            if text[-k:] in self._prefixes:
                hold = k
                break
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The held-back tail, released when the text ends without a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


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
