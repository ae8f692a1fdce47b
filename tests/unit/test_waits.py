"""Every wait is bounded (issue 12): Retry-After read safely, implausible values ignored and
never written to the ledger, a floor and an exponential backoff for 429s with a count
bound, 5xx waits capped. Scripted transport + fake clock: exact calls and sleeps."""

from __future__ import annotations

import logging
from email.utils import formatdate

import pytest

from mde_pipeline.api.errors import MdeThrottledError
from mde_pipeline.api.policies import MAX_THROTTLE_RETRIES
from mde_pipeline.api.waits import RetryAfter, read_retry_after, throttle_wait
from tests.support.api_fakes import FakeClock, InMemoryLedger

ALERT_ID = "da637984756812345678_-1234567890"
OK = (200, {"Content-Type": "application/json"}, {"value": [{"id": "10.0.0.1"}]})
BODY = b'{"error": {"code": "429", "message": "API calls quota exceeded!"}}'
NOW = 1_700_000_000.0
LONGEST = 3660.0  # default windows: 3,600 s + 60 s slack
MARGIN = 0.05  # the unit connection's rate_limit_margin_seconds (conftest mde_extra)


def throttled(value: str | None):
    return (429, {} if value is None else {"Retry-After": value}, BODY)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("3660", 3660.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),  # a date in the past: retry now
    ],
)
def test_usable_retry_after_values(value, seconds):
    assert read_retry_after({"Retry-After": value}, now=NOW, longest_seconds=LONGEST).seconds == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value, problem",
    [
        ("999999999", "longer than"),
        ("3661", "longer than"),
        (formatdate(NOW + 7200, usegmt=True), "longer than"),
        ("-5", "negative"),
        ("inf", "not finite"),
        ("NaN", "not finite"),
        ("soon", "neither"),
        ("Wed, 32 Foo 2026 99:99:99 GMT", "neither"),  # azure-core raises a bare ValueError here
        ("1e400", "neither"),
        ("1_000", "neither"),
    ],
)
def test_implausible_retry_after_values_are_refused_not_raised(value, problem):
    retry_after = read_retry_after({"Retry-After": value}, now=NOW, longest_seconds=LONGEST)
    assert retry_after.seconds is None and retry_after.implausible
    assert problem in retry_after.problem


def test_a_missing_retry_after_is_not_implausible():
    retry_after = read_retry_after({}, now=NOW, longest_seconds=LONGEST)
    assert retry_after == RetryAfter(None) and not retry_after.implausible


