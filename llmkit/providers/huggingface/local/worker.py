"""A queue of requests served by one daemon thread, started on first use.

The embedding batcher and the decoding engine are both this: callers on any event loop
``submit`` requests; the thread takes them in batches under ``_cond``; ``close`` stops the
thread (failing what is still queued, in the subclass's ``_run``) and a later ``submit``
starts a new one.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import ClassVar, Generic, TypeVar

from llmkit.core.errors import ConfigError
from llmkit.providers.huggingface.local.loading import PROVIDER

__all__ = ["QueueWorker"]

R = TypeVar("R")


class QueueWorker(Generic[R]):
    thread_name: ClassVar[str] = "llmkit-hf-worker"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: deque[R] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, request: R) -> None:
        with self._cond:
            if self._closed:
                raise ConfigError("the local backend is closed", provider=PROVIDER)
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=self.thread_name, daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread, failing what is still queued (blocking: call it from a worker
        thread). A later :meth:`submit` starts a new one."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cond:  # a later submit starts afresh
            self._closed = False
            self._thread = None

    def _run(self) -> None:  # the thread's body
        raise NotImplementedError
