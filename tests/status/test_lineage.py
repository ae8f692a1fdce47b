"""OpenLineage off unless configured: with a file transport, real runs of DAG
mde_alert_ips (``dag.test()`` against the simulator) emit events whose outputs name each
lake table's tenant partition by the OpenLineage naming spec, for a local lake and for
a lake on ADLS (Azurite); without a transport, nothing is written."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from local_airflow import fresh_home, lake_env
from mde_simulator.process import SimulatorProcess
from tests.lake.azurite import ACCOUNT_KEY, AzuriteServer

HOUR = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
CONN_ID = "mde_lake"
CONTAINER = "lineage"


@pytest.fixture(scope="module")
def azurite():
    with AzuriteServer() as server:
        server.create_container(CONTAINER)
        yield server


def publish_outputs(events: list[dict]) -> list[set[tuple[str, str]]]:
    """The (namespace, name) outputs of each COMPLETE event of a publish task, in order."""
    publish = [e for e in events if e["job"]["name"] == "mde_alert_ips.publish" and e["eventType"] == "COMPLETE"]
    return [{(o["namespace"], o["name"]) for o in event["outputs"]} for event in publish]


@pytest.mark.slow
def test_publish_names_local_and_adls_partitions_in_a_file_transport(tmp_path, template_db, azurite):
    events_file, lake = tmp_path / "openlineage.jsonl", tmp_path / "lake"
    prefix = f"run-{uuid.uuid4().hex[:8]}/lake"
    abfs_root = azurite.lake_root(CONTAINER, prefix)  # abfs://lineage@devstoreaccount1.dfs.core.windows.net/<prefix>
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    with SimulatorProcess(tmp_path / "sim", alerts=6, start=HOUR.isoformat(), end=(HOUR + timedelta(hours=2)).isoformat(),
                          seed=3, rate_limits=[[50, 1], [500, 10]]) as sim:
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(rate_limit_margin_seconds=0.5), **lake_env(lake),
                          **azurite.airflow_env(CONN_ID),
                          AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(transport),
                          AIRFLOW__OPENLINEAGE__NAMESPACE="mde-test")
        home.import_pools()
        # One process, two runs: the first hour into the local lake, the second into ADLS.
        runs = home.test_runs("mde_alert_ips", [HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)],
                              lake_roots=[str(lake), abfs_root])
        tenant, client_secret = sim.info["tenant_id"], sim.info["client_secret"]
    assert [run.get("state") for run in runs] == ["success", "success"], runs
    text = events_file.read_text()
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    local_outputs, adls_outputs = publish_outputs(events)

    # Local: namespace "file", name the partition's absolute path (the spec's local file system).
    assert local_outputs == {
        ("file", f"{lake}/alerts/tenant_id={tenant}"),
        ("file", f"{lake}/alert_ips/tenant_id={tenant}"),
    }
    # ADLS: abfss://<container>@<account>.dfs.core.windows.net (also for an abfs:// root),
    # name the path in the container without a leading "/".
    namespace = f"abfss://{CONTAINER}@devstoreaccount1.dfs.core.windows.net"
    assert adls_outputs == {
        (namespace, f"{prefix}/alerts/tenant_id={tenant}"),
        (namespace, f"{prefix}/alert_ips/tenant_id={tenant}"),
    }
    assert {e["job"]["namespace"] for e in events} == {"mde-test"}
    # No secret of the lake connection or the API connection reaches the events.
    for secret in (ACCOUNT_KEY, "AccountKey", azurite.connection_string, client_secret):
        assert secret not in text


def test_off_unless_configured(monkeypatch):
    # The provider's own switch: no transport, config file or URL -> no listener, no
    # hook-lineage reader; publish's get_openlineage_facets_on_complete is never called.
    from airflow.providers.openlineage.conf import is_disabled
    from airflow.sdk.lineage import NoOpCollector, get_hook_lineage_collector

    assert is_disabled()
    assert isinstance(get_hook_lineage_collector(), NoOpCollector)
