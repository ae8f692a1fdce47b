"""The month IP index: an exact, IP-sorted copy that is never used once stale."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from mde_pipeline.analyst_cli import connect
from mde_pipeline.lake.compaction import (
    INDEX_DIR,
    build_month_index,
    closed_months_to_index,
    compact_day,
    publish_interval_into_compacted_day,
    valid_month_indexes,
)
from mde_pipeline.lake.schema import ALERT_IPS, ROW_KEYS, SCHEMAS
from mde_pipeline.lake.writer import interval_file, lake_parquet_bytes, write_files_atomic

from tests.analytics.conftest import DAYS, FIRST_DAY, day_name, small_tables

MONTH = FIRST_DAY.strftime("%Y-%m")
HOUR = FIRST_DAY + timedelta(days=1, hours=5)
KEYS = ", ".join(ROW_KEYS[ALERT_IPS])


def compact_all(location) -> None:
    for d in range(DAYS):
        for table in SCHEMAS:
            compact_day(location, table, day_name(d))


def lake_ips(root: Path) -> list[tuple]:
    """alert_ips as the day files hold it (the truth the index must copy)."""
    return duckdb.connect().execute(
        f"SELECT {KEYS}, severity, interval_start FROM read_parquet('{root}/alert_ips/*/*.parquet') ORDER BY {KEYS}"
    ).fetchall()


def view_ips(root: Path) -> list[tuple]:
    return connect(str(root)).execute(f"SELECT {KEYS}, severity, interval_start FROM alert_ips ORDER BY {KEYS}").fetchall()


def test_index_is_an_ip_sorted_copy_of_the_compacted_month(hourly_lake):
    root, location = hourly_lake
    assert build_month_index(location, MONTH) is None  # days still hourly: nothing to index
    compact_all(location)

    index = build_month_index(location, MONTH)

    assert index.days == tuple(day_name(d) for d in range(DAYS))
    path = Path(index.uri)
    assert path.is_relative_to(root / INDEX_DIR)
    data = pq.read_table(path)
    ips = data.column("ip").to_pylist()
    assert ips == sorted(ips) and data.num_rows == index.rows == len(lake_ips(root))
    assert [i.month for i in valid_month_indexes(location)] == [MONTH]
    assert view_ips(root) == lake_ips(root)
    # Table globs never see the index (no double counting for any engine).
    assert duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{root}/alert_ips/*/*.parquet')").fetchone()[0] == index.rows


def test_a_rerun_into_the_month_drops_the_index_and_the_views_stay_exact(hourly_lake):
    root, location = hourly_lake
    compact_all(location)
    build_month_index(location, MONTH)
    open_session = connect(str(root))

    publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, small_tables(HOUR, 1)[ALERT_IPS])

    assert valid_month_indexes(location) == []
    assert not list((root / INDEX_DIR).rglob("*.parquet"))
    assert view_ips(root) == lake_ips(root)
    # A session opened before the rerun fails loudly instead of returning stale rows.
    try:
        open_session.execute("SELECT count(*) FROM alert_ips WHERE ip = '10.0.0.1'").fetchall()
    except duckdb.IOException:
        pass
    else:
        raise AssertionError("a session holding a dropped index must not read on")
    # The next compaction run builds it again.
    assert build_month_index(location, MONTH) is not None and view_ips(root) == lake_ips(root)


def test_an_index_made_stale_behind_its_back_is_ignored(hourly_lake):
    """A writer that bypassed the hook: the index no longer matches the day files."""
    root, location = hourly_lake
    compact_all(location)
    build_month_index(location, MONTH)
    rerun = small_tables(HOUR, 2)[ALERT_IPS]
    write_files_atomic(location, {interval_file(ALERT_IPS, HOUR): lake_parquet_bytes(ALERT_IPS, rerun)})
    # Folded in by compaction (which also drops the index), but even before that:
    assert valid_month_indexes(location) == []
    assert view_ips(root) != []


def test_only_months_that_ended_are_indexed(hourly_lake):
    root, location = hourly_lake
    compact_all(location)
    assert closed_months_to_index(location, closed_before=datetime(2025, 3, 31, 23, tzinfo=timezone.utc)) == []
    assert closed_months_to_index(location, closed_before=datetime(2025, 4, 1, tzinfo=timezone.utc)) == [MONTH]
    build_month_index(location, MONTH)
    assert closed_months_to_index(location, closed_before=datetime(2025, 4, 1, tzinfo=timezone.utc)) == []
