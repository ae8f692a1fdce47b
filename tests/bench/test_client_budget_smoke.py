"""bench/client_budget.py on a small run: the floors' arithmetic, and two caller processes
sharing one ledger against the simulator without a 429 or a window overrun."""

from __future__ import annotations

import pytest

from bench.client_budget import (
    Configuration,
    format_table,
    rate_floor,
    run_configuration,
    scaled_rate_limits,
    schedule_floor,
)


def test_scaled_windows_keep_the_calls_and_shorten_the_seconds():
    assert scaled_rate_limits(20) == [[100, 3], [1500, 180]]
    assert scaled_rate_limits(10) == [[100, 6], [1500, 360]]
    assert scaled_rate_limits(1) == [[100, 60], [1500, 3600]]
    with pytest.raises(ValueError):
        scaled_rate_limits(0)


def test_floors_spend_a_window_at_once_then_wait_for_the_oldest_call():
    minute = [[100, 3]]
    assert schedule_floor(100, minute) == 0  # a full window's worth goes at once
    assert schedule_floor(101, minute) == 3  # the 101st waits for the 1st to leave
    assert schedule_floor(101, minute, margin=1.0) == 4
    assert schedule_floor(0, minute) == 0
    both = [[100, 3], [1500, 180]]
    # 1,500 calls in 15 bursts (t = 0..42 s), then call k waits for call k-1500: 15 s + 180 s.
    assert schedule_floor(2001, both) == 195
    assert schedule_floor(2001, both, margin=1.0) == 201
    assert rate_floor(2001, both) == pytest.approx(2001 * 180 / 1500)


@pytest.mark.slow
def test_two_callers_sharing_the_ledger_stay_inside_every_window(tmp_path):
    # 21 calls (1 listing + 20 alerts) against 15 per 4 s: the long window binds.
    windows = [[5, 1], [15, 4]]
    row = run_configuration(
        Configuration(callers=2, margin=0.25), alerts=20, rate_limits=windows, workdir=tmp_path, batch_size=4
    )

    assert row["alerts"] == 20 and row["batches"] == 5
    assert row["wrong_or_lost"] == 0
    assert row["calls"] == row["sim_calls"] == 21  # one call per alert + the listing, no retry
    assert row["throttled"] == row["client_throttled"] == 0
    assert all(calls > 0 for calls in row["caller_calls"]) and sum(row["caller_calls"]) == 20
    assert [(w["limit"], w["seconds"]) for w in row["windows"]] == [(5, 1), (15, 4)]
    for window in row["windows"]:
        assert window["max_calls"] <= window["limit"]
        assert window["share"] == window["max_admitted"] / window["limit"]

    table = format_table([row])
    assert "max in 1s" in table and "max in 4s" in table
    assert f"{row['windows'][1]['max_admitted']}/15" in table
