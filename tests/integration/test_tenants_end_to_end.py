"""Two tenants from one DAG file against two simulators: each tenant's rows exact and apart.

Variable mde_tenants = ["east", "west"] (from the environment, as a deployment's .env
gives it): the one DAG file defines mde_alert_ips_east and mde_alert_ips_west, on
connections mde_east and mde_west, each pointing at its own HTTPS simulator (its own
Entra tenant id, seed and CA; include/tenant_simulators.py, what `make run` uses), in
pools mde_api_east and mde_api_west. Both load the same hours into one lake root.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

import lake_check
from local_airflow import fresh_home, lake_env, migrated_template
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.airflow.tenants import TENANTS_ENV
from mde_pipeline.lake.tenants import lake_tenants
from mde_simulator.process import SimulatorProcess
from tenant_simulators import simulators_env, start_simulators

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 21, 9, tzinfo=timezone.utc)
HOURS = lake_check.hours(T0, T0 + timedelta(hours=2))
LIMITS = [[25, 1], [250, 10]]
NAMES = ["east", "west"]


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")


def test_two_tenants_from_one_dag_file_land_exact_and_apart(template_db, tmp_path):
    lake = tmp_path / "lake"
    with ExitStack() as stack:
        sims = start_simulators(
            stack, tmp_path / "sim", NAMES, alerts=24, start=T0.isoformat(), end=(T0 + timedelta(hours=2)).isoformat(),
            seed=5, rate_limits=LIMITS, invalid_ip_rate=0.1, vanish_rate=0.05,
        )  # fmt: skip
        env = simulators_env(sims, rate_limit_margin_seconds=0.5)
        home = fresh_home(template_db, tmp_path / "airflow", **env, **lake_env(lake))
        # Both tenants' DAGs in one Airflow process (its start-up is the slow part); the
        # pools are created by import_pools (tests/deploy/test_deploy_pools.py).
        done = home.test_runs([f"mde_alert_ips_{name}" for name in NAMES], [h + timedelta(hours=1) for h in HOURS])
        runs = {name: [r for r in done if r["dag_id"] == f"mde_alert_ips_{name}"] for name in NAMES}
        truths = {name: sim.ground_truth() for name, sim in sims.items()}
        stats = {name: sim.stats() for name, sim in sims.items()}

    for name in NAMES:
        assert [r["state"] for r in runs[name]] == ["success"] * len(HOURS), home.last_output[-6000:]
        # Each tenant's DAG called its own simulator only, never throttled.
        assert stats[name]["throttled"] == 0 and sum(stats[name]["calls"]["ips"].values()) > 0, stats[name]
    ids = {name: truths[name]["tenant_id"] for name in NAMES}
    alerts = {name: set(truths[name]["alerts"]) for name in NAMES}
    assert len(set(ids.values())) == 2 and not alerts["east"] & alerts["west"]  # two different tenants

    # One partition per tenant, each exactly its own simulator's ground truth.
    root = resolve_lake_location(lake)
    assert lake_tenants(root) == sorted(ids.values())
    for name in NAMES:
        comparison = lake_check.compare(root.for_tenant(ids[name]), truths[name], HOURS)
        assert comparison.exact, f"{name}: {comparison}"
        assert comparison.expected_alerts > 0 and comparison.lake_ips == comparison.expected_ips > 0

    # Apart: every row sits in its own tenant's partition, and every file of the lake
    # (staging, fetch cache and locks included) in a tenant_id= folder.
    con = duckdb.connect()
    for table in ("alerts", "alert_ips"):
        rows = con.execute(
            "SELECT tenant_id, regexp_extract(filename, 'tenant_id=([^/]+)/', 1), alert_id "
            f"FROM read_parquet('{lake}/{table}/*/*/*.parquet', hive_partitioning = false, filename = true)"
        ).fetchall()
        assert rows
        for column, partition, alert_id in rows:
            [name] = [n for n in NAMES if ids[n] == column]
            assert partition == column and alert_id in alerts[name], (table, column, partition, alert_id)
    for top in ("alerts", "alert_ips", "_staging", "_locks"):
        assert {p.name for p in (lake / top).iterdir()} <= {f"tenant_id={i}" for i in ids.values()}, top
    fetch_caches = sorted(p.relative_to(lake).parts[:3] for p in lake.glob("_staging/*/fetch_cache"))
    assert fetch_caches == sorted(("_staging", f"tenant_id={i}", "fetch_cache") for i in ids.values())

    # Each tenant's API tasks ran in its own pool.
    db = sqlite3.connect(home.path / "airflow.db")
    used = set(db.execute("SELECT dag_id, task_id, pool FROM task_instance WHERE task_id IN ('list_alerts', 'fetch_ips')"))
    assert used == {(f"mde_alert_ips_{n}", task, f"mde_api_{n}") for n in NAMES for task in ("list_alerts", "fetch_ips")}


def test_one_tenant_spelled_three_ways_lands_in_one_partition_once(template_db, tmp_path):
    """The same hour loaded through three connections to one tenant: its GUID in upper
    case, in lower case, and its verified domain name (the list task resolves it from the
    token's tid). One tenant_id=<lower-case GUID> folder, every version once, and the
    later runs take their IPs from the first one's fetch cache."""
    guid, domain = "6a1f0c2e-4b7d-4e9a-8c3f-1d2e3f4a5b6c", "fabrikam.onmicrosoft.com"
    spellings = {"upper": guid.upper(), "lower": guid, "domain": domain}
    lake = tmp_path / "lake"
    with SimulatorProcess(tmp_path / "sim", alerts=12, start=T0.isoformat(), end=(T0 + timedelta(hours=1)).isoformat(),
                          seed=9, tenant_id=guid.upper(), tenant_domain=domain, rate_limits=LIMITS,
                          invalid_ip_rate=0.1, vanish_rate=0.1) as sim:
        env = {TENANTS_ENV: json.dumps(list(spellings))}
        for name, tenant in spellings.items():
            env[f"AIRFLOW_CONN_MDE_{name.upper()}"] = sim.connection_uri(
                tenant_id=tenant, ca_bundle=sim.ca_bundle, rate_limit_margin_seconds=0.5)
        home = fresh_home(template_db, tmp_path / "airflow", **env, **lake_env(lake))
        runs = home.test_runs([f"mde_alert_ips_{name}" for name in spellings], [T0 + timedelta(hours=1)])  # in this order
        truth, stats = sim.ground_truth(), sim.stats()

    assert [r["state"] for r in runs] == ["success"] * 3, home.last_output[-6000:]
    assert truth["tenant_id"] == guid
    root = resolve_lake_location(lake)
    assert lake_tenants(root) == [guid]
    for top in ("alerts", "alert_ips", "_staging", "_locks"):
        assert [p.name for p in (lake / top).iterdir()] == [f"tenant_id={guid}"], top
    comparison = lake_check.compare(root.for_tenant(guid), truth, [T0])  # each version once, its IPs exact
    assert comparison.exact, str(comparison)
    assert comparison.expected_alerts > 0 and comparison.lake_ips == comparison.expected_ips > 0
    # One fetch cache for the tenant: only the first run called /ips, once per alert.
    assert sum(stats["calls"]["ips"].values()) == len(truth["alerts"]), stats["calls"]
