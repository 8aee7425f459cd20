"""The limiter's rules, one by one, on its arithmetic (llmkit/http/ratelimit_state.py) with
the clock given: counts and order of what is let through, never wall time."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from llmkit.http.ratelimit import LocalBackend, RateLimiter, learned_for
from llmkit.http.ratelimit_signals import Feedback
from llmkit.http.ratelimit_state import (
    BETA,
    INITIAL_WINDOW,
    RATE_FLOOR,
    WINDOW_POLL,
    LimiterState,
    Ticket,
)


def fb(status: int = 200, detail: str | None = None, **headers: str) -> Feedback:
    return Feedback.from_headers({k.replace("_", "-"): v for k, v in headers.items()}, status, detail)


PER_MINUTE = {
    "x_ratelimit_limit_requests": "2400",
    "x_ratelimit_remaining_requests": "2399",
    "x_ratelimit_reset_requests": "25ms",
}


def informed(state: LimiterState, feedback: Feedback, now: float = 0.0) -> None:
    """The first request goes alone and its answer is ``feedback``."""
    wait, ticket = state.reserve(0, now)
    assert wait == 0 and ticket is not None
    state.observe(ticket, feedback, now)
    state.release(ticket)


def grant(state: LimiterState, n: int, now: float, retry: bool = False) -> list[tuple[float, Ticket]]:
    out = []
    for _ in range(n):
        wait, ticket = state.reserve(0, now, retry)
        assert ticket is not None
        out.append((wait, ticket))
    return out


# --------------------------------------------------------------------------- headers


def test_a_per_minute_limit_is_spread_evenly_never_sent_at_once() -> None:
    state = LimiterState()
    informed(state, fb(**PER_MINUTE))
    assert state.learned.rate == pytest.approx(40.0)  # 2,400 a minute
    waits = [w for w, _ in grant(state, 20, now=0.01)]
    assert sum(w == 0 for w in waits) == 4  # a tenth of a second's worth, not 2,400
    gaps = [b - a for a, b in itertools.pairwise(waits[4:])]
    assert gaps == pytest.approx([1 / 40] * 15)


def test_a_learned_rate_never_exceeds_the_per_minute_limit() -> None:
    # limit per minute, remaining and reset of a small per-second bucket: read as a bucket
    # of 2,400 refilling in 25 ms that is about 95,000 requests per second
    state = LimiterState()
    informed(state, fb(x_ratelimit_limit_requests="2400", x_ratelimit_remaining_requests="9",
                       x_ratelimit_reset_requests="25ms"))
    assert state.learned.rate == pytest.approx(40.0)
    # rounding that would allow a little more than 60 a minute is held to it
    state = LimiterState()
    informed(state, fb(x_ratelimit_limit_requests="60", x_ratelimit_remaining_requests="59",
                       x_ratelimit_reset_requests="1s"))
    assert state.learned.rate == pytest.approx(1.0)


def test_a_bucket_described_exactly_is_followed() -> None:
    state = LimiterState()
    informed(state, fb(x_ratelimit_limit_requests="10", x_ratelimit_remaining_requests="9",
                       x_ratelimit_reset_requests="25ms"))
    _, last = grant(state, 1, now=0.003)[0]
    state.observe(last, fb(x_ratelimit_limit_requests="10", x_ratelimit_remaining_requests="0",
                           x_ratelimit_reset_requests="250ms"), now=0.004)
    assert state.learned.rate == pytest.approx(40, rel=0.1)
    waits = [w for w, _ in grant(state, 3, now=0.004)]
    assert 0 < waits[0] and waits[2] - waits[1] == pytest.approx(1 / state.learned.rate)


@pytest.mark.parametrize("reset", ["inf", "nan", "-3", "1e300"])
def test_hostile_resets_never_divide_by_zero_nor_pause_forever(reset: str) -> None:
    state = LimiterState()
    informed(state, fb(x_ratelimit_limit_requests="10", x_ratelimit_remaining_requests="0",
                       x_ratelimit_reset_requests=reset))
    assert state.learned.rate is None and state.paused_until == 0.0
    wait, ticket = state.reserve(0, 0.01)
    assert ticket is not None and wait == 0


def test_reset_as_unix_ms_pauses_for_what_is_left_not_for_ages() -> None:
    import time

    state = LimiterState()
    reset = str(int((time.time() + 2.0) * 1000))
    informed(state, fb(x_ratelimit_remaining_requests="0", x_ratelimit_reset_requests=reset), now=100.0)
    assert 100.0 + 1.5 < state.paused_until <= 100.0 + 2.01


# --------------------------------------------------------------------------- evidence


def test_every_rejection_round_lowers_the_rate_multiplicatively_once() -> None:
    state = LimiterState()
    informed(state, fb(**PER_MINUTE))
    sent = grant(state, 8, now=1.0)
    for i in range(0, 3):  # three 429s for requests sent at the rate of then: one round
        state.observe(sent[i][1], fb(429, retry_after_ms="25"), now=1.01)
    assert state.learned.evidence == pytest.approx(40 * BETA)
    assert state.learned.rejections == 3
    later = grant(state, 1, now=1.2)[0][1]  # sent at the lowered rate, refused again
    state.observe(later, fb(429, retry_after_ms="25"), now=1.3)
    assert state.learned.evidence == pytest.approx(40 * BETA * BETA)


def test_success_raises_the_rate_slowly_up_to_the_header_ceiling() -> None:
    state = LimiterState()
    informed(state, fb(**PER_MINUTE))
    state.observe(grant(state, 1, now=1.0)[0][1], fb(429, retry_after_ms="1"), now=1.0)
    rates = [state.learned.rate]
    now = 2.0
    for _ in range(400):
        wait, ticket = state.reserve(0, now)
        assert ticket is not None
        now += max(wait, 1e-3)
        state.observe(ticket, fb(200), now)
        state.release(ticket)
        rates.append(state.learned.rate)
    steps = [b - a for a, b in itertools.pairwise(rates) if b != a]
    assert steps and all(0 < s <= 1.0 / (40 * BETA) + 1e-9 for s in steps)  # additive: 1/rate
    assert rates[-1] == pytest.approx(40.0)  # never above what the headers allow


def test_the_rate_has_a_floor() -> None:
    state = LimiterState()
    informed(state, fb(**PER_MINUTE))
    now = 1.0
    for _ in range(200):
        ticket = grant(state, 1, now)[0][1]
        state.observe(ticket, fb(429), now)  # each pauses one interval of the new rate
        state.release(ticket)
        now = state.paused_until + 0.001
    assert state.learned.rate == RATE_FLOOR


def test_a_bare_429_in_a_fan_out_starts_a_rate_from_what_was_accepted() -> None:
    state = LimiterState()
    informed(state, fb(200))  # no headers: the slow-start window
    assert state.learned.window == INITIAL_WINDOW
    sent = grant(state, 12, now=0.01)
    for _, ticket in sent[:9]:
        state.observe(ticket, fb(200), 0.02)
        state.release(ticket)
    state.observe(sent[9][1], fb(429), 0.03)
    assert state.learned.rate == pytest.approx(10.0)  # 10 accepted over the last second
    assert state.learned.source == "429"
    # what was granted before is void: it is spaced at the new rate
    assert state.wait_left(sent[10][1], 0.031) is None


def test_a_lone_429_with_nothing_accepted_sets_no_rate() -> None:
    state = LimiterState()
    _, ticket = state.reserve(0, 0.0)
    assert ticket is not None
    state.observe(ticket, fb(429), 0.0)
    assert state.learned.rate is None and state.paused_until == 0.0  # the retry backs off


# --------------------------------------------------------------------------- concurrency


def test_overload_answers_shrink_the_window_to_what_is_in_flight() -> None:
    state = LimiterState()
    informed(state, fb(200))
    sent = grant(state, INITIAL_WINDOW, now=0.01)
    assert state.reserve(0, 0.01) == (pytest.approx(WINDOW_POLL), None)  # the window is full
    for _, ticket in sent[8:]:  # the server admits 8 and refuses the rest
        state.observe(ticket, fb(503, "The engine is currently overloaded"), 0.02)
        state.release(ticket)
    assert state.learned.window == 8 and state.learned.overloads == 8
    assert state.reserve(0, 0.03)[1] is None  # 8 in flight: nobody else goes


def test_successes_grow_the_window_slowly_and_a_retry_does_not_probe_it() -> None:
    state = LimiterState()
    informed(state, fb(200))
    sent = grant(state, 9, now=0.01)
    state.observe(sent[8][1], fb(429, '{"error":"Model is overloaded","error_type":"overloaded"}'), 0.02)
    state.release(sent[8][1])
    assert state.learned.window == 8
    now, granted = 0.1, 0
    in_flight = [t for _, t in sent[:8]]
    while state.learned.window < 9:
        ticket = in_flight.pop(0)
        state.observe(ticket, fb(200), now)
        state.release(ticket)
        granted += 1
        _, fresh = state.reserve(0, now)
        assert fresh is not None
        in_flight.append(fresh)
        now += 0.01
    # the 8 sent before the refusal do not count; then window += 1/(4 * window) per
    # success: about 33 more for one more slot
    assert 8 + 32 <= granted <= 8 + 34
    assert state.reserve(0, now, retry=True)[1] is None  # the ninth slot is not a retry's
    assert state.reserve(0, now)[1] is not None  # a new request probes it


def test_ollama_full_queue_and_tgi_overload_count_as_overload_not_rate() -> None:
    for status, body in ((503, '{"error":"server busy, please try again.  maximum pending requests exceeded"}'),
                         (429, '{"error":"Model is overloaded","error_type":"overloaded"}')):
        state = LimiterState()
        informed(state, fb(200))
        ticket = grant(state, 1, 0.01)[0][1]
        state.observe(ticket, fb(status, body), 0.02)
        assert (state.learned.overloads, state.learned.rejections, state.learned.rate) == (1, 0, None)


# --------------------------------------------------------------------------- pauses


async def test_a_retry_after_beyond_the_cap_raises_for_every_caller_until_it_passed() -> None:
    limiter = RateLimiter(max_pause=2.0)
    first = await limiter.acquire()
    limiter.observe(first, {"retry-after": "30"}, 429)
    limiter.release(first)
    errors = []
    for _ in range(3):
        with pytest.raises(Exception) as info:
            await limiter.acquire()
        errors.append(info.value)
    assert [type(e).__name__ for e in errors] == ["RateLimitError"] * 3
    assert all(29 < e.retry_after <= 30 and not e.retryable for e in errors)  # type: ignore[attr-defined]
    assert isinstance(limiter.backend, LocalBackend)
    limiter.backend.state.learned.paused_until = 0.0  # the pause has passed
    assert isinstance(await limiter.acquire(), Ticket)


def test_a_whole_second_retry_after_of_one_with_a_rate_known_is_one_interval() -> None:
    state = LimiterState()
    informed(state, fb(**PER_MINUTE))
    ticket = grant(state, 1, 1.0)[0][1]
    state.observe(ticket, fb(429, retry_after="1"), 1.0)
    assert state.paused_until - 1.0 == pytest.approx(1 / state.learned.rate)
    state = LimiterState()
    ticket = grant(state, 1, 0.0)[0][1]
    state.observe(ticket, fb(429, retry_after="1"), 0.0)  # no rate known: the full second
    assert state.paused_until == pytest.approx(1.0)


# --------------------------------------------------------------------------- sharing


def test_what_a_server_teaches_is_shared_by_base_url_and_key_hash() -> None:
    a = learned_for("http://h:1/v1", {"Authorization": "Bearer sk-one"})
    b = learned_for("http://h:1/v1/", {"authorization": "Bearer sk-one"})
    c = learned_for("http://h:1/v1", {"Authorization": "Bearer sk-two"})
    d = learned_for("http://h:2/v1", {"Authorization": "Bearer sk-one"})
    assert a is b and a is not c and a is not d
    from llmkit.http import ratelimit

    assert not any("sk-one" in "".join(key) for key in ratelimit._registry.keys())


def test_an_organization_or_project_of_its_own_has_limits_of_its_own() -> None:
    """OpenAI counts limits per organization and project: one key used for two projects
    learns two sets of limits; the same project through two instances shares one."""
    key = {"Authorization": "Bearer sk-org-scope"}
    plain = learned_for("http://h:4/v1", key)
    org_a = learned_for("http://h:4/v1", {**key, "OpenAI-Organization": "org-a"})
    org_b = learned_for("http://h:4/v1", {**key, "OpenAI-Organization": "org-b"})
    project = learned_for("http://h:4/v1", {**key, "OpenAI-Organization": "org-a", "OpenAI-Project": "p1"})
    again = learned_for("http://h:4/v1", {**key, "openai-organization": "org-a", "openai-project": "p1"})
    assert len({id(x) for x in (plain, org_a, org_b, project)}) == 4
    assert again is project
    # other headers (a trace id) do not split what is learned
    assert learned_for("http://h:4/v1", {**key, "X-Trace": "1"}) is plain


def test_configured_limits_stay_per_instance() -> None:
    shared = learned_for("http://h:3/v1", {"Authorization": "Bearer k"})
    one, two = RateLimiter(requests_per_minute=60), RateLimiter(requests_per_minute=6000)
    for limiter in (one, two):
        assert isinstance(limiter.backend, LocalBackend)
        limiter.backend.share(shared)
    s1, s2 = (lim.snapshot() for lim in (one, two))
    assert s1 is not None and s2 is not None
    assert (s1.rate, s2.rate, s1.source, s1.shared) == (1.0, 100.0, "configured", True)


def test_rate_limit_state_says_what_is_believed_and_why() -> None:
    state = LimiterState()
    informed(state, fb(**PER_MINUTE))
    snap = state.snapshot(0.0)
    expected: dict[str, Any] = {"rate": 40.0, "burst": 4.0, "window": None, "source": "headers"}
    assert {k: getattr(snap, k) for k in expected} == pytest.approx(expected)
    state.observe(grant(state, 1, 1.0)[0][1], fb(429, retry_after_ms="500"), 1.0)
    snap = state.snapshot(1.1)
    assert snap.source == "429" and snap.rate == pytest.approx(34.0)
    assert snap.paused_for == pytest.approx(0.4) and not math.isinf(snap.burst)
    assert snap.paused_until is not None and snap.pause_length == 0.5
