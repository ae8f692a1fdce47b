"""The fetch cache (issue 11): results kept per alert version as they arrive, found again
by tenant + (id, lastUpdateTime), newest wins, failures not kept, old hours swept."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from mde_pipeline.lake.fetch_cache import CACHE_MIN_IDLE, FetchCache, cache_retention, sweep_fetch_cache, version_key
from mde_pipeline.lake.layout import fetch_cache_path
from mde_pipeline.lake.staging import clear_staging, write_staging_json

UTC = timezone.utc


def result(alert_id, lut, status="ok", fetched_at="2024-07-01T08:00:00+00:00"):
    return {"alert_id": alert_id, "last_update_time": lut, "status": status, "ips": [["10.0.0.1", 4]] if status == "ok" else [],
            "invalid_ip_values": [], "fetched_at": fetched_at}


def entry(alert_id, lut):
    return {"alert_id": alert_id, "last_update_time": lut}


def test_results_are_written_as_they_arrive_and_found_per_version(local_location):
    cache = FetchCache(local_location, "tenant-a")
    recorder = cache.recorder("run-1-0", flush_every=1)
    recorder.add(result("a", "2024-07-01T06:10:00.1234567Z"))
    recorder.add(result("b", "2024-07-01T07:59:59.9999999Z", status="not_found"))
    recorder.add({**result("c", "2024-07-01T06:11:00Z"), "status": "failed"})  # not final: not kept
    # Flushed already (no flush() call): what a SIGKILL right now would leave.
    found = FetchCache(local_location, "tenant-a").lookup(
        [entry("a", "2024-07-01T06:10:00.1234567Z"), entry("a", "2024-07-01T06:10:00.1234568Z"),
         entry("b", "2024-07-01T07:59:59.9999999Z"), entry("c", "2024-07-01T06:11:00Z")]
    )
    assert set(found) == {version_key("a", "2024-07-01T06:10:00.1234567Z"), version_key("b", "2024-07-01T07:59:59.9999999Z")}
    assert FetchCache(local_location, "tenant-b").lookup([entry("a", "2024-07-01T06:10:00.1234567Z")]) == {}
    # Two hours: one part file in each.
    assert local_location.fs.exists(local_location.path(fetch_cache_path("tenant-a", datetime(2024, 7, 1, 7, tzinfo=UTC))))


def test_newest_fetch_wins_and_partial_flushes_count(local_location):
    cache = FetchCache(local_location, "t")
    first = cache.recorder("x", flush_every=10)
    first.add(result("a", "2024-07-01T06:00:00Z"))
    assert cache.lookup([entry("a", "2024-07-01T06:00:00Z")]) == {}  # not flushed yet
    first.flush()
    second = cache.recorder("x", flush_every=1)
    second.add(result("a", "2024-07-01T06:00:00Z", status="empty", fetched_at="2024-07-01T09:00:00+00:00"))
    (only,) = cache.lookup([entry("a", "2024-07-01T06:00:00Z")]).values()
    assert only["status"] == "empty"


def test_sweep_drops_old_idle_hours_only(local_location):
    cache = FetchCache(local_location, "t")
    recorder = cache.recorder("x")
    recorder.add(result("old", "2024-06-01T06:00:00Z"))
    recorder.add(result("new", "2024-07-01T06:00:00Z"))
    cutoff = datetime(2024, 6, 30, tzinfo=UTC)
    now = time.time()
    assert sweep_fetch_cache(local_location, "t", cutoff, lookback=timedelta(0), now=now) == []  # just written
    # idle, but not yet for CACHE_MIN_IDLE (whatever the look-back): kept
    assert sweep_fetch_cache(local_location, "t", cutoff, lookback=timedelta(0), now=now + 47 * 3600) == []
    assert sweep_fetch_cache(local_location, "t", cutoff, lookback=timedelta(0), now=now + CACHE_MIN_IDLE.total_seconds() + 60) == [
        "20240601T06"
    ]
    assert set(cache.lookup([entry("old", "2024-06-01T06:00:00Z"), entry("new", "2024-07-01T06:00:00Z")])) == {
        version_key("new", "2024-07-01T06:00:00Z")
    }


@pytest.mark.parametrize("lookback_hours", [0, 24])
def test_sweep_keeps_the_hours_a_staged_run_may_still_publish(local_location, lookback_hours):
    """A staged run (a backfill running, or failed and still clearable) keeps its own
    hour and the hours its look-back reaches (+1 day), however idle; the rest goes."""
    lookback = timedelta(hours=lookback_hours)
    backfilled = datetime(2024, 6, 1, 6, tzinfo=UTC)
    write_staging_json(local_location, backfilled, "backfill__2024-06-01T06:00:00+00:00", "listing", {"alerts": []})
    recorder = FetchCache(local_location, "t").recorder("x")
    within = backfilled - cache_retention(lookback)
    for hour in (backfilled, within, within - timedelta(hours=1), backfilled + timedelta(hours=1)):
        recorder.add(result(f"a{hour:%d%H}", f"{hour:%Y-%m-%dT%H}:10:00Z"))
    later = time.time() + 30 * 86400  # everything idle for a month
    swept = sweep_fetch_cache(local_location, "t", datetime(2024, 7, 1, tzinfo=UTC), lookback=lookback, now=later)
    assert swept == sorted(f"{h:%Y%m%dT%H}" for h in (within - timedelta(hours=1), backfilled + timedelta(hours=1)))
    # the run published (its folder cleared): its hours go too
    clear_staging(local_location, backfilled)
    swept = sweep_fetch_cache(local_location, "t", datetime(2024, 7, 1, tzinfo=UTC), lookback=lookback, now=later)
    assert swept == sorted(f"{h:%Y%m%dT%H}" for h in (within, backfilled))
