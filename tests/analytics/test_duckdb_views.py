"""The DuckDB views (include/sql/duckdb/views.sql) against an independent computation.

Expected values come from the generator's own tables (pyarrow / Python), not from SQL.
The views must give the same answers on the hourly layout and after compaction, over a
lake of two tenants that share alert ids, and keep the tenants apart.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from mde_pipeline.analytics.session import LakeSessionError, connect
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.ip_index import build_month_index
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS

from tests.analytics.conftest import (
    DAYS, FIRST_DAY, TENANT, TENANT_DATA, day_name, small_tables, tenant_dir, tenant_hours,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated():
    """Every row the lake should hold, straight from the generator."""
    tables = [small_tables(h, tenant_id=t) for t in TENANT_DATA for h in tenant_hours(t)]
    return {name: pa.concat_tables([t[name] for t in tables]).to_pylist() for name in SCHEMAS}


def expected_latest_versions(alerts):
    latest = {}
    for row in alerts:
        key = (row["tenant_id"], row["alert_id"])
        latest[key] = max(latest.get(key, row["last_update_time"]), row["last_update_time"])
    return latest


@pytest.fixture(params=["hourly", "compacted", "compacted+ip-index"])
def lake(request, hourly_lake):
    root, _ = hourly_lake
    lake_root = resolve_lake_location(str(root))
    if request.param != "hourly":
        for tenant, (_, days) in TENANT_DATA.items():
            for d in days:
                for table in SCHEMAS:
                    compact_day(lake_root.for_tenant(tenant), table, day_name(d))
    if request.param == "compacted+ip-index":
        for tenant in TENANT_DATA:
            assert build_month_index(lake_root.for_tenant(tenant), FIRST_DAY.strftime("%Y-%m")) is not None
    connection = connect(str(root))
    # The analyst views read the month index exactly when one is valid.
    definition = connection.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'alert_ips'").fetchone()[0]
    assert ("_ip_index" in definition) == (request.param == "compacted+ip-index")
    connection.root = root  # for the tests that count files
    return connection


def test_base_views_hold_every_row_with_the_partition_date(lake, generated):
    for table in SCHEMAS:
        assert lake.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == len(generated[table])
    mismatched = lake.execute(
        "SELECT count(*) FROM alert_ips WHERE date <> CAST(interval_start AT TIME ZONE 'UTC' AS DATE)"
    ).fetchone()[0]
    assert mismatched == 0
    assert lake.execute("SELECT min(date), max(date) FROM alerts").fetchone() == (
        FIRST_DAY.date(), (FIRST_DAY + timedelta(days=DAYS - 1)).date()
    )


def files_read(connection, sql: str, profile) -> int:
    """How many Parquet files DuckDB opened for ``sql`` (its JSON profile). ``sql`` must
    read column data: a bare count(*) may be answered from cached footers, with no scan."""
    connection.execute("PRAGMA enable_profiling = 'json'")
    connection.execute(f"SET profiling_output = '{profile}'")
    try:
        connection.execute(sql).fetchall()
    finally:
        connection.execute("PRAGMA disable_profiling")
    total, stack = 0, [json.loads(profile.read_text())]
    while stack:
        node = stack.pop()
        info = node.get("extra_info") or {}
        if info.get("Function") == "READ_PARQUET":
            total += int(info["Total Files Read"])
        stack += node.get("operator", []) + node.get("children", [])
    return total


def test_each_tenant_reads_exactly_its_own_rows_and_files(lake, generated, tmp_path):
    """``tenant_id`` is a partition column: a filter on it gives that tenant's rows, all of
    them and no other, though both tenants use the same alert ids; and DuckDB prunes by it:
    the other tenant's day (and index) files stay shut."""
    for table in SCHEMAS:
        assert lake.execute(f"SELECT typeof(tenant_id) FROM {table} LIMIT 1").fetchone() == ("VARCHAR",)
        keys = "tenant_id, alert_id, " + ("ip, alert_last_update_time" if table == ALERT_IPS else "last_update_time")
        for tenant in TENANT_DATA:
            expected = sorted(
                tuple(row[k.strip()] for k in keys.split(",")) for row in generated[table] if row["tenant_id"] == tenant
            )
            assert expected
            assert sorted(lake.execute(f"SELECT {keys} FROM {table} WHERE tenant_id = ?", [tenant]).fetchall()) == expected
    shared = lake.execute(
        "SELECT count(*) FROM (SELECT alert_id FROM alerts GROUP BY alert_id HAVING count(DISTINCT tenant_id) = 2)"
    ).fetchone()[0]
    assert shared > 0  # the same alert ids in both tenants: the views must not mix them

    profile = tmp_path / "profile.json"
    counts = {}
    for tenant in TENANT_DATA:
        # Every day is in the index when there is one (the fixture indexes all of them).
        index = list(tenant_dir(lake.root, "_ip_index", tenant).rglob("*.parquet"))
        own = index or list(tenant_dir(lake.root, ALERT_IPS, tenant).rglob("*.parquet"))
        counts[tenant] = files_read(lake.connection, f"SELECT count(DISTINCT ip) FROM alert_ips WHERE tenant_id = '{tenant}'", profile)
        assert counts[tenant] == len(own) > 0, tenant
    # The count can fail: unfiltered, both tenants' files are read.
    assert files_read(lake.connection, "SELECT count(DISTINCT ip) FROM alert_ips", profile) == sum(counts.values())


