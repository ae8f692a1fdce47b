"""The DAG's staging area, on a local lake and on Azurite."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from lake_data import duckdb_read, hourly_intervals, same_rows, sample_interval, sample_listing

from mde_pipeline.lake.schema import ALERT_IPS
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.layout import sanitize_run_id, staging_path
from mde_pipeline.lake.storage import write_files_atomic
from mde_pipeline.lake.staging import StagingNotFoundError, clear_staging, read_staging_json, write_staging_json

START = datetime(2024, 7, 1, 5, tzinfo=timezone.utc)
SCHEDULED = "scheduled__2024-07-01T05:00:00+00:00"
BACKFILL = "backfill__2024-07-01T05:00:00+00:00"


@pytest.fixture(params=["local", pytest.param("abfs", marks=pytest.mark.slow)])
def location(request):
    return request.getfixturevalue(f"{request.param}_location")


def staged_names(location, interval_start, run_id):
    """What a run has staged (file names), as a reader of the folder sees it."""
    location.fs.invalidate_cache()
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in location.fs.ls(location.path(staging_path(interval_start, run_id)), detail=False))
    except FileNotFoundError:
        return []


def test_staged_json_round_trip_keeps_the_services_strings(location):
    listed, results = sample_listing(START)
    listed[0]["title"] = "ünïcode \u2028 and \"quotes\""
    uri = write_staging_json(location, START, SCHEDULED, "listing", {"alerts": listed, "listed_at": "2024-07-01T06:00:00.1234567Z"})
    assert uri == location.uri(f"_staging/20240701T05/{sanitize_run_id(SCHEDULED)}/listing.json")
    document = read_staging_json(location, START, SCHEDULED, "listing")
    assert document == {"alerts": listed, "listed_at": "2024-07-01T06:00:00.1234567Z"}
    assert document["alerts"][0]["lastUpdateTime"].endswith("Z") and len(document["alerts"][0]["lastUpdateTime"]) == 28


def test_rewriting_a_staged_name_replaces_it(location):
    write_staging_json(location, START, SCHEDULED, "ips-0001", [1, 2, 3])
    write_staging_json(location, START, SCHEDULED, "ips-0001", [4])
    assert read_staging_json(location, START, SCHEDULED, "ips-0001") == [4]
    assert staged_names(location, START, SCHEDULED) == ["ips-0001.json"]


def test_runs_of_one_interval_are_isolated_and_cleared_separately(location):
    for run_id, rows in ((SCHEDULED, [1]), (BACKFILL, [2, 2])):
        for name in ("ips-0000", "listing"):
            write_staging_json(location, START, run_id, name, rows)
    assert staged_names(location, START, SCHEDULED) == ["ips-0000.json", "listing.json"]
    assert read_staging_json(location, START, BACKFILL, "listing") == [2, 2]
    clear_staging(location, START, SCHEDULED)
    assert staged_names(location, START, SCHEDULED) == []
    assert staged_names(location, START, BACKFILL) == ["ips-0000.json", "listing.json"]
    clear_staging(location, START)  # every run of the interval
    assert staged_names(location, START, BACKFILL) == []
    clear_staging(location, START)  # clearing nothing is fine


def test_missing_staged_files_are_clear_errors(location):
    with pytest.raises(StagingNotFoundError, match="listing"):
        read_staging_json(location, START, SCHEDULED, "listing")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "_x", "x" * 200, None])
def test_bad_staging_names_are_refused(local_location, name):
    with pytest.raises(ValueError):
        write_staging_json(local_location, START, SCHEDULED, name, [1])


def test_staging_is_invisible_to_table_readers(location):
    write_staging_json(location, START, SCHEDULED, "alert_ips", [1])
    committed = sample_interval(START - timedelta(hours=1), seed=4)
    commit_interval(location, START - timedelta(hours=1), committed)
    assert hourly_intervals(location, ALERT_IPS) == [START - timedelta(hours=1)]
    assert same_rows(duckdb_read(location, ALERT_IPS).drop_columns(["date"]).cast(committed[ALERT_IPS].schema), committed[ALERT_IPS])


def test_sweep_removes_failed_runs_staging_after_the_documented_age(location):
    """A failed run's staged listing goes once its newest file is older than the age
    (7 days by default); younger runs and the compaction staging stay."""
    import time

    from mde_pipeline.lake.staging import STAGING_MAX_AGE, sweep_staging

    assert STAGING_MAX_AGE == timedelta(days=7)
    later = START + timedelta(hours=1)
    write_staging_json(location, START, SCHEDULED, "listing", {"alerts": [{"relatedUser": {"userName": "alice"}}]})
    write_staging_json(location, later, BACKFILL, "listing", {"alerts": []})
    write_files_atomic(location, {"_staging/compaction/alerts/date=2024-07-01/x/_compaction.json": b"{}"})
    now = time.time()
    assert sweep_staging(location, now=now) == []  # just written: kept
    removed = sweep_staging(location, now=now + STAGING_MAX_AGE.total_seconds() + 60)
    assert sorted(removed) == sorted(location.uri(staging_path(s, r)) for s, r in ((START, SCHEDULED), (later, BACKFILL)))
    assert staged_names(location, START, SCHEDULED) == [] and staged_names(location, later, BACKFILL) == []
    location.fs.invalidate_cache()
    assert location.fs.exists(location.path("_staging/compaction/alerts/date=2024-07-01/x/_compaction.json"))


def test_compaction_step_sweeps_old_staging(local_location):
    from mde_pipeline.lake.compaction import compaction_step

    write_staging_json(local_location, START, SCHEDULED, "listing", {"alerts": []})
    summary = compaction_step(local_location, closed_before=START, staging_max_age=timedelta(0))
    assert summary["staging_swept"] == 1
    assert staged_names(local_location, START, SCHEDULED) == []


def test_a_restaged_run_keeps_its_folder_and_drops_its_other_documents(local_location):
    from mde_pipeline.lake.staging import staged_intervals

    write_staging_json(local_location, START, SCHEDULED, "listing", {"alerts": [1]})
    write_staging_json(local_location, START, SCHEDULED, "lookback", {"hours": {}})
    assert staged_intervals(local_location) == [START]
    write_staging_json(local_location, START, SCHEDULED, "listing", {"alerts": [2]})
    clear_staging(local_location, START, SCHEDULED, keep=("listing",))
    assert staged_names(local_location, START, SCHEDULED) == ["listing.json"]
    assert read_staging_json(local_location, START, SCHEDULED, "listing") == {"alerts": [2]}
    clear_staging(local_location, START, SCHEDULED)
    assert staged_intervals(local_location) == []


@pytest.mark.parametrize("backend", ["local", pytest.param("abfs", marks=pytest.mark.slow)])
def test_compaction_sweeps_every_tenant_folder_under_staging(request, backend):
    """Tenants that never committed (every run failed) or left Variable mde_tenants keep a
    `_staging/tenant_id=` folder only: the compaction step sweeps their failed runs'
    staging and their idle fetch cache too, and leaves a live run's cache."""
    import time

    from mde_pipeline.lake.compaction import compaction_step
    from mde_pipeline.lake.fetch_cache import FetchCache
    from mde_pipeline.lake.layout import fetch_cache_path
    from mde_pipeline.lake.sweeps import sweep_every_tenant_staging
    from mde_pipeline.lake.tenants import lake_tenants, replace_tenant, staged_tenants

    committed = request.getfixturevalue(f"{backend}_location")
    root = replace_tenant(committed, None)
    commit_interval(committed, START, sample_interval(START, alerts=2))
    never, removed = root.for_tenant("tenant-never-committed"), root.for_tenant("tenant-removed")
    for tenant in (never, removed, committed):
        write_staging_json(tenant, START, SCHEDULED, "listing", {"alerts": [{"relatedUser": {"userName": "alice"}}]})
        FetchCache(tenant, tenant.tenant_id).recorder("x").add({
            "alert_id": "a", "last_update_time": "2024-06-20T06:10:00Z", "status": "empty", "ips": [],
            "invalid_ip_values": [], "fetched_at": "2024-06-20T06:20:00+00:00",
        })
    assert lake_tenants(root) == [committed.tenant_id]
    assert staged_tenants(root) == sorted(t.tenant_id for t in (never, removed, committed))

    # Just written: nothing goes (the failed runs are younger than the age, the cache is not idle).
    assert sweep_every_tenant_staging(root, now=START) == {"staging_swept": 0, "fetch_cache_swept": 0, "retired_swept": 0}
    in_a_week = time.time() + 8 * 86400
    swept = sweep_every_tenant_staging(root, now=START, wall_clock=in_a_week)
    assert swept == {"staging_swept": 3, "fetch_cache_swept": 3, "retired_swept": 0}
    root.fs.invalidate_cache()
    for tenant in (never, removed, committed):
        assert staged_names(tenant, START, SCHEDULED) == []
        assert not tenant.fs.exists(tenant.path(fetch_cache_path(tenant.tenant_id, datetime(2024, 6, 20, 6, tzinfo=timezone.utc))))
    if backend == "local":  # the compaction step runs it, with its own summary
        write_staging_json(never, START, SCHEDULED, "listing", {"alerts": []})
        summary = compaction_step(root, closed_before=START, staging_max_age=timedelta(0))
        assert (summary["staging_swept"], summary["fetch_cache_swept"]) == (1, 0)
