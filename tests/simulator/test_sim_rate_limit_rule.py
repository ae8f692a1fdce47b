"""The sliding-window rule itself, with a fake clock: exact edges, Retry-After, extension."""
import math

import pytest

from mde_simulator.rate_limit import SlidingWindowLimiter
from mde_simulator.stats import max_in_window


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_call_exactly_one_window_after_the_first_is_admitted():
    clock = FakeClock()
    limiter = SlidingWindowLimiter([[3, 1]], clock=clock)
    for offset in (0.0, 0.1, 0.2):
        clock.now = 1000.0 + offset
        assert limiter.admit("c", "t", "ips").admitted
    clock.now = 1000.9999999
    refused = limiter.admit("c", "t", "ips")
    assert not refused.admitted
    # (t - W, t] is half open: the call at 1000.0 no longer counts at exactly 1001.0,
    # but the refused call at 1000.9999999 does, so the next admission waits for 1001.1.
    clock.now = 1001.0
    assert not limiter.admit("c", "t", "ips").admitted


def test_window_slides_exactly_at_its_edge_without_extra_calls():
    clock = FakeClock()
    limiter = SlidingWindowLimiter([[3, 1]], clock=clock)
    for offset in (0.0, 0.1, 0.2):
        clock.now = 1000.0 + offset
        assert limiter.admit("c", "t", "ips").admitted
    clock.now = 1001.0          # the first call leaves the window at exactly t + W
    assert limiter.admit("c", "t", "ips").admitted
    clock.now = 1001.0999       # 0.1, 0.2 and 1.0 are still inside
    assert not limiter.admit("c", "t", "ips").admitted


def test_retry_after_is_the_ceiling_of_the_exact_wait():
    clock = FakeClock()
    limiter = SlidingWindowLimiter([[2, 10]], clock=clock)
    clock.now = 1000.0
    limiter.admit("c", "t", "list")
    clock.now = 1003.5
    limiter.admit("c", "t", "list")
    clock.now = 1004.0
    refused = limiter.admit("c", "t", "list")
    # Log: 1000, 1003.5, 1004 (refused, counted). Admission needs < 2 calls in the
    # window, so 1003.5 must leave: t >= 1013.5, a wait of 9.5 s -> Retry-After 10.
    assert not refused.admitted
    assert refused.retry_after == 10
    assert refused.window == (2, 10.0)
    clock.now = 1004.0 + 9.5
    assert limiter.admit("c", "t", "list").admitted


def test_calls_during_a_throttle_extend_it():
    clock = FakeClock()
    limiter = SlidingWindowLimiter([[2, 1]], clock=clock)
    clock.now = 1000.0
    assert limiter.admit("c", "t", "ips").admitted
    assert limiter.admit("c", "t", "ips").admitted
    clock.now = 1000.5
    first = limiter.admit("c", "t", "ips")
    assert not first.admitted and first.retry_after == 1   # exact wait 0.5 s
    # A caller that does not wait keeps the throttle alive: refused calls count too.
    clock.now = 1000.9
    assert not limiter.admit("c", "t", "ips").admitted
    clock.now = 1001.0   # both admitted calls left; the refused 1000.5 and 1000.9 remain
    assert not limiter.admit("c", "t", "ips").admitted
    clock.now = 1001.5   # 1000.9 and the refused 1001.0 remain
    assert not limiter.admit("c", "t", "ips").admitted
    clock.now = 1002.0   # only 1001.5 remains in (1001.0, 1002.0]
    assert limiter.admit("c", "t", "ips").admitted


def test_longest_wait_over_all_windows_names_the_window():
    clock = FakeClock()
    limiter = SlidingWindowLimiter([[3, 1], [4, 60]], clock=clock)
    for step in range(4):
        clock.now = 1000.0 + step * 2
        assert limiter.admit("c", "t", "ips").admitted
    clock.now = 1010.0
    refused = limiter.admit("c", "t", "ips")
    assert not refused.admitted and refused.window == (4, 60.0)
    assert refused.retry_after == math.ceil(1002.0 + 60 - 1010.0)


def test_budgets_are_per_client_and_tenant_and_optionally_per_endpoint():
    clock = FakeClock()
    shared = SlidingWindowLimiter([[1, 10]], scope="shared", clock=clock)
    assert shared.admit("a", "t1", "list").admitted
    assert not shared.admit("a", "t1", "ips").admitted      # same budget
    assert shared.admit("a", "t2", "ips").admitted          # other tenant
    assert shared.admit("b", "t1", "ips").admitted          # other client
    split = SlidingWindowLimiter([[1, 10]], scope="per-endpoint", clock=clock)
    assert split.admit("a", "t1", "list").admitted
    assert split.admit("a", "t1", "ips").admitted
    assert not split.admit("a", "t1", "ips").admitted


@pytest.mark.parametrize("stamps, seconds, expected", [
    ([], 1, 0),
    ([0.0, 0.5, 1.0], 1, 2),          # (0, 1] holds 0.5 and 1.0, not 0.0
    ([0.0, 0.5, 0.999], 1, 3),
    ([0, 1, 2, 3, 3, 3, 10], 2, 4),   # (1, 3] holds 2, 3, 3, 3
])
def test_max_in_window_uses_half_open_windows(stamps, seconds, expected):
    assert max_in_window(stamps, seconds) == expected