def test_latest_views_keep_only_each_alerts_latest_version(lake, generated):
    latest = expected_latest_versions(generated[ALERTS])
    rows = lake.execute("SELECT tenant_id, alert_id, last_update_time FROM alerts_latest").fetchall()
    assert len(rows) == len(latest)
    assert {(t, a): u for t, a, u in rows} == latest
    updated = sum(1 for row in generated[ALERTS] if latest[(row["tenant_id"], row["alert_id"])] != row["last_update_time"])
    assert updated > 0  # the data has superseded versions, so the view really filters

    expected_ips = sorted(
        (r["tenant_id"], r["alert_id"], r["ip"])
        for r in generated[ALERT_IPS]
        if latest[(r["tenant_id"], r["alert_id"])] == r["alert_last_update_time"]
    )
    assert sorted(lake.execute("SELECT tenant_id, alert_id, ip FROM alert_ips_latest").fetchall()) == expected_ips


def test_alert_ip_details_joins_each_ip_row_to_its_alert_version(lake, generated):
    titles = {(r["tenant_id"], r["alert_id"], r["last_update_time"]): r["title"] for r in generated[ALERTS]}
    rows = lake.execute("SELECT tenant_id, alert_id, alert_last_update_time, ip, title FROM alert_ip_details").fetchall()
    assert len(rows) == len(generated[ALERT_IPS])
    assert all(title == titles[(tenant, alert_id, updated)] for tenant, alert_id, updated, _, title in rows)


def test_ip_summary_counts_alerts_and_first_and_last_sightings(lake, generated):
    first, last, alerts, high = {}, {}, defaultdict(set), defaultdict(set)
    for r in generated[ALERT_IPS]:
        key = (r["tenant_id"], r["ip"])
        seen = r["alert_creation_time"] or r["alert_last_update_time"]
        first[key] = min(first.get(key, seen), seen)
        last[key] = max(last.get(key, r["alert_last_update_time"]), r["alert_last_update_time"])
        alerts[key].add(r["alert_id"])
        if r["severity"] == "High":
            high[key].add(r["alert_id"])
    rows = lake.execute(
        "SELECT tenant_id, ip, first_seen, last_seen, alert_count, high_severity_alert_count FROM ip_summary"
    ).fetchall()
    assert len(rows) == len(first)
    assert {row[:2]: row[2:] for row in rows} == {
        key: (first[key], last[key], len(alerts[key]), len(high[key])) for key in first
    }
    assert max(len(a) for a in alerts.values()) > 1  # some IPs recur across alerts


