"""The fetch through the lake's fetch cache (issue 11): a retry after a failure mid-batch
calls the API only for the alerts not finished; refetch calls for all; failures are not
kept, so the next try asks again."""

from __future__ import annotations

import pytest

from mde_pipeline.airflow.cached_fetch import as_flag, fetch_batch_cached
from mde_pipeline.api.errors import MdeServerError
from mde_pipeline.lake.location import resolve_lake_location


class Crash(RuntimeError):
    """Not a per-alert failure: the task dies (as a kill or an outage would)."""


class FlakyClient:
    def __init__(self, fail_on=(), crash_on=()):
        self.fail_on, self.crash_on = set(fail_on), set(crash_on)
        self.asked = []

    def get_alert_ips(self, alert_id):
        self.asked.append(alert_id)
        if alert_id in self.crash_on:
            raise Crash(alert_id)
        if alert_id in self.fail_on:
            raise MdeServerError("MDE API failed after retries", status=500)
        return ["10.0.0.1"] if alert_id != "gone" else None


def batch_of(*ids):
    return {"batch_index": 0, "batch_count": 1,
            "alerts": [{"alert_id": a, "last_update_time": f"2024-03-10T13:00:0{i}.1234567Z"} for i, a in enumerate(ids)]}


def test_a_retry_fetches_only_what_the_failed_try_did_not_finish(tmp_path):
    lake = resolve_lake_location(str(tmp_path))
    batch = batch_of("a", "gone", "poison", "d")
    first = FlakyClient(crash_on={"poison"})
    with pytest.raises(Crash):
        fetch_batch_cached(first, batch, lake, "tenant-a")
    assert first.asked == ["a", "gone", "poison"]

    # The retry: 'poison' now fails for good (a result with status 'error', not cached).
    second = FlakyClient(fail_on={"poison"})
    failed = fetch_batch_cached(second, batch, lake, "tenant-a")
    assert second.asked == ["poison", "d"]  # only what the crashed try did not finish
    assert [r["status"] for r in failed] == ["ok", "not_found", "error", "ok"]

    again = FlakyClient()
    results = fetch_batch_cached(again, batch, lake, "tenant-a")
    assert again.asked == ["poison"]  # a version that failed for good is tried again
    assert [r["alert_id"] for r in results] == ["a", "gone", "poison", "d"]
    assert [r["status"] for r in results] == ["ok", "not_found", "ok", "ok"]

    third = FlakyClient()
    assert fetch_batch_cached(third, batch, lake, "tenant-a") == results and third.asked == []
    other_tenant = FlakyClient()
    fetch_batch_cached(other_tenant, batch, lake, "tenant-b")
    assert len(other_tenant.asked) == 4

    fresh = FlakyClient()
    fetch_batch_cached(fresh, batch, lake, "tenant-a", refetch=True)
    assert fresh.asked == ["a", "gone", "poison", "d"]


@pytest.mark.parametrize("value, expected", [("True", True), ("false", False), (True, True), ("", False), ("1", True)])
def test_refetch_param_renders_to_a_flag(value, expected):
    assert as_flag(value) is expected


def test_a_lookback_batch_returns_what_it_got_and_leaves_the_rest(tmp_path):
    lake = resolve_lake_location(str(tmp_path))
    batch = batch_of("a", "poison", "c")
    client = FlakyClient(crash_on={"poison"})
    results = fetch_batch_cached(client, batch, lake, "t", partial_on_error=lambda exc: True)
    assert [r["alert_id"] for r in results] == ["a"]
    retry = FlakyClient()
    assert [r["alert_id"] for r in fetch_batch_cached(retry, batch, lake, "t")] == ["a", "poison", "c"]
    assert retry.asked == ["poison", "c"]


