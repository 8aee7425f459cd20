"""Handing results from worker threads to the event loop that asked for them."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["poster", "settle"]

T = TypeVar("T")


class _Mailbox:
    """Callbacks from worker threads to one event loop, delivered in bursts: the loop is
    woken once per burst (one ``call_soon_threadsafe``) rather than once per callback, so
    64 streams advancing by a token cost one wake-up, not 64."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, fn: Callable[[Any], None], value: Any) -> None:
        """Raises RuntimeError when the loop is closed."""
        if self.loop.is_closed():
            raise RuntimeError("event loop is closed")
        with self._lock:
            self._items.append((fn, value))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            with self._lock:
                self._scheduled = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for fn, value in items:
            fn(value)


_MAILBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
    weakref.WeakKeyDictionary()
)
_MAILBOXES_LOCK = threading.Lock()


def poster(
    loop: asyncio.AbstractEventLoop, fn: Callable[[T], None], cancel: Callable[[], None]
) -> Callable[[T], None]:
    """``fn`` called on ``loop`` from any thread; ``cancel`` once the loop is gone."""
    with _MAILBOXES_LOCK:
        mailbox = _MAILBOXES.get(loop)
        if mailbox is None:
            mailbox = _MAILBOXES[loop] = _Mailbox(loop)

    def post(value: T) -> None:
        try:
            mailbox.post(fn, value)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel()

    return post


def settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
