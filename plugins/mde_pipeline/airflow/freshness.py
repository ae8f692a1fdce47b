"""Freshness alert of DAG mde_alert_ips: an hour not committed by its deadline.

Airflow 3's Deadline Alerts: every run of the DAG gets a deadline
``queued_at + MDE_FRESHNESS_DEADLINE_MINUTES`` (default 60). A scheduled run is queued
as soon as its hour ends, so the documented promise is: **an hour is committed to the
lake within 60 minutes after its end**, or :func:`hour_not_committed` runs (in the
triggerer: it is an ``AsyncCallback``). A run that succeeds before its deadline cancels
it (Airflow prunes the deadline).

The callback logs one WARNING line (logger ``mde_pipeline.freshness``) naming the hour,
the DAG (so the tenant), the run and the deadline. Backfill runs get deadlines too (Airflow creates them queued,
all at once), so their misses say nothing about freshness: the callback logs them at
DEBUG only. To notify instead (docs/OPERATORS.md, "Freshness alerts"), give the DAG a
``DeadlineAlert`` whose callback is a notifier, e.g.
``AsyncCallback(SlackWebhookNotifier, kwargs={"slack_webhook_conn_id": ..., "text": ...})``.
``MDE_FRESHNESS_DEADLINE_MINUTES=0`` leaves the DAG without a deadline (see
:func:`freshness_deadline`). ``airflow dags test`` works with the alert on.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from mde_pipeline.airflow.dag_test_deadlines import allow_dag_test
from mde_pipeline.airflow.settings import FRESHNESS_DEADLINE as DEADLINE

log = logging.getLogger("mde_pipeline.freshness")


def describe_miss(context: dict[str, Any] | None) -> tuple[bool, str]:
    """(is it about freshness, the log line) for the context a deadline callback gets."""
    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    message = (
        f"MDE lake not fresh: hour {run.get('data_interval_start')} -> {run.get('data_interval_end')} "
        f"(DAG {run.get('dag_id')}, run {run.get('dag_run_id') or run.get('run_id')}, {run.get('run_type')}, "
        f"state {run.get('state')}) "
        f"was not committed by its deadline {deadline.get('deadline_time')}"
    )
    return run.get("run_type") != "backfill", message


async def hour_not_committed(context: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """The deadline callback: one WARNING per scheduled/manual hour that is late."""
    about_freshness, message = describe_miss(context)
    log.log(logging.WARNING if about_freshness else logging.DEBUG, message)


def freshness_deadline() -> DeadlineAlert | None:
    """The DAG's deadline alert, or None when ``MDE_FRESHNESS_DEADLINE_MINUTES`` is 0.

    Also lets ``airflow dags test`` finish a run of the DAG that has it (Airflow 3.3.2
    fails the end of such a run: mde_pipeline.airflow.dag_test_deadlines). A ``dags test``
    run gets no deadline of its own: Airflow skips ``DAGRUN_QUEUED_AT`` for a run never
    queued.
    """
    if DEADLINE.total_seconds() <= 0:
        return None
    allow_dag_test()
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=DEADLINE,
        callback=AsyncCallback(hour_not_committed),
        name="mde_hour_committed",
    )