def test_a_cache_that_cannot_be_written_costs_a_refetch_later_never_the_batch(tmp_path, monkeypatch, caplog):
    from mde_pipeline.lake import fetch_cache

    def broken_flush(self):
        raise OSError("lake blip")

    monkeypatch.setattr(fetch_cache.CacheRecorder, "flush", broken_flush)
    lake = resolve_lake_location(str(tmp_path))
    results = fetch_batch_cached(FlakyClient(), batch_of("a", "b"), lake, "tenant-a")
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert "could not keep" in caplog.text
    with pytest.raises(Crash):  # the error in flight is the one raised, not the flush's
        fetch_batch_cached(FlakyClient(crash_on={"b"}), batch_of("a", "b"), lake, "tenant-a")


def test_a_late_hour_that_cannot_be_committed_never_fails_the_runs_own_hour(tmp_path, monkeypatch, caplog):
    from datetime import datetime, timezone

    from mde_pipeline.airflow import lookback
    from mde_pipeline.lake.locks import LakeLockTimeout
    from mde_pipeline.lake.staging import write_staging_json

    lake = resolve_lake_location(str(tmp_path))
    start = datetime(2024, 3, 10, 14, tzinfo=timezone.utc)
    late = {"id": "a", "lastUpdateTime": "2024-03-10T13:00:00.1234567Z"}
    document = {"tenant_id": "tenant-a", "listed_at": "2024-03-10T15:05:00+00:00", "batches": [],
                "hours": {"2024-03-10T13:00:00+00:00": [late]}}
    write_staging_json(lake, start, "scheduled__x", lookback.LOOKBACK, document)

    def held(*args, **kwargs):
        raise LakeLockTimeout("lock date=2024-03-10 stayed held by another writer")

    monkeypatch.setattr(lookback, "commit_interval", held)
    from mde_pipeline.airflow import lake_location

    monkeypatch.setattr(lake_location, "configured_retention_days", lambda: None)  # Variable unset: keep everything
    result = {"alert_id": "a", "last_update_time": late["lastUpdateTime"], "status": "ok", "ips": [["10.0.0.1", 4]],
              "invalid_ip_values": [], "fetched_at": "2024-03-10T15:06:00+00:00"}
    added, expired = lookback.publish_lookback({"data_interval_start": start, "run_id": "scheduled__x"}, [result], lake)
    assert (added, expired) == ({}, 0)
    assert "the next look-back retries" in caplog.text and "LakeLockTimeout" in caplog.text


def test_lookback_never_writes_an_hour_retention_removes(tmp_path, monkeypatch, caplog):
    """A late version of an expired hour is counted and logged, never committed (the day
    would come back after retention removed it)."""
    from datetime import datetime, timedelta, timezone

    from mde_pipeline.airflow import lookback
    from mde_pipeline.lake.staging import write_staging_json

    lake = resolve_lake_location(str(tmp_path)).for_tenant("tenant-a")
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start, old, recent = now, now - timedelta(days=40), now - timedelta(hours=3)
    versions = {hour: {"id": f"a{hour.day}", "lastUpdateTime": hour.strftime("%Y-%m-%dT%H:%M:00.1234567Z")} for hour in (old, recent)}
    document = {"tenant_id": "tenant-a", "listed_at": start.isoformat(), "batches": [],
                "hours": {hour.isoformat(): [version] for hour, version in versions.items()}}
    write_staging_json(lake, start, "scheduled__x", lookback.LOOKBACK, document)
    committed = []
    monkeypatch.setattr(lookback, "commit_interval", lambda location, hour, tables, **kw: committed.append(hour) or object())
    results = [{"alert_id": v["id"], "last_update_time": v["lastUpdateTime"], "status": "ok", "ips": [["10.0.0.1", 4]],
                "invalid_ip_values": [], "fetched_at": start.isoformat()} for v in versions.values()]
    added, expired = lookback.publish_lookback({"data_interval_start": start, "run_id": "scheduled__x"}, results, lake, keep_days=30)
    assert committed == [recent] and list(added) == [recent.isoformat()]
    assert expired == 1 and "1 late versions of hours before" in caplog.text
