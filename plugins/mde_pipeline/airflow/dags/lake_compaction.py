"""Daily compaction of the lake's closed days, retention, then its IP index (flow only:
``compact >> retain >> index``).

The DAG file (dags/mde_lake_compaction.py) only calls :func:`compaction_dag`.

- Runs at 03:30 UTC with a real one-day data interval (``CronDataIntervalTimetable``).
  A run compacts, in both tables, every day that still has hourly files and ended at
  least ``GRACE`` (3 h) before its data interval's end, so yesterday is compacted by the
  03:30 run, and old days filled by a backfill are picked up by the next run once no
  hourly file of theirs changed for an hour (the backfill has moved on)
  (mde_pipeline.lake.compaction.compaction_step). Then, in its own task so each step
  retries alone, every month whose compacted days are not exactly what its IP index covers (the current
  month after each day, a month whose index a rerun dropped) gets its IP-sorted
  ``alert_ips`` copy under ``_ip_index/`` rebuilt (mde_pipeline.lake.ip_index.index_step;
  what the analyst CLI reads for IP lookups; see docs/ANALYSTS.md).
- ``retain`` removes whole days older than Variable ``mde_lake_retention_days`` (unset,
  the default: the lake keeps everything) from both tables, the IP index, the fetch cache
  and staging, one log line per day; days a run is still loading stay
  (mde_pipeline.lake.retention.retention_step). It runs before ``index``, which rebuilds
  the months it touched without the removed days. Param ``retention_dry_run``: list what
  would go (in the log and the task's XCom), remove nothing.
- Why a schedule and not the lake Assets (``mde_lake.alerts`` / ``mde_lake.alert_ips``):
  those are emitted by every hourly publish; compaction needs a day to be over, not a
  new hour, and one run per day is enough. Compaction changes files, not rows, so it
  emits no asset events.
- Idempotent and safe beside hourly loads and reruns: each day is swapped in atomically
  under the day's lake lock, and reruns of hours in compacted days are published into
  the compacted file by the writer. ``catchup=False``: one run does all pending days.
- The compact task first finishes any interrupted day swap (of any day), and sweeps, in
  every ``tenant_id=`` folder under ``_staging/`` (also of tenants that never committed
  or left Variable ``mde_tenants``), the staging folders of failed runs older than
  ``MDE_STAGING_MAX_AGE_DAYS`` (7), the fetch cache no run may still publish and the
  swapped-out local days past their 10 minutes (lake.retired).
- The lake root and its connection come from Variables ``mde_lake_root`` and
  ``mde_lake_conn_id``, as for ``mde_alert_ips`` (mde_pipeline.airflow.lake_location).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task


def compaction_dag() -> DAG:
    """The daily compaction DAG (a new one per call: one per parse of the DAG file)."""
    with DAG(
        dag_id="mde_lake_compaction",
        description="Rewrite closed days of the MDE lake into sorted files; index compacted days by IP",
        schedule=CronDataIntervalTimetable("30 3 * * *", timezone="UTC"),
        start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 2, "retry_delay": timedelta(minutes=10), "execution_timeout": timedelta(hours=2)},
        tags=["mde", "lake"],
        params={"retention_dry_run": Param(False, type="boolean", description="list the days retention would remove; remove nothing")},
    ) as dag:

        @task
        def compact(**context) -> dict:
            from mde_pipeline.airflow.lake_location import configured_lake_location
            from mde_pipeline.airflow.settings import LOOKBACK, STAGING_MAX_AGE
            from mde_pipeline.lake.compaction import compaction_step

            location = configured_lake_location()
            return compaction_step(
                location,
                closed_before=context["data_interval_end"],
                staging_max_age=STAGING_MAX_AGE,
                cache_lookback=LOOKBACK,
            )

        @task
        def retain(**context) -> dict:
            from mde_pipeline.airflow.lake_location import configured_lake_location, configured_retention_days
            from mde_pipeline.lake.retention import retention_step

            dry_run = bool((context.get("params") or {}).get("retention_dry_run", False))
            location = configured_lake_location()
            return retention_step(location, configured_retention_days(), context["data_interval_end"], dry_run=dry_run)

        @task
        def index() -> list[str]:
            from mde_pipeline.airflow.lake_location import configured_lake_location
            from mde_pipeline.lake.ip_index import index_step

            return index_step(configured_lake_location())

        compact() >> retain() >> index()
    return dag