def test_throttle_wait_is_the_retry_after_but_at_least_the_doubling_backoff():
    usable, missing = RetryAfter(30.0, "30"), RetryAfter(None)
    assert [throttle_wait(missing, n, first=2.0, cap=60.0) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert [throttle_wait(usable, n, first=2.0, cap=60.0) for n in (1, 5, 6)] == [30, 32, 60]
    assert throttle_wait(RetryAfter(0.0, "0"), 1, first=2.0, cap=60.0) == 2.0


# ------------------------------------------------------------------ 429 through the client


def test_an_absurd_retry_after_backs_off_briefly_and_never_reaches_the_ledger(mde_scripted, caplog):
    ledger, clock = InMemoryLedger(), FakeClock(start=NOW)
    api = mde_scripted(ledger=ledger, clock=clock)
    api.script(throttled("999999999"), OK)
    assert api.client.get_alert_ips(ALERT_ID) == ["10.0.0.1"]
    assert len(api.urls) == 2
    assert clock.sleeps == [pytest.approx(2.0 + MARGIN)]  # the first backoff, not 31 years
    assert ledger.blocked_until(api.client.config.budget_key) == pytest.approx(NOW + 2.0 + MARGIN)
    assert "implausible Retry-After '999999999'" in caplog.text


@pytest.mark.parametrize(
    "value", ["soon", "Wed, 32 Foo 2026 99:99:99 GMT", "-5", "inf", "nan", "999999999", "", None]
)
def test_garbage_negative_infinite_or_missing_retry_after_is_the_backoff(mde_scripted, value):
    api = mde_scripted()
    api.script(throttled(value), throttled(value), OK)
    assert api.client.get_alert_ips(ALERT_ID) == ["10.0.0.1"]
    assert len(api.urls) == 3
    assert api.clock.sleeps == [pytest.approx(2.0 + MARGIN), pytest.approx(4.0 + MARGIN)]


def test_an_implausible_retry_after_is_logged_once_per_client(mde_scripted, caplog):
    caplog.set_level(logging.WARNING, logger="mde_pipeline.api.waits")
    first, second = mde_scripted(), mde_scripted()
    first.script(throttled("soon"), OK, throttled("soon"), OK)
    second.script(throttled("-1"), OK)
    first.client.get_alert_ips(ALERT_ID)
    first.client.get_alert_ips(ALERT_ID)
    second.client.get_alert_ips(ALERT_ID)
    lines = [r.getMessage() for r in caplog.records if r.name == "mde_pipeline.api.waits"]
    assert len(lines) == 2 and "'soon'" in lines[0] and "'-1'" in lines[1]


@pytest.mark.parametrize("value", ["0", "0.01", None])
def test_429_forever_costs_at_most_seven_calls_backing_off_exponentially(mde_scripted, value):
    # Bound: 1 + MAX_THROTTLE_RETRIES = 7 calls per API call, 2+4+8+16+32+60 = 122 s of waits.
    api = mde_scripted()
    api.script(*[throttled(value)] * 20)
    with pytest.raises(MdeThrottledError):
        api.client.get_alert_ips(ALERT_ID)
    assert MAX_THROTTLE_RETRIES == 6
    assert len(api.urls) == 7
    assert api.clock.sleeps == pytest.approx([w + MARGIN for w in (2, 4, 8, 16, 32, 60)])
    assert api.client.stats.snapshot().throttled == 7


def test_an_http_date_retry_after_is_honoured_on_the_clock(mde_scripted):
    clock = FakeClock(start=NOW)
    api = mde_scripted(clock=clock)
    api.script(throttled(formatdate(NOW + 30, usegmt=True)), OK)
    api.client.get_alert_ips(ALERT_ID)
    assert clock.sleeps == [pytest.approx(30.0 + MARGIN, abs=1.0)]  # HTTP-dates have whole seconds


def test_the_plausible_limit_follows_the_configured_windows(mde_scripted):
    # Windows of 10 s: a Retry-After of 100 s is implausible (> 10 + 60), 65 s is not.
    api = mde_scripted(rate_limits=[[5, 10]])
    api.script(throttled("100"), throttled("65"), OK)
    api.client.get_alert_ips(ALERT_ID)
    assert api.clock.sleeps == [pytest.approx(2.0 + MARGIN), pytest.approx(65.0 + MARGIN)]


def test_an_absurd_retry_after_with_an_error_reports_no_retry_after(mde_scripted):
    api = mde_scripted(max_throttle_wait_seconds=1)
    api.script(throttled("999999999"))
    with pytest.raises(MdeThrottledError) as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.retry_after is None
    assert len(api.urls) == 1


# ------------------------------------------------------------------ 5xx


@pytest.mark.parametrize("backoff_max, expected", [(None, 60.0), (10, 10.0)])
def test_a_503_retry_after_is_capped_at_retry_backoff_max(mde_scripted, backoff_max, expected):
    extra = {} if backoff_max is None else {"retry_backoff_max": backoff_max}
    api = mde_scripted(**extra)
    # 3,000 s is plausible for a 429 (within the hourly window) but a 503 waits at most the cap.
    api.script((503, {"Retry-After": "3000"}, b""), (503, {"Retry-After": "3000"}, b""), OK)
    api.client.get_alert_ips(ALERT_ID)
    assert api.clock.sleeps == [expected, expected]
    assert len(api.urls) == 3


@pytest.mark.parametrize("value", ["Wed, 32 Foo 2026 99:99:99 GMT", "soon", "-3", "999999999"])
def test_a_503_with_an_implausible_retry_after_uses_the_backoff(mde_scripted, value):
    api = mde_scripted(retry_backoff_factor=0.5)
    api.script((503, {"Retry-After": value}, b""), (503, {"Retry-After": value}, b""), OK)
    assert api.client.get_alert_ips(ALERT_ID) == ["10.0.0.1"]
    assert api.clock.sleeps == [pytest.approx(1.0)]  # azure-core: none before the 1st retry, then 0.5 * 2
