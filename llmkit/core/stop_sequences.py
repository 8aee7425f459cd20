"""Stop sequences in text that arrives piece by piece, in time linear in its length."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopScanner", "cut_at_stop"]


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
