"""The freshness alert's line (mde_pipeline.airflow.freshness.describe_miss); its firing on
the real scheduler: tests/scheduler/test_freshness_deadline.py."""

from __future__ import annotations

from mde_pipeline.airflow.freshness import describe_miss


def context(run_type: str) -> dict:
    """What Airflow 3.3.2's scheduler hands a deadline callback (Deadline.handle_miss)."""
    return {
        "dag_run": {
            "dag_id": "mde_alert_ips_east",
            "dag_run_id": f"{run_type}__2026-03-01T06:00:00+00:00",
            "run_type": run_type,
            "state": "running",
            "data_interval_start": "2026-03-01T05:00:00Z",
            "data_interval_end": "2026-03-01T06:00:00Z",
        },
        "deadline": {"id": "0192", "deadline_time": "2026-03-01T07:00:00Z"},
    }


def test_the_line_names_the_hour_the_dag_the_run_and_the_deadline():
    about_freshness, line = describe_miss(context("scheduled"))
    assert about_freshness
    assert line == (
        "MDE lake not fresh: hour 2026-03-01T05:00:00Z -> 2026-03-01T06:00:00Z (DAG mde_alert_ips_east, "
        "run scheduled__2026-03-01T06:00:00+00:00, scheduled, state running) was not committed by its "
        "deadline 2026-03-01T07:00:00Z"
    )


def test_a_backfill_miss_is_not_about_freshness():
    assert describe_miss(context("backfill"))[0] is False
    assert describe_miss(None)[0] is True  # no context: still said, never swallowed
