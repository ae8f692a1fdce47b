"""MDE alert IPs, hourly: list the hour's alerts, fetch each alert's IPs, publish to the lake.

Flow only; the logic lives in plugins/mde_pipeline/airflow and below (see docs/DESIGN.md).

- A real one-hour data interval (``CronDataIntervalTimetable``), so run N loads alerts
  whose ``lastUpdateTime`` lies in ``[data_interval_start, data_interval_end)``.
- Every API call runs in pool ``mde_api`` (listing too: the budget is shared).
- Backfill tasks yield to scheduled ones (``ScheduledBeforeBackfill``, by import path).
- ``settle`` defers until ``data_interval_end + settle`` (MDE_ALERT_IPS_SETTLE_SECONDS).
- ``list_alerts`` also looks back (MDE_ALERT_IPS_LOOKBACK_HOURS) for late versions of
  committed hours; ``fetch_ips`` reuses the lake's fetch cache (param ``refetch``).
- ``publish`` commits one file per table for the interval, atomically; reruns replace its
  rows and keep versions the lake held that the new listing lacks (``refetch``: replace
  whole); late versions are added to their own hours.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

from mde_pipeline.airflow import settings
from mde_pipeline.airflow.assets import LAKE_ASSETS
from mde_pipeline.airflow.freshness import freshness_deadline
from mde_pipeline.airflow.lake_tasks import publish_interval
from mde_pipeline.airflow.operators import MdeFetchAlertIpsOperator, MdeListAlertsOperator
from mde_pipeline.airflow.priority import PRIORITY_WEIGHT_RULE
from mde_pipeline.airflow.settle import MdeSettleOperator

with DAG(
    dag_id="mde_alert_ips",
    description="IP addresses of every Microsoft Defender for Endpoint alert, into the lake",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    # Far enough back that `airflow backfill create` covers the 180-day retention window.
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=settings.MAX_ACTIVE_RUNS,
    default_args={
        "retries": settings.TASK_RETRIES,
        "retry_delay": settings.RETRY_DELAY,
        "retry_exponential_backoff": True,
        "execution_timeout": settings.EXECUTION_TIMEOUT,
        "weight_rule": PRIORITY_WEIGHT_RULE,
    },
    tags=["mde", "security"],
    params={
        "batch_size": Param(settings.DEFAULT_BATCH_SIZE, type="integer", minimum=1),
        # Fresh API calls for every alert version, even when the fetch cache holds it, and
        # the hour replaced whole (a rerun that must replace data).
        "refetch": Param(False, type="boolean"),
    },
    # An hour not committed within MDE_FRESHNESS_DEADLINE_MINUTES (60) of its end: a log line.
    deadline=freshness_deadline(),
) as dag:
    # Wait (deferred: no worker slot, not in pool mde_api) until the hour has settled.
    settle = MdeSettleOperator(task_id="settle")

    batches = MdeListAlertsOperator(
        task_id="list_alerts",
        pool=settings.MDE_POOL,
        batch_size="{{ params.batch_size }}",
    )

    settle >> batches

    fetched = MdeFetchAlertIpsOperator.partial(
        task_id="fetch_ips", pool=settings.MDE_POOL, refetch="{{ params.refetch }}"
    ).expand(batch=batches.output)

    @task(outlets=LAKE_ASSETS, trigger_rule="none_failed")
    def publish(results, **context):
        # An hour without alerts maps zero batches (skipped): it still commits empty files.
        # Index by length: iterating a lazy XCom sequence probes past its end and logs an error.
        batches = [results[i] for i in range(len(results))] if results is not None else []
        return publish_interval(context, batches)

    publish(fetched.output)
