"""The progress bar of a job: tqdm on stderr, drawn only on a terminal."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


class _NoBar:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress_bar(progress: Any, *, total: int, desc: str) -> Any:
    """``progress``: ``True`` (a tqdm bar when stderr is a terminal), ``False`` / ``None``
    (none), or a tqdm-like object the caller made (used as it is)."""
    if progress is True:
        if not sys.stderr.isatty():
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)
    if progress in (False, None):
        return _NoBar()
    return progress
