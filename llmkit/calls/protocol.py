"""The vocabulary shared by providers and the call layer.

* :class:`CallTarget`: a provider instance as the call layer sees it (every
  :class:`~llmkit.base.BaseLLM` is one), with :class:`CallStateView`, the one object in which
  it keeps what the call layer works with (limiter, metrics, hooks, layers, closed). The call
  layer reads nothing else of an instance, so it never imports the base class.
* :class:`Layer` / :class:`LayerCall`: something that takes part in every call of an instance
  (the reply cache, hooks) or of every instance (OpenTelemetry), run by
  :mod:`llmkit.calls.seam`. A layer's ``start`` gives a :class:`LayerCall` for one call, or
  None to stay out of it. The seam drives each call's layers, outermost first: ``answer`` (a
  layer may answer without the provider: a cache hit), ``before`` the provider runs,
  ``chunk`` for each streamed item, and one of ``succeeded`` / ``failed`` / ``abandoned`` (a
  stream its consumer left early), innermost first. ``enter`` / ``exit`` wrap every step
  that runs provider code (an OpenTelemetry span made current).
* :class:`CallRecord`: what the layers learn while one call runs (usage, the last attempt
  and its status), reachable from anywhere below it through :func:`current_call`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.core.errors import ConfigError
from llmkit.core.types import Usage

if TYPE_CHECKING:
    from llmkit.calls.limiter import ConcurrencyLimiter
    from llmkit.calls.metrics import MetricsRecorder
    from llmkit.core.config import LLMConfig

__all__ = [
    "NO_ANSWER",
    "CallRecord",
    "CallStateView",
    "CallTarget",
    "Layer",
    "LayerCall",
    "check_open",
    "current_call",
    "enter_call",
    "inside",
    "leave_call",
]

# --------------------------------------------------------------------------- the target


class CallStateView(Protocol):
    """What the call layer reads of an instance's call state (:class:`~llmkit.calls.state.CallState`)."""

    limiter: ConcurrencyLimiter
    metrics: MetricsRecorder
    hooks: object
    layers: Sequence[Layer]
    closed: bool


class CallTarget(Protocol):
    """A provider instance as the call layer sees it."""

    call_state: CallStateView

    @property
    def config(self) -> LLMConfig: ...

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def attempts_through_transport(self) -> bool:
        """True where each attempt goes through the HTTP transport, which takes a concurrency
        slot per attempt, counts it in the metrics and reports it to the hooks; the call
        layer then only checks for closed. False: the call layer does all three per call."""
        ...


def check_open(target: CallTarget) -> None:
    if target.call_state.closed:
        raise ConfigError("instance is closed", provider=target.config.provider)

# --------------------------------------------------------------------------- the call record


class CallRecord:
    """What the layers learn while one observed call runs (usage, last attempt, status)."""

    __slots__ = ("attempt", "parent", "status", "target", "usage")

    def __init__(self, target: CallTarget, parent: CallRecord | None) -> None:
        self.target = target
        self.parent = parent
        self.usage: Usage | None = None
        self.attempt = 0
        self.status: int | None = None

    def add_usage(self, usage: Usage) -> None:
        """Count ``usage`` for this call and the calls it runs inside (a fallback's)."""
        record: CallRecord | None = self
        while record is not None:
            record.usage = usage if record.usage is None else record.usage + usage
            record = record.parent


_call: ContextVar[CallRecord | None] = ContextVar("llmkit_call", default=None)


def current_call() -> CallRecord | None:
    """The observed call running in this context, if any."""
    return _call.get()


def enter_call(record: CallRecord) -> Token[CallRecord | None]:
    return _call.set(record)


def leave_call(token: Token[CallRecord | None]) -> None:
    _call.reset(token)


def inside(target: CallTarget) -> bool:
    """True inside an observed call on ``target`` (one of its methods calling another)."""
    call = _call.get()
    return call is not None and call.target is target

# --------------------------------------------------------------------------- layers

NO_ANSWER: Any = object()
"""What :meth:`LayerCall.answer` returns when the layer does not answer the call."""


class LayerCall:
    """One layer's part in one call. Every method is a no-op here; a layer overrides those
    it needs."""

    __slots__ = ()

    async def answer(self) -> Any:
        """A reply to return without calling the provider, or :data:`NO_ANSWER`."""
        return NO_ANSWER

    def answered(self, result: Any) -> None:
        """A layer inside this one answered the call with ``result``."""

    async def before(self) -> None:
        """The provider is about to run."""

    def chunk(self, item: Any) -> None:
        """A stream yielded ``item`` to its consumer."""

    async def succeeded(self, result: Any, record: CallRecord) -> None:
        """The call returned ``result`` (for a stream: every item, in order)."""

    async def failed(self, error: BaseException, record: CallRecord) -> None:
        """The call raised ``error``."""

    def abandoned(self, record: CallRecord) -> None:
        """The consumer of a stream stopped reading before its end."""

    def enter(self) -> object:
        """Make this call's context current for one step; returns a token for :meth:`exit`."""
        return None

    def exit(self, token: object) -> None:
        """Undo :meth:`enter`."""


class Layer(Protocol):
    def start(
        self, target: CallTarget, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> LayerCall | None: ...
