"""bench/late_alerts.py's freshness figures: minutes from lastUpdateTime (and, for late
alerts, from when they became listable) to the commit that landed each version."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bench.late_alerts import format_freshness, freshness, percentiles

H = datetime(2026, 2, 2, 5, tzinfo=timezone.utc)


def test_percentiles_are_nearest_rank():
    assert percentiles([]) is None
    assert percentiles([7.0]) == (7.0, 7.0, 7.0)
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, any order
    assert percentiles(values) == (50.0, 95.0, 100.0)


def test_freshness_splits_on_time_and_late_and_measures_late_ones_from_listable_too():
    run = H + timedelta(hours=1, minutes=5)  # the hour's own run commits here
    lookback = run + timedelta(hours=1)  # the next run's look-back
    landed = {
        ("on-1", H): run,  # 65 min
        ("on-2", H + timedelta(minutes=50)): run,  # 15 min
        ("late-1", H + timedelta(minutes=40)): lookback,  # 85 min; listable at +45: 40 min
    }
    figures = freshness(landed, {"late-1"}, late_minutes=45)
    assert figures["on_time"] == (2, (15.0, 65.0, 65.0))
    assert figures["late"] == (1, (85.0, 85.0, 85.0))
    assert figures["late_after_listable"] == (1, (40.0, 40.0, 40.0))
    assert "p50 15.0 min, p95 65.0 min, max 65.0 min" in format_freshness("on-time", figures["on_time"])
    assert freshness({}, set(), 45)["late"] == (0, None)
    assert "no versions" in format_freshness("late", (0, None))
