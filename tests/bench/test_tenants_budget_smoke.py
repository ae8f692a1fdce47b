"""bench/tenants_budget.py: its arithmetic, and a tiny run (2 tenants, 2 host processes, one
redis-server ledger, a scripted 429 for one tenant) that prints its figures. Figures are not
held to the issue's targets here: tiny windows on a loaded box say nothing about them."""

from __future__ import annotations

import json

import pytest

from bench import tenants_budget
from bench.tenants_budget import binding_window, longest_pause, scenarios, window_use


def test_use_is_the_mean_share_of_the_window_filled_over_the_span():
    steady = [k * 0.5 for k in range(20)]  # 2 calls per second, for ten seconds
    assert window_use(steady, 2, 1.0, 1.0, 9.0) == pytest.approx(1.0)
    assert window_use(steady[::2], 2, 1.0, 1.0, 9.0) == pytest.approx(0.5)
    burst = [0.0] * 10  # a window's worth at once, then nothing
    assert window_use(burst, 10, 4.0, 0.0, 4.0) == pytest.approx(1.0)
    assert window_use(burst, 10, 4.0, 4.0, 8.0) == 0.0
    assert window_use(burst, 10, 4.0, 2.0, 6.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        window_use(steady, 2, 1.0, 3.0, 3.0)


def test_the_binding_window_is_the_slowest_and_a_pause_is_the_longest_gap_from_its_start():
    assert binding_window([[100, 3], [1500, 180]]) == (1500, 180.0)
    assert binding_window([[10, 1], [15, 4]]) == (15, 4.0)
    assert longest_pause([0.0, 1.0, 1.1, 4.0, 4.2], 1.0, 2.0) == pytest.approx(2.9)
    assert longest_pause([0.0, 1.0], 2.0, 3.0) == 0.0


def test_scenarios_compare_the_shared_ledger_with_the_static_share():
    chosen = scenarios(["A", "B", "C"], hosts=2)
    assert [(s.name, s.ledger, s.share, s.busy_hosts) for s in chosen] == [
        ("A", "redis", 1.0, (0, 1)), ("B", "redis", 1.0, (0,)), ("B", "sqlite", 0.5, (0,)), ("C", "redis", 1.0, (0, 1))]
    assert chosen[-1].throttled_tenant == 0
    with pytest.raises(ValueError, match="unknown"):
        scenarios(["D"], hosts=2)


@pytest.mark.slow
def test_a_tiny_run_prints_each_tenants_figures(capsys):
    assert tenants_budget.main([
        "--scenarios", "C", "--tenants", "2", "--hosts", "2", "--callers", "1", "--rate-limits", "[[5,1],[15,4]]",
        "--seconds", "7", "--margin", "0.25", "--alerts", "30", "--batch-size", "5", "--retry-after", "1", "--json",
    ]) == 0  # fmt: skip
    out = capsys.readouterr().out
    text, figures = out.split("\n[", 1)
    for head in ("calls by host", "429 seen", "max in 1s", "max in 4s", "use of 4s", "wall/floor", "wrong"):
        assert head in text
    assert "C: t1 got a scripted 429 (Retry-After 1s)" in text

    (result,) = json.loads("[" + figures)
    rows = {row["tenant"]: row for row in result["rows"]}
    assert sorted(rows) == ["t1", "t2"]
    for row in rows.values():
        assert len(row["host_calls"]) == 2 and all(calls > 0 for calls in row["host_calls"])  # both hosts called
        assert row["fetched"] > 0 and row["wrong"] == 0
        assert 0 < row["use"] <= 1.0  # admitted calls never overfill a window
        assert [(w["limit"], w["seconds"]) for w in row["windows"]] == [(5, 1), (15, 4)]
    # The cue reached tenant 1's callers only: a 429 they saw, and the pause that followed.
    assert rows["t1"]["client_throttled"] >= 1 and rows["t1"]["throttle"]["pause"] is not None
    assert "throttle" not in rows["t2"]
