"""MDE alert IPs, hourly: list the hour's alerts, fetch each alert's IPs, publish to the lake.

Flow only; the logic lives in mde_pipeline.airflow and below (see docs/DESIGN.md). The DAG
file (dags/mde_alert_ips.py) only puts :func:`hourly_dags` into its module, so a
deployment from the wheel needs that three-line file and nothing else.

- One DAG per tenant from the one DAG file: Variable ``mde_tenants`` (a JSON list of names,
  read at parse time from ``AIRFLOW_VAR_MDE_TENANTS`` first; mde_pipeline.airflow.tenants)
  gives ``mde_alert_ips_<name>`` on connection ``mde_<name>`` in pool ``mde_api_<name>``.
  Without it: ``mde_alert_ips`` on ``mde_default`` in pool ``mde_api``. A Variable that
  does not parse is an import error of the DAG file naming it, never a silent change of DAGs.
- A real one-hour data interval (``CronDataIntervalTimetable``), so run N loads alerts
  whose ``lastUpdateTime`` lies in ``[data_interval_start, data_interval_end)``.
- Every API call runs in the tenant's pool (listing too: the budget is shared).
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

from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from mde_pipeline.airflow import settings
from mde_pipeline.airflow.assets import LAKE_ASSETS
from mde_pipeline.airflow.freshness import freshness_deadline
from mde_pipeline.airflow.operators import MdeFetchAlertIpsOperator, MdeListAlertsOperator, MdePublishOperator
from mde_pipeline.airflow.priority import PRIORITY_WEIGHT_RULE
from mde_pipeline.airflow.settle import MdeSettleOperator
from mde_pipeline.airflow.tenants import TenantDag, configured_tenant_dags


def hourly_dag(tenant: TenantDag) -> DAG:
    """One tenant's hourly DAG (a function, so each DAG's tasks keep their own tenant)."""
    with DAG(
        dag_id=tenant.dag_id,
        description="IP addresses of every Microsoft Defender for Endpoint alert, into the lake"
        + (f" (tenant {tenant.name}, connection {tenant.conn_id})" if tenant.name else ""),
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
        tags=["mde", "security", *([f"tenant:{tenant.name}"] if tenant.name else [])],
        params={
            "batch_size": Param(settings.DEFAULT_BATCH_SIZE, type="integer", minimum=1),
            # Fresh API calls for every alert version, even when the fetch cache holds it, and
            # the hour replaced whole (a rerun that must replace data).
            "refetch": Param(False, type="boolean"),
        },
        # An hour not committed within MDE_FRESHNESS_DEADLINE_MINUTES (60) of its end: a log line.
        deadline=freshness_deadline(),
    ) as dag:
        # Wait (deferred: no worker slot, not in the API pool) until the hour has settled.
        settle = MdeSettleOperator(task_id="settle")

        batches = MdeListAlertsOperator(
            task_id="list_alerts",
            mde_conn_id=tenant.conn_id,
            pool=tenant.pool,
            batch_size="{{ params.batch_size }}",
        )

        settle >> batches

        fetched = MdeFetchAlertIpsOperator.partial(
            task_id="fetch_ips", mde_conn_id=tenant.conn_id, pool=tenant.pool, refetch="{{ params.refetch }}"
        ).expand(batch=batches.output)

        # none_failed: an hour without alerts maps zero batches (skipped) and still commits.
        MdePublishOperator(
            task_id="publish",
            results=fetched.output,
            mde_conn_id=tenant.conn_id,
            outlets=LAKE_ASSETS,
            trigger_rule="none_failed",
        )
    return dag


def hourly_dags() -> dict[str, DAG]:
    """Every hourly DAG of Variable ``mde_tenants``, by DAG id: the DAG file puts them into
    its module (the DagBag and `airflow dags test` look DAGs up there). A function, not
    module-level DAGs: the Variable is read anew at every parse."""
    return {tenant.dag_id: hourly_dag(tenant) for tenant in configured_tenant_dags()}
