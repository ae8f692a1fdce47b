"""Late versions added to committed hours (issue 11): key columns read per hour, new
versions merged in under the day lock, nothing dropped, one copy per row; hourly files
and compacted days alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc
import pytest

from lake_data import sample_listing
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS
from mde_pipeline.lake.versions import committed_versions, listed_version, missing_versions

UTC = timezone.utc
H0 = datetime(2024, 7, 1, 6, tzinfo=UTC)
H1 = H0 + timedelta(hours=1)


def tables_of(start, listed, results, listed_at=None):
    return interval_tables(listed, results, tenant_id="tenant-a", interval_start=start, listed_at=listed_at or start + timedelta(hours=1))


def versions_of(location, start):
    data = read_interval(location, ALERTS, start)
    return sorted(zip(data.column("alert_id").to_pylist(), data.column("last_update_time").to_pylist()))


@pytest.mark.parametrize("compacted", [False, True])
def test_late_versions_are_added_once_and_nothing_held_is_dropped(local_location, compacted):
    listed, results = sample_listing(H0, alerts=12, seed=1)
    on_time, late = listed[:9], listed[9:]
    commit_interval(local_location, H0, tables_of(H0, on_time, results[:9]))
    if compacted:
        for table in SCHEMAS:
            compact_day(local_location, table, H0.date().isoformat())

    committed = committed_versions(local_location, H0 - timedelta(hours=3), H1 + timedelta(hours=2))
    assert set(committed) == {H0}  # hours never loaded are not "committed"
    assert committed[H0] == {listed_version(a)[1] for a in on_time}

    # The look-back lists the hour again: the 3 late ones, plus one on-time alert that
    # has since moved on (its listed version lies in a later hour, so it is not missing).
    moved = dict(on_time[0], lastUpdateTime="2024-07-01T09:00:00.0000001Z")
    missing = missing_versions([*on_time[1:], *late, moved], committed)
    assert list(missing) == [H0] and [a["id"] for a in missing[H0]] == [a["id"] for a in late]

    found_at = H1 + timedelta(hours=2)
    for _ in range(2):  # idempotent: a second look-back of the same versions adds nothing
        done = commit_interval(
            local_location, H0, tables_of(H0, late, results[9:], listed_at=found_at), keep_versions=True, only_if_committed=True
        )
        assert done is not None
    assert [v[0] for v in versions_of(local_location, H0)] == sorted(a["id"] for a in listed)
    alerts = read_interval(local_location, ALERTS, H0)
    assert alerts.num_rows == 12
    assert pc.sum(pc.equal(alerts.column("listed_at"), found_at)).as_py() == 3  # which rows, and when
    ips = read_interval(local_location, ALERT_IPS, H0)
    assert ips.num_rows == pc.sum(alerts.column("ip_count")).as_py()

    # A rerun of the hour listing all 12 (keep_versions, as publish does) leaves one copy each.
    commit_interval(local_location, H0, tables_of(H0, listed, results), keep_versions=True)
    assert read_interval(local_location, ALERTS, H0).num_rows == 12


def test_a_lookback_leaves_hours_never_loaded_alone(local_location):
    listed, results = sample_listing(H1, alerts=3, seed=2)
    assert commit_interval(local_location, H1, tables_of(H1, listed, results), keep_versions=True, only_if_committed=True) is None
    assert read_interval(local_location, ALERTS, H1) is None


def test_a_rerun_keeps_a_version_the_new_listing_lacks_and_refetch_replaces(local_location):
    listed, results = sample_listing(H0, alerts=4, seed=3)
    commit_interval(local_location, H0, tables_of(H0, listed, results))
    # Alert 0 was updated into a later hour: the rerun's listing no longer carries it.
    commit_interval(local_location, H0, tables_of(H0, listed[1:], results[1:]), keep_versions=True)
    assert read_interval(local_location, ALERTS, H0).num_rows == 4
    commit_interval(local_location, H0, tables_of(H0, listed[1:], results[1:]))  # refetch: replace whole
    assert read_interval(local_location, ALERTS, H0).num_rows == 3


def test_on_adls_late_versions_merge_and_the_fetch_cache_round_trips(abfs_location):
    from mde_pipeline.lake.fetch_cache import FetchCache

    listed, results = sample_listing(H0, alerts=6, seed=4)
    commit_interval(abfs_location, H0, tables_of(H0, listed[:4], results[:4]))
    committed = committed_versions(abfs_location, H0, H1)
    missing = missing_versions(listed, committed)
    assert [a["id"] for a in missing[H0]] == [a["id"] for a in listed[4:]]
    commit_interval(abfs_location, H0, tables_of(H0, listed[4:], results[4:]), keep_versions=True, only_if_committed=True)
    commit_interval(abfs_location, H0, tables_of(H0, listed[4:], results[4:]), keep_versions=True, only_if_committed=True)
    assert read_interval(abfs_location, ALERTS, H0).num_rows == 6

    recorder = FetchCache(abfs_location, "tenant-a").recorder("abfs")
    for result in results:
        recorder.add(result)
    entries = [{"alert_id": r["alert_id"], "last_update_time": r["last_update_time"]} for r in results]
    assert len(FetchCache(abfs_location, "tenant-a").lookup(entries)) == 6


def test_a_version_held_with_ips_error_is_missing_and_a_look_back_replaces_it(local_location):
    listed, results = sample_listing(H0, alerts=3, seed=5)
    failed = {**results[0], "status": "error", "ips": [], "invalid_ip_values": [], "error": "MdeServerError: 500"}
    commit_interval(local_location, H0, tables_of(H0, listed, [failed, *results[1:]]))
    committed = committed_versions(local_location, H0, H1)
    assert committed[H0] == {listed_version(a)[1] for a in listed[1:]}
    missing = missing_versions(listed, committed)
    assert [a["id"] for a in missing[H0]] == [listed[0]["id"]]
    commit_interval(local_location, H0, tables_of(H0, listed[:1], results[:1]), keep_versions=True, only_if_committed=True)
    alerts = read_interval(local_location, ALERTS, H0)
    assert alerts.num_rows == 3 and "error" not in alerts.column("ips_status").to_pylist()
