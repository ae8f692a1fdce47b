"""The real engine: CeleryExecutor, a Redis broker, a PostgreSQL metadata DB, two hosts, two tenants.

Everything a multi-host deployment runs, from Debian's packages and the project's venv:
``postgres`` (metadata DB and Celery's result backend), ``redis-server`` (Celery's broker
on db 0, the pipeline's rate-limit ledger on db 1), Airflow's api-server, dag-processor
and scheduler on CeleryExecutor, and two ``airflow celery worker`` processes under the
node names ``worker@host1`` / ``worker@host2``, each with its own AIRFLOW_HOME and
reporting its own hostname (include/local_celery.py).

Two tenants from the one DAG file (Variable ``mde_tenants``), each with its own
simulator (its own Entra tenant id, data and tight rate windows), connection, pool and
DAG. Every connection names the Redis ledger, so each tenant has one budget for both
hosts. Per tenant, a backfill of the older hours runs with the scheduled run of the
latest complete hour (unpausing a ``catchup=False`` DAG creates it).

Then: every run succeeded, both hosts ran API tasks, no simulator throttled anything and
every window stayed within its limit (while one filled up), and each tenant's partition
``tenant_id=<id>`` equals its simulator's ground truth for every loaded hour, nothing
else in the lake. Only speed knobs differ from a deployment (local_scheduler.SPEED_ENV).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import lake_check
from local_airflow import AirflowHome, lake_env
from local_celery import CeleryServices
from local_postgres import PostgresServer
from local_redis import PASSWORD as REDIS_PASSWORD
from local_redis import RedisServer
from mde_pipeline.airflow.tenants import tenant_pools
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.tenants import lake_tenants
from mde_simulator.process import SimulatorProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

HOSTS = ("host1", "host2")
BACKFILL_HOURS = 2
ALERTS_PER_HOUR = 6
# One fetch task per run (the default batch holds the hour): few tasks, as each costs a
# few seconds of start-up on 2 cores. A tenant's backfill runs and its scheduled run
# still call at the same time, from both hosts, in the tenant's pool (2 slots, pools.json).
POOLS_FILE = Path(__file__).resolve().parents[2] / "include" / "pools.json"
# 3 calls per second and 12 per 6 s: a batch's 4th call already waits on the budget.
LIMITS = [[3, 1], [12, 6]]
# Under load a request reaches the server a few 100 ms after its reservation.
MARGIN_SECONDS = 0.5
FINISHED = ("success", "failed")


@dataclass(frozen=True)
class Tenant:
    name: str
    entra_id: str
    seed: int

    @property
    def dag_id(self) -> str:
        return f"mde_alert_ips_{self.name}"

    @property
    def pool(self) -> str:
        return f"mde_api_{self.name}"

    @property
    def conn_env(self) -> str:
        return f"AIRFLOW_CONN_MDE_{self.name.upper()}"


TENANTS = (
    Tenant("contoso", "6f1d2c3b-0a4e-4b7f-9c21-3d5e7f9a1b2c", seed=23),
    Tenant("fabrikam", "b2c4e6f8-1a3b-4c5d-8e7f-9a0b1c2d3e4f", seed=24),
)
DAG_IDS = tuple(t.dag_id for t in TENANTS)


def runs(airflow: CeleryServices) -> dict[tuple[str, str], str]:
    rows = airflow.query("SELECT dag_id, run_id, state FROM dag_run WHERE dag_id IN (?, ?)", DAG_IDS)
    return {(dag_id, run_id): state for dag_id, run_id, state in rows}


def task_instances(airflow: CeleryServices) -> list[tuple[Any, ...]]:
    return airflow.query(
        "SELECT dag_id, run_id, task_id, map_index, try_number, state, hostname, pool FROM task_instance "
        "WHERE dag_id IN (?, ?) ORDER BY dag_id, run_id, task_id, map_index",
        DAG_IDS,
    )


def describe(airflow: CeleryServices) -> str:
    return "\n".join([f"runs: {runs(airflow)}", *(f"  {row}" for row in task_instances(airflow))])


def no_failed_run(airflow: CeleryServices) -> None:
    failed = [run for run, state in runs(airflow).items() if state == "failed"]
    assert not failed, f"runs failed: {failed}\n{describe(airflow)}"


def all_finished(airflow: CeleryServices) -> bool:
    no_failed_run(airflow)
    states = runs(airflow)
    for tenant in TENANTS:
        mine = [run_id for dag_id, run_id in states if dag_id == tenant.dag_id]
        backfill = [r for r in mine if r.startswith("backfill__")]
        if len(backfill) < BACKFILL_HOURS or not any(r.startswith("scheduled__") for r in mine):
            return False
    return all(state in FINISHED for state in states.values())


def test_two_tenants_on_two_celery_hosts_share_each_budget_and_land_exactly(tmp_path):
    current = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    latest = current - timedelta(hours=1)  # the scheduled runs' hour, unless an hour passes mid-test
    first = latest - timedelta(hours=BACKFILL_HOURS)
    lake = tmp_path / "lake"

    def simulator(tenant: Tenant) -> SimulatorProcess:
        # Data up to the end of the current hour: whichever hour the scheduler finds latest
        # complete when the DAG is unpaused (or when an hour passes mid-test) has alerts.
        return SimulatorProcess(
            tmp_path / f"sim-{tenant.name}",
            alerts=ALERTS_PER_HOUR * (BACKFILL_HOURS + 2),
            start=first.isoformat(),
            end=(current + timedelta(hours=1)).isoformat(),
            seed=tenant.seed,
            tenant_id=tenant.entra_id,
            rate_limits=LIMITS,
        )

    with (
        PostgresServer() as postgres,
        RedisServer(tmp_path / "redis") as redis,
        simulator(TENANTS[0]) as first_sim,
        simulator(TENANTS[1]) as second_sim,
    ):
        sims = dict(zip(TENANTS, (first_sim, second_sim)))
        ledger = redis.url.rsplit("/", 1)[0] + "/1"  # the broker's Redis, on its own db number
        env = {
            "AIRFLOW_VAR_MDE_TENANTS": json.dumps([t.name for t in TENANTS]),
            **lake_env(lake),
            "MDE_ALERT_IPS_TASK_RETRIES": "0",  # a failure shows at once, not after a retry delay
        }
        for tenant, sim in sims.items():
            # Each simulator has its own CA: the connection names it (one REQUESTS_CA_BUNDLE cannot).
            env[tenant.conn_env] = sim.connection_uri(
                ca_bundle=sim.ca_bundle, rate_limit_ledger=ledger, rate_limit_margin_seconds=MARGIN_SECONDS
            )
        with CeleryServices(AirflowHome(tmp_path / "airflow", env), postgres, broker_url=redis.url, hosts=HOSTS) as airflow:
            for tenant in TENANTS:
                airflow.wait_for_dag(tenant.dag_id)
            # As make run and the compose init do: include/pools.json plus one pool per tenant.
            airflow.import_pools(tenant_pools(json.loads(POOLS_FILE.read_text()), [t.name for t in TENANTS]))
            for tenant in TENANTS:
                airflow.create_backfill(tenant.dag_id, first, latest - timedelta(hours=1), max_active_runs=BACKFILL_HOURS)
                airflow.unpause(tenant.dag_id)  # starts the backfill and creates the scheduled run

            airflow.wait_for(lambda: all_finished(airflow), 240, "every run to finish", diagnostics=lambda: describe(airflow))
            final_runs = runs(airflow)
            report = describe(airflow)
            tis = task_instances(airflow)
            loaded = airflow.query("SELECT dag_id, run_type, data_interval_start FROM dag_run WHERE dag_id IN (?, ?)", DAG_IDS)
            # Each host's worker log and task logs (in its own home).
            logs = [airflow.log_dir / f"{airflow.worker_name(h)}.log" for h in HOSTS]
            logs += [f for home in airflow.worker_homes.values() for f in (home.path / "logs").rglob("*.log")]
            worker_logs = "".join(f.read_text(errors="replace") for f in logs)
        stats = {tenant: sim.stats() for tenant, sim in sims.items()}
        truths = {tenant: sim.ground_truth() for tenant, sim in sims.items()}

    # Every run succeeded: each tenant's backfill hours and its scheduled hour, the latest
    # complete one when the DAG was unpaused (an hour boundary passing mid-test moves it,
    # or adds the next hour's scheduled run: that must succeed too).
    assert set(final_runs.values()) == {"success"}, report
    hours = {}
    for tenant in TENANTS:
        mine = [(kind, start.astimezone(timezone.utc)) for dag_id, kind, start in loaded if dag_id == tenant.dag_id]
        assert sorted(start for kind, start in mine if kind == "backfill") == lake_check.hours(first, latest), report
        assert [start for kind, start in mine if kind == "scheduled"] and all(
            start >= latest for kind, start in mine if kind == "scheduled"
        ), report
        hours[tenant] = sorted(start for _, start in mine)
    # Both machines called the API, each under its own name; the ledger's password stayed
    # out of their logs (the task logs hold the tenants' listings and fetches).
    assert {host for *_, host, pool in tis if pool in {t.pool for t in TENANTS}} == set(HOSTS), report
    assert "list_alerts" in worker_logs and REDIS_PASSWORD not in worker_logs

    # One budget per tenant for both hosts: no 429, every window within its limit, and
    # the limiter really was the bottleneck at least once (a window filled up).
    for tenant in TENANTS:
        assert stats[tenant]["throttled"] == 0, (tenant.name, stats[tenant])
        (client,) = [c for c in stats[tenant]["clients"] if c["calls"]]
        assert client["tenant_id"] == tenant.entra_id
        for window in client["windows"]:
            assert window["all"]["max_calls"] <= window["limit"], (tenant.name, client["windows"])
        assert any(w["all"]["max_admitted"] == w["limit"] for w in client["windows"]), (tenant.name, client["windows"])

    # Each tenant's partition is exactly its own ground truth, and nothing else is in the lake.
    root = resolve_lake_location(str(lake))
    assert sorted(lake_tenants(root)) == sorted(t.entra_id for t in TENANTS)
    for tenant in TENANTS:
        comparison = lake_check.compare(root.for_tenant(tenant.entra_id), truths[tenant], hours[tenant])
        assert comparison.exact, f"{tenant.name}: {comparison}"
        assert comparison.expected_alerts > 0
