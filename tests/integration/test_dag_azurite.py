"""DAG mde_alert_ips end to end with the lake on ADLS (Azurite) through `abfs://`.

The same run as test_dag_end_to_end, with Variable mde_lake_root an abfs URL and the
lake connection an `adls` connection: the provider's object storage, the two-phase blob
commit and DuckDB reading the blobs back through the project's filesystem.
"""

from __future__ import annotations

import uuid

import pytest

import lake_check
from local_airflow import fresh_home
from tests.integration.test_dag_end_to_end import CLIENT, HOURS, run_at, start_simulator, template_db  # noqa: F401
from tests.lake.azurite import AzuriteServer

pytestmark = pytest.mark.slow

CONN_ID = "mde_lake"
CONTAINER = "lake"


@pytest.fixture(scope="module")
def azurite():
    with AzuriteServer() as server:
        server.create_container(CONTAINER)
        yield server


def test_hours_land_exactly_on_adls_and_reruns_replace(template_db, tmp_path, azurite, monkeypatch):  # noqa: F811
    root = azurite.lake_root(CONTAINER, f"run-{uuid.uuid4().hex[:8]}/lake")
    lake_env = azurite.airflow_env(CONN_ID, root=root)
    with start_simulator(tmp_path, alerts=40) as sim:
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(**CLIENT), **lake_env)
        home.import_pools()
        runs = home.test_runs("mde_alert_ips", [run_at(h) for h in HOURS] + [run_at(HOURS[1])])
        assert [r["state"] for r in runs] == ["success"] * 4, home.last_output[-6000:]
        truth = sim.ground_truth()

    # This process reads the blobs with the same connection the tasks used.
    for key, value in lake_env.items():
        monkeypatch.setenv(key, value)
    comparison = lake_check.compare(root, truth, HOURS, conn_id=CONN_ID)
    assert comparison.exact, str(comparison)
    assert comparison.expected_alerts > 0

    container = azurite.blob_service().get_container_client(CONTAINER)
    prefix = root.split(".net/", 1)[1] + "/"
    names = [b.name[len(prefix):] for b in container.list_blobs(name_starts_with=prefix)]
    # One file per table and hour (the rerun replaced its files), nothing left in staging.
    data_files = sorted(n for n in names if n.endswith(".parquet") and not n.startswith("_"))
    assert len(data_files) == 2 * len(HOURS), data_files
    # Every file lives in the tenant's part of the lake (tenant_id=<id> below each top folder).
    tenant = f"tenant_id={truth['tenant_id']}"
    assert {n.split("/")[1] for n in names if not n.endswith("/")} == {tenant}, names
    # Nothing left in a run's staging; the fetch cache stays for reruns and look-backs.
    cache = f"_staging/{tenant}/fetch_cache/"
    staged = [n for n in names if n.startswith("_staging/") and not n.startswith(cache)]
    assert not [n for n in staged if not n.endswith("/")], names
    assert any(n.startswith(cache) for n in names)
