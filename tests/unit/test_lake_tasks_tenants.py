"""The DAG's lake steps find the tenant's part of the lake from the connection (Variable
mde_tenants gives each tenant DAG its own connection mde_<name>)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from mde_pipeline.airflow.lake_tasks import publish_interval, stage_listing
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.recent_index import valid_recent_index

START = datetime(2026, 3, 2, 7, tzinfo=timezone.utc)
CONTEXT = {"data_interval_start": START, "run_id": "scheduled__2026-03-02T07:00:00+00:00", "params": {}}


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_ROOT", str(tmp_path / "lake"))
    for name, tenant in (("EAST", "tenant-east"), ("WEST", "tenant-west")):
        monkeypatch.setenv(f"AIRFLOW_CONN_MDE_{name}", json.dumps({
            "conn_type": "http", "host": "https://127.0.0.1:9", "login": "client", "password": "not-used",
            "extra": {"tenant_id": tenant},
        }))
    return resolve_lake_location(tmp_path / "lake")


def listing(tenant: str) -> dict:
    return {"tenant_id": tenant, "listed_at": "2026-03-02T08:05:00+00:00", "alerts": []}


def test_publish_commits_into_the_partition_of_its_connections_tenant(lake, tmp_path):
    stage_listing(listing("tenant-east"), CONTEXT, lake.for_tenant("tenant-east"))
    summary = publish_interval(CONTEXT, [], mde_conn_id="mde_east")
    expected = {table: str(tmp_path / "lake" / table / "tenant_id=tenant-east" / "date=2026-03-02" / "interval=20260302T07.parquet")
                for table in ("alerts", "alert_ips")}
    assert summary["files"] == expected and summary["rows"] == {"alerts": 0, "alert_ips": 0}
    assert not (tmp_path / "lake" / "alerts" / "tenant_id=tenant-west").exists()
    # The run's staging (in the tenant's part) is cleared once committed.
    assert not list((tmp_path / "lake" / "_staging").rglob("listing.json"))
    # Then the tenant's recent IP index covers the hour's day (lake/recent_index.py).
    assert valid_recent_index(lake.for_tenant("tenant-east")).days == ("2026-03-02",)


def test_publish_of_another_tenant_finds_no_listing_and_commits_nothing(lake, tmp_path):
    from mde_pipeline.lake.staging import StagingNotFoundError

    stage_listing(listing("tenant-east"), CONTEXT, lake.for_tenant("tenant-east"))
    with pytest.raises(StagingNotFoundError):
        publish_interval(CONTEXT, [], mde_conn_id="mde_west")
    assert not (tmp_path / "lake" / "alerts").exists()


def test_publish_refuses_a_listing_of_another_tenant_in_its_partition(lake, tmp_path):
    stage_listing(listing("tenant-west"), CONTEXT, lake.for_tenant("tenant-east"))
    with pytest.raises(ValueError, match="staged listing of tenant 'tenant-west' found in the lake part of tenant 'tenant-east'"):
        publish_interval(CONTEXT, [], mde_conn_id="mde_east")
    assert not (tmp_path / "lake" / "alerts").exists()


def test_publish_with_the_look_back_off_keeps_the_cache_runs_may_still_publish(lake, monkeypatch):
    """MDE_ALERT_IPS_LOOKBACK_HOURS=0: a publish of the current hour keeps the cache of a
    3-day-old hour a running backfill wrote (and of a failed run's hour, still clearable),
    and sweeps an idle old hour no staged run covers."""
    import os
    import time
    from datetime import timedelta

    from mde_pipeline.airflow import settings
    from mde_pipeline.lake.fetch_cache import FetchCache
    from mde_pipeline.lake.layout import fetch_cache_path

    monkeypatch.setattr(settings, "LOOKBACK", timedelta(0))
    east = lake.for_tenant("tenant-east")
    cache = FetchCache(east, "tenant-east")
    running, failed, idle = (START - timedelta(days=d) for d in (3, 4, 6))
    for hour in (running, failed, idle):
        cache.recorder(f"run-{hour:%d}").add({
            "alert_id": f"a{hour:%d}", "last_update_time": f"{hour:%Y-%m-%dT%H}:10:00.1234567Z", "status": "ok",
            "ips": [["10.0.0.1", 4]], "invalid_ip_values": [], "fetched_at": f"{hour:%Y-%m-%dT%H}:20:00+00:00",
        })
    for hour in (running, failed):  # both have listed their hour (the failed one three days ago)
        stage_listing(listing("tenant-east"), {**CONTEXT, "data_interval_start": hour, "run_id": f"backfill__{hour:%d}"}, east)
    days_ago = time.time() - 3 * 86400
    for hour in (failed, idle):
        for path in east.fs.find(east.path(fetch_cache_path("tenant-east", hour))):
            os.utime(path, (days_ago, days_ago))

    stage_listing(listing("tenant-east"), CONTEXT, east)
    publish_interval(CONTEXT, [], mde_conn_id="mde_east")
    east.fs.invalidate_cache()
    kept = {hour for hour in (running, failed, idle) if east.fs.exists(east.path(fetch_cache_path("tenant-east", hour)))}
    assert kept == {running, failed}


GUID = "6a1f0c2e-4b7d-4e9a-8c3f-1d2e3f4a5b6c"


class ListedTenant:
    """The task instance's XCom as publish sees it: what list_alerts pushed."""

    def __init__(self, tenant):
        self.tenant, self.pulled = tenant, []

    def xcom_pull(self, *, task_ids, key):
        self.pulled.append((task_ids, key))
        return self.tenant


@pytest.fixture
def spelled(monkeypatch):
    for name, tenant in (("UPPER", GUID.upper()), ("DOMAIN", "fabrikam.onmicrosoft.com")):
        monkeypatch.setenv(f"AIRFLOW_CONN_MDE_{name}", json.dumps({
            "conn_type": "http", "host": "https://127.0.0.1:9", "login": "client", "password": "not-used",
            "extra": {"tenant_id": tenant},
        }))


def test_a_connection_with_an_upper_case_guid_publishes_into_the_lower_case_partition(lake, spelled, tmp_path):
    from mde_pipeline.airflow.hooks import connection_tenant_id

    assert connection_tenant_id("mde_upper") == GUID
    stage_listing(listing(GUID), CONTEXT, lake.for_tenant(GUID.upper()))
    summary = publish_interval(CONTEXT, [], mde_conn_id="mde_upper")
    assert f"tenant_id={GUID}/" in summary["files"]["alerts"]
    assert [p.name for p in (tmp_path / "lake" / "alerts").iterdir()] == [f"tenant_id={GUID}"]


def test_a_domain_named_connection_publishes_with_the_tenant_list_alerts_resolved(lake, spelled, tmp_path):
    from mde_pipeline.airflow.hooks import MdeConfigurationError, connection_tenant_id

    with pytest.raises(MdeConfigurationError, match="domain name"):
        connection_tenant_id("mde_domain")  # no network call to learn its GUID here
    stage_listing(listing(GUID), CONTEXT, lake.for_tenant(GUID))
    ti = ListedTenant(GUID)
    summary = publish_interval({**CONTEXT, "ti": ti}, [], mde_conn_id="mde_domain")
    assert ti.pulled == [("list_alerts", "tenant_id")]
    assert f"tenant_id={GUID}/" in summary["files"]["alerts"]
