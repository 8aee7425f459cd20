"""What answers say about rate limits (llmkit/http/ratelimit_signals.py, retry.py): reset
formats (durations, unix timestamps in s and ms), hostile values ignored, Retry-After's
precision, which answers are rate limits and which are overload."""

from __future__ import annotations

import time

import pytest

from llmkit.http.ratelimit_signals import Feedback, classify, parse_reset
from llmkit.http.retry import MAX_WAIT, parse_retry_after, retry_after_detail
from tests.servers.ratelimit_server import OLLAMA_BUSY, TGI_OVERLOADED, reset_text


def test_reset_as_a_unix_timestamp_in_ms_or_s_is_the_time_left() -> None:
    wall = 1_764_657_600.0
    assert parse_reset(str(int((wall + 2.5) * 1000)), wall=wall) == pytest.approx(2.5)
    assert parse_reset(str(int(wall + 30)), wall=wall) == pytest.approx(30)
    assert parse_reset(str(int((wall - 5) * 1000)), wall=wall) == 0.0  # already past
    # the scenario server's own timestamps read back as what they said
    for fmt in ("unix_ms", "unix_s", "duration"):
        left = parse_reset(reset_text(0.75 if fmt != "unix_s" else 3.0, fmt))
        assert left is not None and 0 <= left <= (0.76 if fmt != "unix_s" else 4.0)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "-0.5s", "1e300", "9" * 400, "5x", ""])
def test_hostile_reset_values_are_ignored(value: str) -> None:
    assert parse_reset(value) is None


def test_absurd_waits_are_ignored_not_slept_on() -> None:
    assert parse_reset(str(MAX_WAIT + 1)) is None  # a week and a second: garbage
    assert parse_retry_after({"retry-after": str(10**9)}) is None
    assert parse_retry_after({"retry-after-ms": "1e15", "retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "3600"}) == 3600.0  # long, but believable


def test_retry_after_precision() -> None:
    assert retry_after_detail({"retry-after-ms": "25", "retry-after": "1"}) == (0.025, True)
    assert retry_after_detail({"retry-after": "1"}) == (1.0, False)  # whole seconds
    assert retry_after_detail({"retry-after": "0.4"}) == (0.4, True)
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    found = retry_after_detail({"retry-after": when})
    assert found is not None and found[1] is False and 28 <= found[0] <= 31
    assert retry_after_detail({"retry-after": "inf"}) is None


def test_which_answers_are_rate_limits_and_which_overload() -> None:
    assert classify(200) == "ok"
    assert classify(429, b'{"error":{"code":"rate_limit_exceeded"}}') == "rate"
    assert classify(429, None) == "rate"  # a bare 429
    assert classify(429, f'{{"error":"{TGI_OVERLOADED}","error_type":"overloaded"}}'.encode()) == "overload"
    assert classify(503, f'{{"error":"{OLLAMA_BUSY}"}}') == "overload"
    assert classify(503, None) == "overload"
    assert classify(529, b"overloaded_error") == "overload"
    assert classify(429, b'{"error":{"code":"insufficient_quota"}}') == "other"  # waiting won't help
    assert classify(500, b"boom") == "other"
    assert classify(None) == "other"


def test_feedback_carries_kind_and_precision_and_drops_hostile_numbers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "inf",
        "x-ratelimit-remaining-requests": "nan",
        "x-ratelimit-reset-requests": "inf",
        "x-ratelimit-limit-tokens": "-5",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "inf",
        "retry-after": "1",
    }
    fb = Feedback.from_headers(headers, 429)
    assert fb.kind == "rate" and fb.retry_after == 1.0 and fb.retry_after_precise is False
    assert fb.requests is None  # no usable "remaining": nothing said about requests
    assert fb.tokens is not None and (fb.tokens.limit, fb.tokens.remaining, fb.tokens.reset) == (None, 100, None)
    assert Feedback.from_headers(headers, 200).retry_after is None  # only refusals pause
    assert Feedback.from_headers({"retry-after": "2"}, 503, OLLAMA_BUSY).kind == "overload"
