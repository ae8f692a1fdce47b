"""include/pools.json and the tenants' pools: what the operators run in, as deployments create it.

Pool ``mde_api`` comes from include/pools.json (`airflow pools import`, run for real in
test_deploy_init.py through the init script). With Variable ``mde_tenants`` each tenant
``N`` also gets pool ``mde_api_N`` with the same slots: `make run` through
local_airflow.AirflowHome.import_pools, docker-compose's init and other deployments
through include/deploy/tenant_pools.py (both run for real here, on a migrated SQLite
metadata DB).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

POOLS = REPO / "include" / "pools.json"
INIT_SCRIPT = REPO / "include" / "deploy" / "airflow_init.sh"
TENANT_POOLS = REPO / "include" / "deploy" / "tenant_pools.py"


def test_pools_file_defines_the_operators_pool():
    from mde_pipeline.airflow.settings import MDE_POOL

    pools = json.loads(POOLS.read_text())
    assert list(pools) == [MDE_POOL] == ["mde_api"]
    pool = pools["mde_api"]
    # The keys `airflow pools import` documents; team_name is for multi-team setups only.
    assert set(pool) == {"slots", "description", "include_deferred"}
    assert pool["slots"] == 2 and pool["include_deferred"] is False


def test_pool_description_says_what_the_slots_mean():
    description = json.loads(POOLS.read_text())["mde_api"]["description"]
    # The limits it quotes are the limiter's defaults, so the text stays true.
    from mde_pipeline.api.windows import parse_rate_limits

    limits = [[w.limit, int(w.seconds)] for w in parse_rate_limits(None)]
    assert json.dumps(limits).replace(" ", "") in description.replace(" ", "")
    assert "at once" in description and "rate limiter" in description and "ledger" in description


# ------------------------------------------------------------------ tenants' pools


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    from local_airflow import migrated_template

    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")


def pools_in(home) -> dict[str, tuple]:
    with sqlite3.connect(home.path / "airflow.db") as db:
        return {name: (slots, include_deferred, description)
                for name, slots, include_deferred, description
                in db.execute("SELECT pool, slots, include_deferred, description FROM slot_pool")}


def assert_tenant_pool(pools: dict, name: str) -> None:
    base = json.loads(POOLS.read_text())["mde_api"]
    slots, include_deferred, description = pools[f"mde_api_{name}"]
    assert (slots, bool(include_deferred)) == (base["slots"], base["include_deferred"])
    assert description.startswith(f"Tenant {name} (connection mde_{name}, DAG mde_alert_ips_{name}).")


def run_tenant_pools(home, *, stored: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """include/deploy/tenant_pools.py in ``home``; ``stored``: Variable mde_tenants kept in
    the metadata DB first (set in the same process, to pay Airflow's start-up once)."""
    code = (
        "import runpy, sys\n"
        "if sys.argv[1]:\n"
        "    from airflow.models.variable import Variable\n"
        "    Variable.set('mde_tenants', sys.argv[1])\n"
        "sys.argv = [sys.argv[2], '--pools', sys.argv[3]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "python"), "-c", code, stored or "", str(TENANT_POOLS), str(POOLS)],
        env={**home.env, **env}, cwd=home.path, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_make_run_imports_a_pool_per_tenant_beside_mde_api(template_db, tmp_path):
    from local_airflow import fresh_home

    home = fresh_home(template_db, tmp_path / "airflow", AIRFLOW_VAR_MDE_TENANTS='["east", "west-2"]')
    home.import_pools()
    pools = pools_in(home)
    assert {"mde_api", "mde_api_east", "mde_api_west-2"} <= set(pools)
    assert pools["mde_api"][:2] == (2, 0)
    for name in ("east", "west-2"):
        assert_tenant_pool(pools, name)


@pytest.mark.slow
def test_tenant_pools_reads_a_variable_kept_in_the_metadata_db(template_db, tmp_path):
    from local_airflow import fresh_home

    home = fresh_home(template_db, tmp_path / "airflow")
    proc = run_tenant_pools(home, stored='["contoso"]')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK  pool mde_api_contoso: 2 slots" in proc.stdout
    pools = pools_in(home)
    assert_tenant_pool(pools, "contoso")
    assert "mde_api" not in pools  # the pools file's own pools are `airflow pools import`'s job


@pytest.mark.slow
def test_tenant_pools_refuses_a_bad_variable_before_writing_any_pool(template_db, tmp_path):
    from local_airflow import fresh_home

    home = fresh_home(template_db, tmp_path / "airflow")
    before = pools_in(home)
    proc = run_tenant_pools(home, AIRFLOW_VAR_MDE_TENANTS='["ok", "not ok"]')
    assert proc.returncode == 1
    assert "ERROR  Variable mde_tenants: tenant name 'not ok' is not" in proc.stderr
    assert pools_in(home) == before


def test_the_compose_init_creates_the_tenants_pools_after_importing_mde_api():
    lines = [line.strip() for line in INIT_SCRIPT.read_text().splitlines() if not line.strip().startswith("#")]

    def position(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    guard = position('if [[ -n "${AIRFLOW_VAR_MDE_TENANTS:-}" ]]; then')
    create = position('python "${DEPLOY_DIR}/tenant_pools.py" --pools "${POOLS_FILE}"')
    end = next(i for i, line in enumerate(lines) if i > create and line == "fi")
    assert position('airflow pools import "${POOLS_FILE}"') < guard < create < end < position("airflow pools get")
