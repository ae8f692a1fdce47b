"""OpenLineage off unless configured: with a file transport, a real run of DAG
mde_alert_ips (``dag.test()`` against the simulator) emits events whose outputs name
the lake tables publish wrote; without one, nothing is written."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from local_airflow import fresh_home, lake_env
from mde_simulator.process import SimulatorProcess


HOUR = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)


@pytest.mark.slow
def test_publish_emits_the_lake_tables_to_a_file_transport(tmp_path, template_db):
    events_file, lake = tmp_path / "openlineage.jsonl", tmp_path / "lake"
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    with SimulatorProcess(tmp_path / "sim", alerts=6, start=HOUR.isoformat(), end=(HOUR + timedelta(hours=1)).isoformat(),
                          seed=3, rate_limits=[[50, 1], [500, 10]]) as sim:
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(rate_limit_margin_seconds=0.5), **lake_env(lake),
                          AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(transport),
                          AIRFLOW__OPENLINEAGE__NAMESPACE="mde-test")
        home.import_pools()
        [run] = home.test_runs("mde_alert_ips", [HOUR + timedelta(hours=1)])
    assert run.get("state") == "success", run
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    publish = [e for e in events if e["job"]["name"] == "mde_alert_ips.publish" and e["eventType"] == "COMPLETE"]
    assert len(publish) == 1, [(e["job"]["name"], e["eventType"]) for e in events]
    outputs = {(o["namespace"], o["name"]) for o in publish[0]["outputs"]}
    assert {name.rsplit("/", 1)[-1] for _, name in outputs} == {"alerts", "alert_ips"}
    # The provider's file converter: namespace file://<host>, name the path (leading "/" dropped).
    assert all(ns.startswith("file") and name.lstrip("/").startswith(str(lake).lstrip("/")) for ns, name in outputs), outputs
    assert publish[0]["job"]["namespace"] == "mde-test"


def test_off_unless_configured(monkeypatch):
    # The provider's own switch: no transport, config file or URL -> no listener, no
    # hook-lineage reader, and publish's collector is a no-op.
    from airflow.providers.openlineage.conf import is_disabled
    from airflow.sdk.lineage import NoOpCollector, get_hook_lineage_collector

    assert is_disabled()
    assert isinstance(get_hook_lineage_collector(), NoOpCollector)
