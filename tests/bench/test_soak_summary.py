"""bench/soak.py's arguments and figures, from made-up calls and runs (no Airflow, no simulator)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from bench.soak import format_summary, json_line, parser, summarize

T0 = datetime(2026, 12, 3, 6, 40, tzinfo=timezone.utc)


def test_defaults_are_the_soak_the_issue_asks_for():
    args = parser().parse_args([])
    assert args.minutes == 80 and args.workdir is None
    assert parser().parse_args(["--minutes", "5", "--workdir", "/tmp/x"]).minutes == 5


def test_fill_counts_windows_after_the_first_and_lag_skips_the_hour_before_the_soak():
    start = T0.timestamp()
    # 1,500 calls in the first 15 minutes, then one each time an old one leaves the window.
    admitted = [start + 0.6 * i for i in range(1500)] + [start + 3600 + 0.6 * i for i in range(1500)]
    hour_before = T0.replace(minute=0)  # ended before the soak: shown apart
    hour_in = hour_before + timedelta(hours=1)
    runs = [
        {"run_id": "a", "interval_end": hour_before, "state": "success", "publish_end": T0 + timedelta(minutes=3)},
        {"run_id": "b", "interval_end": hour_in, "state": "success", "publish_end": hour_in + timedelta(seconds=420)},
        {"run_id": "c", "interval_end": hour_in + timedelta(hours=1), "state": "running", "publish_end": None},
    ]
    s = summarize(admitted, start, start + 5400, runs, max_admitted=(100, 1500), throttled=0)
    assert s["fill_windows"] == 1800 and s["fill_min"] == 1.0 and s["fill_met"]
    assert s["within_limits"] and s["throttled"] == 0
    assert (s["scheduled_hours"], s["scheduled_committed"]) == (2, 1)
    assert s["lag_p50_s"] == 420 and s["lag_max_s"] == 420
    assert [r["run_id"] for r in s["runs_before"]] == ["a"]
    assert "not committed after 600 s" in format_summary(s) and "lag 420 s" in format_summary(s)
    assert json.loads(json_line(s, {"started": "x"}))["lags_s"] == [420.0, None]


def test_an_idle_budget_misses_the_fill_target():
    start = T0.timestamp()
    admitted = [start + 0.6 * i for i in range(1500)]  # nothing after the first burst
    s = summarize(admitted, start, start + 4000, [], max_admitted=(100, 1500), throttled=2)
    assert s["fill_min"] < 0.97 and not s["fill_met"]
    assert s["lag_p50_s"] != s["lag_p50_s"]  # nan: no scheduled hour
