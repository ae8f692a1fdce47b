"""The real engine: CeleryExecutor, a Redis broker, a PostgreSQL metadata DB, two hosts.

Everything a multi-host deployment runs, from Debian's packages and the project's venv:
``postgres`` (metadata DB and Celery's result backend), ``redis-server`` (Celery's broker
on db 0, the pipeline's rate-limit ledger on db 1), Airflow's api-server, dag-processor
and scheduler on CeleryExecutor, and two ``airflow celery worker`` processes under the
node names ``worker@host1`` / ``worker@host2``, each with its own AIRFLOW_HOME and
reporting its own hostname (include/local_celery.py). The connection names the Redis
ledger, so the two hosts share one budget.

The HTTPS simulator has windows tight enough that the budget binds. A backfill of the
older hours runs with the scheduled run of the latest complete hour (unpausing a
``catchup=False`` DAG creates it). Then: every run succeeded, both hosts ran task
instances, the simulator throttled nothing and every window stayed within its limit
(while at least one filled up), and the lake equals the ground truth for every loaded
hour. Both workers and every service use the same DAG file, pool and connection as a
deployment; only speed knobs differ (local_scheduler.SPEED_ENV).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import lake_check
from local_airflow import AirflowHome, lake_env
from local_celery import CeleryServices
from local_postgres import PostgresServer
from local_redis import PASSWORD as REDIS_PASSWORD
from local_redis import RedisServer
from mde_simulator.process import SimulatorProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

DAG_ID = "mde_alert_ips"
POOL = "mde_api"
HOSTS = ("host1", "host2")
BACKFILL_HOURS = 2
ALERTS_PER_HOUR = 8
# Small batches: each run maps several fetch tasks, so the pool's two slots are busy at once.
BACKFILL_CONF = {"batch_size": 3}
POOL_SLOTS = 2
# 3 calls per second and 12 per 6 s: a batch's 4th call already waits on the budget.
LIMITS = [[3, 1], [12, 6]]
FINISHED = ("success", "failed")


def runs(airflow: CeleryServices) -> dict[str, str]:
    return dict(airflow.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,)))


def describe(airflow: CeleryServices) -> str:
    rows = airflow.query(
        "SELECT run_id, task_id, map_index, try_number, state, hostname, pool FROM task_instance "
        "WHERE dag_id = ? ORDER BY run_id, task_id, map_index",
        (DAG_ID,),
    )
    return "\n".join([f"runs: {runs(airflow)}", *(f"  {row}" for row in rows)])


def no_failed_run(airflow: CeleryServices) -> None:
    failed = [run for run, state in runs(airflow).items() if state == "failed"]
    assert not failed, f"runs failed: {failed}\n{describe(airflow)}"


def test_celery_on_two_hosts_shares_the_budget_and_loads_the_lake_exactly(tmp_path):
    import time as _t; _t0=_t.monotonic(); T=lambda w: print(f'TIMING {_t.monotonic()-_t0:6.1f} {w}', flush=True)
    current = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    latest = current - timedelta(hours=1)  # the scheduled run's hour, unless an hour passes mid-test
    first = latest - timedelta(hours=BACKFILL_HOURS)
    lake = tmp_path / "lake"

    with (
        PostgresServer() as postgres,
        RedisServer(tmp_path / "redis") as redis,
        SimulatorProcess(
            tmp_path / "sim",
            alerts=ALERTS_PER_HOUR * (BACKFILL_HOURS + 2),
            start=first.isoformat(),
            end=(current + timedelta(hours=1)).isoformat(),
            seed=23,
            rate_limits=LIMITS,
        ) as sim,
    ):
        T('servers up')
        ledger = redis.url.rsplit("/", 1)[0] + "/1"  # the broker's Redis, its own db number
        client = {"rate_limit_ledger": ledger, "rate_limit_margin_seconds": 0.5}
        home = AirflowHome(
            tmp_path / "airflow",
            {
                **sim.env(**client),
                **lake_env(lake),
                "MDE_ALERT_IPS_TASK_RETRIES": "0",  # a failure shows at once, not after a retry delay
            },
        )
        with CeleryServices(home, postgres, broker_url=redis.url, hosts=HOSTS) as airflow:
            T('services up')
            airflow.wait_for_dag(DAG_ID)
            T('dag parsed')
            airflow.create_pools({POOL: POOL_SLOTS})
            airflow.create_backfill(DAG_ID, first, latest - timedelta(hours=1), max_active_runs=BACKFILL_HOURS, conf=BACKFILL_CONF)
            T('backfill created')
            airflow.unpause(DAG_ID)  # starts the backfill and creates the scheduled run

            def all_finished() -> bool:
                no_failed_run(airflow)
                states = runs(airflow)
                backfill = [r for r in states if r.startswith("backfill__")]
                scheduled = [r for r in states if r.startswith("scheduled__")]
                return len(backfill) == BACKFILL_HOURS and scheduled and all(s in FINISHED for s in states.values())

            airflow.wait_for(all_finished, 240, "every run to finish", diagnostics=lambda: describe(airflow))
            T('all finished')
            final_runs = runs(airflow)
            report = describe(airflow)
            hosts = {host for (host,) in airflow.query("SELECT DISTINCT hostname FROM task_instance WHERE dag_id = ?", (DAG_ID,))}
            loaded_hours = sorted(
                start.astimezone(timezone.utc)
                for (start,) in airflow.query("SELECT data_interval_start FROM dag_run WHERE dag_id = ?", (DAG_ID,))
            )
            worker_logs = "".join((airflow.log_dir / f"{airflow.worker_name(h)}.log").read_text(errors="replace") for h in HOSTS)
        T('services stopped')
        stats = sim.stats()
        truth = sim.ground_truth()

    # Every run succeeded: the backfill's hours and the scheduled hour (an hour boundary
    # passing mid-test adds the next hour's scheduled run: it must succeed too).
    assert set(final_runs.values()) == {"success"}, report
    assert loaded_hours[:BACKFILL_HOURS + 1] == lake_check.hours(first, current), report
    # Both machines worked, each under its own name.
    assert hosts == set(HOSTS), report
    assert REDIS_PASSWORD not in worker_logs

    # One budget for both hosts: no 429, every window within its limit, and the limiter
    # really was the bottleneck at least once (a window filled up).
    assert stats["throttled"] == 0, stats
    windows = stats["clients"][0]["windows"]
    for window in windows:
        assert window["all"]["max_calls"] <= window["limit"], windows
    assert any(w["all"]["max_admitted"] == w["limit"] for w in windows), f"the budget never bound: {windows}"

    T('asserted')
    comparison = lake_check.compare(lake, truth, loaded_hours)
    assert comparison.exact, str(comparison)
    assert comparison.expected_alerts > 0
