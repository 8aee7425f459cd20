"""Per-call options: the portable sampling options every provider translates to its own
wire names, the client options the client applies itself, and their checks.

``**options: Unpack[CallOptions]`` on the provider methods lets an editor complete the
names; :func:`resolve_options` is what every provider calls before building a request.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

from llmkit.core.errors import InvalidRequestError

if TYPE_CHECKING:
    from llmkit.core.config import LLMConfig

__all__ = [
    "CLIENT_OPTIONS",
    "NO_CLIENT_OPTIONS",
    "PORTABLE_OPTIONS",
    "CallOptions",
    "ClientOptions",
    "Unpack",
    "resolve_options",
]


class CallOptions(TypedDict, total=False):
    """Options of one call (``llm.generate(messages, temperature=0.2, timeout=5)``).

    Portable sampling options are translated to each provider's wire names (``max_tokens``
    is ``max_completion_tokens`` on api.openai.com, ``num_predict`` on Ollama, ...); one a
    provider cannot honour raises :class:`InvalidRequestError` before anything is sent.
    Client options are applied by the client and never sent as body fields.
    """

    # portable sampling options
    max_tokens: int
    temperature: float
    top_p: float
    stop: str | list[str]
    seed: int
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    logprobs: bool
    top_logprobs: int
    n: int
    reasoning_effort: str
    think: bool | str
    # client options
    timeout: float
    max_retries: int
    extra_headers: Mapping[str, str]
    extra_query: Mapping[str, Any]
    extra_body: Mapping[str, Any]


CLIENT_OPTIONS: frozenset[str] = frozenset(
    {"timeout", "max_retries", "extra_headers", "extra_query", "extra_body"}
)
PORTABLE_OPTIONS: frozenset[str] = frozenset(CallOptions.__annotations__) - CLIENT_OPTIONS


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """What the client itself applies to one call: ``timeout`` replaces the per-attempt
    timeout, ``max_retries`` the retry count, ``extra_headers`` / ``extra_query`` are added
    to the request, ``extra_body`` is merged into the JSON body last (by the provider)."""

    timeout: float | None = None
    max_retries: int | None = None
    # headers may carry credentials: kept out of repr()
    extra_headers: Mapping[str, str] | None = field(default=None, repr=False)
    extra_query: Mapping[str, Any] | None = None
    extra_body: Mapping[str, Any] | None = None


NO_CLIENT_OPTIONS = ClientOptions()


# ----------------------------------------------------------------------- value checks


def _fail(name: str, value: Any, expected: str) -> InvalidRequestError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidRequestError(f"option {name} must be {expected}, not {shown}", param=name)


def _number(low: float | None, high: float | None) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(name, value, "a number")
        if not math.isfinite(value) or (low is not None and value < low) or (
            high is not None and value > high
        ):
            raise _fail(name, value, f"a number within {low}-{high}")
        return value

    return check


def _integer(low: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, value, "an int")
        if value < low:
            raise _fail(name, value, f"an int >= {low}")
        return value

    return check


def _seed(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, value, "an int")
    return value


def _stop(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return list(value)
    raise _fail(name, value, "a string or a list of strings")


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, value, "True or False")
    return value


def _word(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(name, value, "a non-empty string")
    return value


def _think(name: str, value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise _fail(name, value, "True, False or a level such as 'low', 'medium', 'high'")


def _timeout(name: str, value: Any) -> float:
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        from llmkit.core.config import parse_duration

        try:
            value = parse_duration(value)
        except ValueError:
            raise _fail(name, value, "seconds (a number or '30s', '500ms')") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, value, "seconds (a number or '30s', '500ms')")
    if not math.isfinite(value) or value <= 0:
        raise _fail(name, value, "a finite number of seconds > 0")
    return float(value)


def _mapping(values: str) -> Callable[[str, Any], Mapping[str, Any]]:
    def check(name: str, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _fail(name, value, "a mapping with string keys")
        if values == "str" and not all(isinstance(v, str) for v in value.values()):
            raise _fail(name, value, "a mapping of strings to strings")
        return value

    return check


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "max_tokens": _integer(1),
    "temperature": _number(0.0, 2.0),
    "top_p": _number(0.0, 1.0),
    "stop": _stop,
    "seed": _seed,
    "top_k": _integer(0),
    "presence_penalty": _number(-2.0, 2.0),
    "frequency_penalty": _number(-2.0, 2.0),
    "logprobs": _flag,
    "top_logprobs": _integer(0),
    "n": _integer(1),
    "reasoning_effort": _word,
    "think": _think,
    "timeout": _timeout,
    "max_retries": _integer(0),
    "extra_headers": _mapping("str"),
    "extra_query": _mapping("any"),
    "extra_body": _mapping("any"),
}
_CONFIG_SAMPLING = ("max_tokens", "temperature", "top_p")


def _unknown(name: str, provider: str, known: frozenset[str]) -> InvalidRequestError:
    near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return InvalidRequestError(
        f"unknown option {name!r} for provider {provider!r}{hint} "
        f"(a field this client does not know can be sent with extra_body={{{name!r}: ...}})",
        provider=provider, param=name,
    )


def resolve_options(
    config: LLMConfig,
    options: Mapping[str, Any],
    *,
    provider: str,
    provider_options: frozenset[str],
    unsupported: Mapping[str, str],
) -> tuple[dict[str, Any], ClientOptions]:
    """The options to send and the client options of one call.

    The config's sampling fields that are set (``max_tokens``, ``temperature``,
    ``top_p``) overlaid with the per-call options; ``None`` means "not set" and is dropped.
    Portable and client values are type- and range-checked (``stop`` becomes a list);
    provider-specific names (``provider_options``) pass through unchecked. A portable name
    in ``unsupported`` raises with that reason; any other name raises naming it, the
    nearest known name and the ``extra_body`` hint.
    """
    send: dict[str, Any] = {}
    for name in _CONFIG_SAMPLING:
        value = getattr(config, name)
        if value is not None:
            send[name] = value
    client: dict[str, Any] | None = None
    for name, value in options.items():
        if value is None:
            continue
        check = _CHECKS.get(name)
        if check is not None:
            value = check(name, value)
            if name in CLIENT_OPTIONS:
                if client is None:
                    client = {}
                client[name] = value
            else:
                send[name] = value
        elif name in provider_options:
            send[name] = value
        else:
            raise _unknown(name, provider, PORTABLE_OPTIONS | CLIENT_OPTIONS | provider_options)
    for name in send.keys() & unsupported.keys():
        raise InvalidRequestError(
            f"option {name!r} is not supported by provider {provider!r}: {unsupported[name]}",
            provider=provider, param=name,
        )
    return send, (ClientOptions(**client) if client else NO_CLIENT_OPTIONS)
