"""Fetching alert IPs in batches from the HTTPS simulator, compared with its ground truth,
and the operators' execute() with a real Airflow connection (from the environment)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest
from airflow.sdk.exceptions import AirflowFailException

from mde_pipeline.airflow.batching import make_batches
from mde_pipeline.airflow.lake_tasks import LISTING
from mde_pipeline.airflow.operators import MdeFetchAlertIpsOperator, MdeListAlertsOperator
from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import MdeServerError, MdeTooManyFailedAlertsError
from mde_pipeline.api.fetch import fetch_batch_ips
from mde_pipeline.api.ip_addresses import canonical_ip
from mde_pipeline.api.listing import list_interval
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.staging import read_staging_json

pytestmark = pytest.mark.slow

START = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)
END = datetime(2026, 1, 5, 3, 0, tzinfo=timezone.utc)
TIGHT = [[10, 1], [50, 5]]
SIM = {
    "alerts": 40,
    "start": "2026-01-05T00:00:00Z",
    "end": "2026-01-05T03:00:00Z",
    "rate_limits": TIGHT,
    "empty_ips_rate": 0.15,
    "missing_ips_rate": 0.15,
    "invalid_ip_rate": 0.4,
    "vanish_rate": 0.1,
    "seed": 9,
}


def connection(sim, tmp_path, **extra) -> str:
    return sim.connection_uri(
        ca_bundle=sim.ca_bundle,
        rate_limit_ledger_dir=str(tmp_path / "ledger"),
        timeout=10,
        **extra,
    )


def simulator_client(sim, tmp_path) -> MdeClient:
    conn = json.loads(connection(sim, tmp_path))
    config = MdeConnectionConfig.from_parts(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn["extra"], conn_id="sim"
    )
    return MdeClient(config)


def assert_matches_truth(results: list[dict], truth: dict) -> None:
    for result in results:
        expected = truth["alerts"][result["alert_id"]]
        assert result["last_update_time"] == expected["lastUpdateTime"]
        assert result["status"] == expected["ips_status"], result
        ips = [ip for ip, _ in result["ips"]]
        assert len(ips) == len(set(ips))
        assert sorted(ips) == expected["ips"]
        assert all(canonical_ip(ip).version == version for ip, version in result["ips"])
        assert result["invalid_ip_values"] == list(dict.fromkeys(expected["invalid_ips"]))
        if result["status"] != "ok":
            assert result["ips"] == [] and result["invalid_ip_values"] == []


@pytest.mark.parametrize("simulator", [SIM], indirect=True)
def test_batches_fetch_exactly_the_ground_truth(simulator, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with simulator_client(simulator, tmp_path) as client:
        listing = list_interval(client, START, END)
        listing.tenant_id = client.tenant_id
        batches = make_batches(listing.alerts, batch_size=8)
        results = [result for batch in batches for result in fetch_batch_ips(client, batch)]
        client_calls = client.stats.calls
    truth = simulator.ground_truth()

    assert len(batches) == 5
    assert [r["alert_id"] for r in results] == [e["alert_id"] for b in batches for e in b["alerts"]]
    assert sorted(r["alert_id"] for r in results) == sorted(truth["alerts"])
    assert_matches_truth(results, truth)

    statuses = {r["status"] for r in results}
    assert statuses == {"ok", "empty", "not_found"}
    assert any(a["vanished"] for a in truth["alerts"].values())  # listed, but /ips is 404
    assert any(r["invalid_ip_values"] for r in results)
    assert any(len(a["served_ips"]) - len(a["invalid_ips"]) > len(a["ips"]) for a in truth["alerts"].values()), (
        "the seed should serve one address twice"
    )
    # Each invalid string is reported with its alert id.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warnings = [w for w in warnings if "not an IP" in w]
    assert len(warnings) == sum(len(r["invalid_ip_values"]) for r in results)
    assert all(any(f"alert {r['alert_id']!r}: " in w for w in warnings) for r in results if r["invalid_ip_values"])

    # One call per alert, plus the listing; none throttled, every window respected.
    stats = simulator.stats()
    assert sum(stats["calls"]["ips"].values()) == len(results)
    assert client_calls == len(results) + sum(stats["calls"]["list"].values())
    assert stats["throttled"] == 0
    for window in stats["clients"][0]["windows"]:
        assert window["all"]["max_calls"] <= window["limit"]

    # The results are what the lake step consumes (lake/schema.py).
    tables = interval_tables(
        listing.alerts, results, tenant_id=listing.tenant_id, interval_start=START, listed_at=listing.listed_at
    )
    assert tables["alert_ips"].num_rows == sum(len(r["ips"]) for r in results)
    assert tables["alerts"].num_rows == len(results)


@pytest.mark.parametrize("simulator", [SIM], indirect=True)
def test_operators_execute_with_the_airflow_connection(simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", connection(simulator, tmp_path))
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_ROOT", str(tmp_path / "lake"))
    lister = MdeListAlertsOperator(
        task_id="list",
        data_interval_start="2026-01-05 01:00:00+00:00",  # as "{{ data_interval_start }}" renders
        data_interval_end="2026-01-05 02:00:00+00:00",
        batch_size=5,
    )
    start = datetime(2026, 1, 5, 1, tzinfo=timezone.utc)
    context = {"run_id": "manual__probe", "data_interval_start": start}
    batches = lister.execute(context)
    truth = simulator.ground_truth()

    # The listing went to the run's staging folder, where publish reads it.
    # In the tenant's part of the lake (tenant_id=<id> below _staging).
    tenant_lake = resolve_lake_location(tmp_path / "lake").for_tenant(truth["tenant_id"])
    listing = read_staging_json(tenant_lake, start, "manual__probe", LISTING)
    assert listing["tenant_id"] == truth["tenant_id"]
    in_hour = sorted(i for i, a in truth["alerts"].items() if "2026-01-05T01:" in a["lastUpdateTime"])
    assert sorted(a["id"] for a in listing["alerts"]) == in_hour
    assert [e["alert_id"] for b in batches for e in b["alerts"]] == [a["id"] for a in listing["alerts"]]
    assert json.loads(json.dumps(batches)) == batches

    results = []
    for batch in batches:
        results += MdeFetchAlertIpsOperator(task_id="fetch", batch=batch).execute({})
    assert [r["alert_id"] for r in results] == [a["id"] for a in listing["alerts"]]
    assert_matches_truth(results, truth)


@pytest.mark.parametrize("simulator", [SIM], indirect=True)
def test_configuration_errors_fail_the_task_and_service_errors_raise_for_retries(simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_ROOT", str(tmp_path / "lake"))  # the fetch cache's lake
    some_alert = next(iter(simulator.ground_truth()["alerts"]))
    batch = make_batches([{"id": some_alert, "lastUpdateTime": "2026-01-05T00:00:00Z"}])[0]

    # An app registration without Ip.Read.All: 403, named, not retried.
    limited = simulator.connection_uri(
        login=simulator.info["limited_client_id"],
        password=simulator.info["limited_client_secret"],
        ca_bundle=simulator.ca_bundle,
        rate_limit_ledger_dir=str(tmp_path / "ledger"),
    )
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", limited)
    with pytest.raises(AirflowFailException, match="Ip.Read.All"):
        MdeFetchAlertIpsOperator(task_id="fetch", batch=batch).execute({})

    # A wrong secret: the token request fails; not retried, and the secret is not shown.
    wrong = json.loads(connection(simulator, tmp_path))
    wrong["password"] = "wrong-secret-value-123"
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", json.dumps(wrong))
    with pytest.raises(AirflowFailException, match="MdeAuthenticationError") as caught:
        MdeListAlertsOperator(task_id="list", data_interval_start=START, data_interval_end=END).execute({})
    assert "wrong-secret-value-123" not in str(caught.value)

    # The service failing (every /ips call answers 5xx): one alert is recorded as 'error'
    # (a poison alert); more than max(2, 10 %) of a batch is an outage, raised so the
    # task's retries apply.
    simulator.configure(fault_5xx=1.0, fault_endpoints=["ips"])
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", connection(simulator, tmp_path, retry_total=0))
    (result,) = MdeFetchAlertIpsOperator(task_id="fetch", batch=batch).execute({})
    assert result["status"] == "error" and "MdeServerError" in result["error"]
    alerts = [{"id": a, "lastUpdateTime": "2026-01-05T00:00:00Z"} for a in list(simulator.ground_truth()["alerts"])[:4]]
    with pytest.raises(MdeTooManyFailedAlertsError) as caught:
        MdeFetchAlertIpsOperator(task_id="fetch", batch=make_batches(alerts)[0]).execute({})
    assert isinstance(caught.value.__cause__, MdeServerError)
