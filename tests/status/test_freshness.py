"""The freshness deadline: DAG mde_alert_ips carries it, and its callback logs the late hour."""

from __future__ import annotations

import asyncio
import importlib
import logging
from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineReference

from mde_pipeline.airflow.freshness import freshness_deadline, hour_not_committed


def context(run_type: str) -> dict:
    return {
        "dag_run": {"dag_run_id": f"{run_type}__2026-03-01T05:00:00+00:00", "run_type": run_type, "state": "running",
                    "data_interval_start": "2026-03-01T05:00:00Z", "data_interval_end": "2026-03-01T06:00:00Z"},
        "deadline": {"id": "d1", "deadline_time": "2026-03-01T07:00:00Z"},
    }


def test_the_dag_carries_the_freshness_deadline():
    # The DAG file names each of its DAGs after its id (one without Variable mde_tenants).
    dag = importlib.import_module("mde_alert_ips").mde_alert_ips
    [alert] = dag.deadline
    assert alert == freshness_deadline()
    assert isinstance(alert.reference, type(DeadlineReference.DAGRUN_QUEUED_AT))
    assert alert.interval == timedelta(minutes=60)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "mde_pipeline.airflow.freshness.hour_not_committed"


def test_a_late_scheduled_hour_is_a_warning_a_backfill_hour_is_not(caplog):
    caplog.set_level(logging.DEBUG, logger="mde_pipeline.freshness")
    asyncio.run(hour_not_committed(context=context("scheduled")))
    asyncio.run(hour_not_committed(context=context("backfill")))
    scheduled, backfill = caplog.records
    assert scheduled.levelno == logging.WARNING and backfill.levelno == logging.DEBUG
    assert "hour 2026-03-01T05:00:00Z -> 2026-03-01T06:00:00Z" in scheduled.getMessage()
    assert "deadline 2026-03-01T07:00:00Z" in scheduled.getMessage()


def test_zero_minutes_means_no_deadline(monkeypatch):
    from mde_pipeline.airflow import freshness

    monkeypatch.setattr(freshness, "DEADLINE", timedelta(0))
    assert freshness.freshness_deadline() is None
