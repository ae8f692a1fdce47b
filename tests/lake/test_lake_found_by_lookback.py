"""``found_by_lookback_at`` (issue 11): which rows a look-back found, and when.

Set on the versions a look-back adds to a committed hour, null on those the hour's own
run listed; kept by reruns that keep versions (the held value wins, so a version found
late stays marked when a rerun lists it); null again after a ``refetch`` (replace
whole); carried by compaction; files from before the column merge and compact alike.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lake_data import sample_listing
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.layout import interval_file, list_day
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, FOUND_BY_LOOKBACK_AT, IP_SCOPE, SCHEMAS
from mde_pipeline.lake.versions import VERSION_COLUMNS, merge_versions

UTC = timezone.utc
H0 = datetime(2024, 7, 1, 6, tzinfo=UTC)
OWN_RUN = H0 + timedelta(hours=1, minutes=5)
LOOKBACK_1 = H0 + timedelta(hours=2, minutes=5)
LOOKBACK_2 = H0 + timedelta(hours=3, minutes=5)
RERUN = H0 + timedelta(hours=9)


def own_run(listed, results, listed_at=OWN_RUN):
    return interval_tables(listed, results, tenant_id="tenant-a", interval_start=H0, listed_at=listed_at)


def lookback(listed, results, found_at):
    return interval_tables(listed, results, tenant_id="tenant-a", interval_start=H0, listed_at=found_at,
                           found_by_lookback_at=found_at)  # fmt: skip


def found(location, table=ALERTS) -> dict[str, datetime | None]:
    """alert id -> found_by_lookback_at of the hour's rows (one value per version)."""
    data = read_interval(location, table, H0)
    pairs = set(zip(data.column("alert_id").to_pylist(), data.column(FOUND_BY_LOOKBACK_AT).to_pylist()))
    assert len(pairs) == len({alert_id for alert_id, _ in pairs}), f"{table}: rows of one version disagree"
    return dict(pairs)


def assert_tables_agree(location):
    by_version = found(location, ALERTS)
    ips = found(location, ALERT_IPS)
    assert ips and all(by_version[alert_id] == value for alert_id, value in ips.items())


@pytest.mark.parametrize("compacted", [False, True])
def test_look_back_rows_carry_its_listing_time_and_keep_it_through_reruns_and_compaction(local_location, compacted):
    listed, results = sample_listing(H0, alerts=12, seed=21)
    on_time, late = listed[:8], listed[8:]
    commit_interval(local_location, H0, own_run(on_time, results[:8]))
    assert set(found(local_location).values()) == {None}

    commit_interval(local_location, H0, lookback(late[:2], results[8:10], LOOKBACK_1), keep_versions=True, only_if_committed=True)
    commit_interval(local_location, H0, lookback(late[2:], results[10:], LOOKBACK_2), keep_versions=True, only_if_committed=True)
    if compacted:
        for table in SCHEMAS:
            compact_day(local_location, table, H0.date().isoformat())
        assert list_day(local_location, ALERTS, H0.date().isoformat()).is_compacted
    expected = {a["id"]: None for a in on_time} | {a["id"]: LOOKBACK_1 for a in late[:2]} | {a["id"]: LOOKBACK_2 for a in late[2:]}
    assert found(local_location) == expected
    assert_tables_agree(local_location)

    # A rerun of the hour listing every version now (keep_versions, as publish does): the
    # late ones keep the look-back's time (the earliest), listed_at is the rerun's.
    commit_interval(local_location, H0, own_run(listed, results, listed_at=RERUN), keep_versions=True)
    assert found(local_location) == expected
    assert_tables_agree(local_location)
    assert set(read_interval(local_location, ALERTS, H0).column("listed_at").to_pylist()) == {RERUN}

    # A rerun whose listing lacks a late version (the alert moved on) keeps its row whole.
    commit_interval(local_location, H0, own_run(listed[:-1], results[:-1], listed_at=RERUN), keep_versions=True)
    assert found(local_location) == expected

    # refetch replaces the hour whole: the fact is lost (documented).
    commit_interval(local_location, H0, own_run(listed, results, listed_at=RERUN))
    assert set(found(local_location).values()) == {None}


def test_a_look_back_refetching_a_version_held_with_ips_error_leaves_it_null(local_location):
    listed, results = sample_listing(H0, alerts=3, seed=22)
    failed = {**results[0], "status": "error", "ips": [], "invalid_ip_values": [], "error": "MdeServerError: 500"}
    commit_interval(local_location, H0, own_run(listed, [failed, *results[1:]]))
    assert results[0]["ips"], "the retried version must have IPs for the alert_ips check below"
    commit_interval(local_location, H0, lookback(listed[:1], results[:1], LOOKBACK_1), keep_versions=True, only_if_committed=True)
    alerts = read_interval(local_location, ALERTS, H0)
    assert "error" not in alerts.column("ips_status").to_pylist()
    # Listed on time: only its IPs came later (fetched_at says when).
    assert set(found(local_location).values()) == {None}
    assert set(found(local_location, ALERT_IPS)) >= {listed[0]["id"]}
    assert set(found(local_location, ALERT_IPS).values()) == {None}


def test_hour_files_from_before_the_column_merge_and_compact_with_nulls(local_location):
    listed, results = sample_listing(H0, alerts=6, seed=23)
    # An hour written before found_by_lookback_at existed (the old schema, as a file on disk;
    # ip_scope came later still).
    for table, data in own_run(listed[:4], results[:4]).items():
        path = local_location.path(interval_file(table, H0))
        local_location.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        pq.write_table(data.drop_columns([c for c in (FOUND_BY_LOOKBACK_AT, IP_SCOPE) if c in data.schema.names]), path)
    commit_interval(local_location, H0, lookback(listed[4:], results[4:], LOOKBACK_1), keep_versions=True, only_if_committed=True)
    assert found(local_location) == {a["id"]: None for a in listed[:4]} | {a["id"]: LOOKBACK_1 for a in listed[4:]}
    # The held rows were rewritten through schema.conform: they got their ip_scope.
    assert read_interval(local_location, ALERT_IPS, H0).column(IP_SCOPE).null_count == 0
    for table in SCHEMAS:
        compact_day(local_location, table, H0.date().isoformat())
    assert found(local_location)[listed[5]["id"]] == LOOKBACK_1
    assert_tables_agree(local_location)


def test_merge_versions_takes_the_held_value_of_every_version_it_holds():
    listed, results = sample_listing(H0, alerts=4, seed=24)
    held = lookback(listed[:2], results[:2], LOOKBACK_1)
    merged = merge_versions(held, own_run(listed, results, listed_at=RERUN))
    for table in SCHEMAS:
        ids = merged[table].column("alert_id").to_pylist()
        values = dict(zip(ids, merged[table].column(FOUND_BY_LOOKBACK_AT).to_pylist()))
        assert values == {a["id"]: LOOKBACK_1 if a in listed[:2] else None for a in listed if a["id"] in ids}
    alerts = merged[ALERTS]
    assert alerts.num_rows == len(set(zip(alerts.column("alert_id").to_pylist(), alerts.column(VERSION_COLUMNS[ALERTS]).to_pylist()))) == 4
    assert pc.sum(merged[ALERTS].column("ip_count")).as_py() == merged[ALERT_IPS].num_rows
