"""The settle delay (issue 11): list [H, H+1h) no earlier than H+1h+settle, waiting by
deferral (triggerer: no worker slot) outside pool mde_api; at once when the moment passed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import TaskDeferred

from mde_pipeline.airflow.settings import MDE_POOL
from mde_pipeline.airflow.settle import MdeSettleOperator, settle_moment


def test_a_future_moment_defers_to_the_triggerer():
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    op = MdeSettleOperator(task_id="settle", data_interval_end=end.isoformat(), settle=timedelta(minutes=5))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    assert isinstance(deferred.value.trigger, DateTimeTrigger)
    assert deferred.value.trigger.moment == end + timedelta(minutes=5)
    assert op.pool != MDE_POOL
    assert op.execute_complete({}) is None


def test_a_past_moment_succeeds_without_deferring():
    op = MdeSettleOperator(task_id="settle", data_interval_end="2024-01-01T10:00:00+00:00", settle=timedelta(minutes=5))
    assert op.execute({}) is None
    assert settle_moment("2024-01-01T10:00:00Z", timedelta(0)) == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
