"""The DuckDB views (include/sql/duckdb/views.sql) against an independent computation.

Expected values come from the generator's own tables (pyarrow / Python), not from SQL.
The views must give the same answers on the hourly layout and after compaction.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import pyarrow as pa
import pytest

from mde_pipeline.analytics.session import connect
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.ip_index import build_month_index
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS

from tests.analytics.conftest import DAYS, FIRST_DAY, day_name, small_tables


@pytest.fixture(scope="module")
def generated():
    """Every row the lake should hold, straight from the generator."""
    hours = [FIRST_DAY + timedelta(hours=h) for h in range(DAYS * 24)]
    tables = [small_tables(h) for h in hours]
    return {name: pa.concat_tables([t[name] for t in tables]).to_pylist() for name in SCHEMAS}


def expected_latest_versions(alerts):
    latest = {}
    for row in alerts:
        key = (row["tenant_id"], row["alert_id"])
        latest[key] = max(latest.get(key, row["last_update_time"]), row["last_update_time"])
    return latest


@pytest.fixture(params=["hourly", "compacted", "compacted+ip-index"])
def lake(request, hourly_lake):
    root, location = hourly_lake
    if request.param != "hourly":
        for d in range(DAYS):
            for table in SCHEMAS:
                compact_day(location, table, day_name(d))
    if request.param == "compacted+ip-index":
        assert build_month_index(location, FIRST_DAY.strftime("%Y-%m")) is not None
    connection = connect(str(root))
    # The analyst views read the month index exactly when one is valid.
    definition = connection.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'alert_ips'").fetchone()[0]
    assert ("_ip_index" in definition) == (request.param == "compacted+ip-index")
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


def test_latest_views_keep_only_each_alerts_latest_version(lake, generated):
    latest = expected_latest_versions(generated[ALERTS])
    rows = lake.execute("SELECT tenant_id, alert_id, last_update_time FROM alerts_latest").fetchall()
    assert len(rows) == len(latest)
    assert {(t, a): u for t, a, u in rows} == latest
    updated = sum(1 for row in generated[ALERTS] if latest[(row["tenant_id"], row["alert_id"])] != row["last_update_time"])
    assert updated > 0  # the data has superseded versions, so the view really filters

    expected_ips = sorted(
        (r["alert_id"], r["ip"])
        for r in generated[ALERT_IPS]
        if latest[(r["tenant_id"], r["alert_id"])] == r["alert_last_update_time"]
    )
    assert sorted(lake.execute("SELECT alert_id, ip FROM alert_ips_latest").fetchall()) == expected_ips


def test_alert_ip_details_joins_each_ip_row_to_its_alert_version(lake, generated):
    titles = {(r["alert_id"], r["last_update_time"]): r["title"] for r in generated[ALERTS]}
    rows = lake.execute("SELECT alert_id, alert_last_update_time, ip, title FROM alert_ip_details").fetchall()
    assert len(rows) == len(generated[ALERT_IPS])
    assert all(title == titles[(alert_id, updated)] for alert_id, updated, _, title in rows)


def test_ip_summary_counts_alerts_and_first_and_last_sightings(lake, generated):
    first, last, alerts, high = {}, {}, defaultdict(set), defaultdict(set)
    for r in generated[ALERT_IPS]:
        ip = r["ip"]
        seen = r["alert_creation_time"] or r["alert_last_update_time"]
        first[ip] = min(first.get(ip, seen), seen)
        last[ip] = max(last.get(ip, r["alert_last_update_time"]), r["alert_last_update_time"])
        alerts[ip].add(r["alert_id"])
        if r["severity"] == "High":
            high[ip].add(r["alert_id"])
    rows = lake.execute(
        "SELECT ip, first_seen, last_seen, alert_count, high_severity_alert_count FROM ip_summary"
    ).fetchall()
    assert len(rows) == len(first)
    assert {row[0]: row[1:] for row in rows} == {
        ip: (first[ip], last[ip], len(alerts[ip]), len(high[ip])) for ip in first
    }
    assert max(len(a) for a in alerts.values()) > 1  # some IPs recur across alerts
