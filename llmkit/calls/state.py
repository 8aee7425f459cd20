"""The call state of one instance (:class:`CallState`): its concurrency limiter, metrics,
hooks, layers (reply cache, then hooks) and whether it is closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmkit.calls.hooks import Hooks
from llmkit.calls.limiter import ConcurrencyLimiter
from llmkit.calls.metrics import MetricsRecorder

if TYPE_CHECKING:
    from llmkit.calls.protocol import Layer

__all__ = ["CallState"]


class CallState:
    """The call layer's state of one instance."""

    __slots__ = ("closed", "hooks", "layers", "limiter", "metrics", "reply_cache")

    def __init__(self, max_concurrency: int) -> None:
        self.limiter = ConcurrencyLimiter(max_concurrency)
        self.metrics = MetricsRecorder(self.limiter)
        self.hooks = Hooks()
        self.reply_cache: Layer | None = None
        self.layers: tuple[Layer, ...] = ()
        """The instance's own layers, outermost first (reply cache, then hooks)."""
        self.closed = False

    def close(self) -> None:
        """The instance is closed: refuse new calls and wake those queued for a slot."""
        self.closed = True
        self.limiter.close()

    def update_layers(self) -> None:
        """Recompute :attr:`layers` after the reply cache or the hooks changed."""
        layers: list[Layer] = []
        if self.reply_cache is not None:
            layers.append(self.reply_cache)
        if self.hooks.active:
            layers.append(self.hooks)
        self.layers = tuple(layers)