def analysts_query(marker: str) -> str:
    """The SQL block of docs/ANALYSTS.md whose first line is ``-- <marker>``."""
    blocks = re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "ANALYSTS.md").read_text(), flags=re.DOTALL)
    found = [b for b in blocks if b.startswith(f"-- {marker}\n")]
    assert len(found) == 1, f"docs/ANALYSTS.md: one sql block starting with -- {marker}"
    return found[0]


def commit_hour(location, start: datetime, alerts: list[tuple[str, str, int, list[str]]]) -> None:
    """One hour committed as the DAG does (records.interval_tables): (id, severity,
    minute of lastUpdateTime, IPs) per alert."""
    listed, results = [], []
    for alert_id, severity, minute, ips in alerts:
        updated = f"{start + timedelta(minutes=minute):%Y-%m-%dT%H:%M:%S}.1234567Z"
        listed.append({"id": alert_id, "severity": severity, "lastUpdateTime": updated})
        results.append({"alert_id": alert_id, "last_update_time": updated, "status": "ok", "invalid_ip_values": [],
                        "ips": [[ip, 6 if ":" in ip else 4] for ip in ips], "fetched_at": start + timedelta(hours=1)})  # fmt: skip
    commit_interval(location, start, interval_tables(listed, results, tenant_id=TENANT, interval_start=start, listed_at=start))


def test_the_documented_public_ips_of_high_alerts_query(hourly_lake):
    """docs/ANALYSTS.md's example as written, "today" pinned: the global IPs of the High
    alert versions of the last 7 days, from rows the pipeline's records built."""
    root, location = hourly_lake
    today = datetime(2025, 3, 20, tzinfo=timezone.utc)  # the generated days are weeks before
    commit_hour(location, today + timedelta(hours=9), [
        ("a1", "High", 10, ["8.8.8.8", "10.0.0.5", "2606:4700::1111", "192.0.2.7", "100.64.1.1", "fe80::1", "127.0.0.1"]),
        ("a2", "High", 20, ["8.8.8.8", "9.9.9.9", "fd00::1", "2001:db8::5"]),
        ("a3", "Low", 30, ["1.1.1.1", "8.8.8.8"]),
    ])  # fmt: skip
    commit_hour(location, today - timedelta(days=7, hours=-9), [("a4", "High", 0, ["8.8.4.4"])])  # the week before
    sql = analysts_query("public IPs of High alerts this week").replace("current_date", f"DATE '{today:%Y-%m-%d}'")
    at = lambda minute: today + timedelta(hours=9, minutes=minute, microseconds=123456)  # noqa: E731
    expected = [(TENANT, "8.8.8.8", 2, at(20)), (TENANT, "2606:4700::1111", 1, at(10)), (TENANT, "9.9.9.9", 1, at(20))]
    with connect(str(root)) as session:
        assert session.execute(sql).fetchall() == expected
    for day in (today, today - timedelta(days=7)):
        for table in SCHEMAS:
            compact_day(location, table, f"{day:%Y-%m-%d}")
    with connect(str(root)) as session:
        assert session.execute(sql).fetchall() == expected
        scopes = dict(session.execute("SELECT ip, ip_scope FROM alert_ip_details WHERE alert_id = 'a1'").fetchall())
    assert scopes == {"8.8.8.8": "global", "10.0.0.5": "private", "2606:4700::1111": "global", "192.0.2.7": "documentation",
                      "100.64.1.1": "shared", "fe80::1": "link_local", "127.0.0.1": "loopback"}  # fmt: skip


def test_a_lake_from_before_tenants_is_refused_with_the_migration(tmp_path):
    legacy = tmp_path / "legacy" / ALERTS / f"date={day_name(0)}"
    legacy.mkdir(parents=True)
    (legacy / "interval=20250301T00.parquet").write_bytes(b"old layout")
    with pytest.raises(LakeSessionError, match="migrate_lake --tenant-id"):
        connect(str(tmp_path / "legacy"))


def test_a_tenants_location_is_not_a_session(hourly_lake):
    _, tenant_location = hourly_lake
    with pytest.raises(LakeSessionError, match=f"tenant_id = '{TENANT}'"):
        connect(tenant_location)
