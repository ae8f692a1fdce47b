"""A lake holding hourly files from before an added column (schema.ADDED_COLUMNS, e.g.
``found_by_lookback_at``, ``ip_scope``) next to newer ones: the analyst views read both,
the old rows with nulls there, from the day files and next to the IP index alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mde_pipeline.analytics.session import connect
from mde_pipeline.common.ip_scope import ip_scope
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.ip_index import build_month_index
from mde_pipeline.lake.layout import interval_file
from mde_pipeline.lake.schema import ADDED_COLUMNS, ALERT_IPS, FOUND_BY_LOOKBACK_AT, IP_SCOPE, SCHEMAS

from bench.lake_queries import TENANT
from tests.analytics.conftest import DAYS, FIRST_DAY, day_name, small_tables

LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
FOUND_AT = datetime(2025, 3, 4, 1, 5, tzinfo=timezone.utc)


def counts(session, table: str) -> tuple[int, int]:
    return session.execute(f"SELECT count(*), count({FOUND_BY_LOOKBACK_AT}) FROM {table}").fetchone()


@pytest.mark.parametrize("use_ip_index", [False, True])
def test_views_read_files_from_before_an_added_column_with_nulls_there(hourly_lake, use_ip_index):
    root, location = hourly_lake
    # Writers work on the tenant's part of the lake; the views read the whole lake.
    location = location if location.tenant_id else location.for_tenant(TENANT)
    with connect(str(root), use_ip_index=False) as session:
        totals = {table: counts(session, table)[0] for table in SCHEMAS}
    # The last day: hours 0-5 as an older writer left them, hour 6 found by a look-back.
    for hour in range(6):
        start = LAST_DAY + timedelta(hours=hour)
        for table in SCHEMAS:
            path = location.path(interval_file(table, start))
            pq.write_table(pq.read_table(path).drop_columns(list(ADDED_COLUMNS[table])), path)
    start = LAST_DAY + timedelta(hours=6)
    marked = {}
    for table, data in small_tables(start).items():
        column = data.schema.get_field_index(FOUND_BY_LOOKBACK_AT)
        marked[table] = data.set_column(column, data.schema.field(column), pa.repeat(pa.scalar(FOUND_AT, data.schema.field(column).type), data.num_rows))
    commit_interval(location, start, marked)
    if use_ip_index:  # the other days from the index, the mixed day from its files
        for d in range(DAYS - 1):
            for table in SCHEMAS:
                compact_day(location, table, day_name(d))
        assert build_month_index(location, FIRST_DAY.strftime("%Y-%m")) is not None

    with connect(str(root), use_ip_index=use_ip_index) as session:
        for table in SCHEMAS:
            assert counts(session, table) == (totals[table], marked[table].num_rows)
        assert session.execute(
            f"SELECT DISTINCT {FOUND_BY_LOOKBACK_AT} FROM alerts WHERE {FOUND_BY_LOOKBACK_AT} IS NOT NULL"
        ).fetchall() == [(FOUND_AT,)]


def test_ip_scope_of_rows_from_before_the_column_is_null_until_the_day_is_rewritten(hourly_lake):
    """The views read an old file's ip_scope as null (no SQL fallback); compacting the day
    rewrites its rows through schema.conform, which computes it from ip."""
    root, location = hourly_lake
    location = location if location.tenant_id else location.for_tenant(TENANT)
    old_rows = 0
    for hour in range(6):
        path = location.path(interval_file(ALERT_IPS, LAST_DAY + timedelta(hours=hour)))
        old = pq.read_table(path).drop_columns([IP_SCOPE])  # as a writer before the column left it
        pq.write_table(old, path)
        old_rows += old.num_rows
    null_scopes = f"SELECT count(*) FILTER (WHERE {IP_SCOPE} IS NULL), count(*) FROM alert_ips"
    with connect(str(root), use_ip_index=False) as session:
        nulls, total = session.execute(null_scopes).fetchone()
        assert nulls == old_rows > 0
        assert session.execute(f"SELECT count(*) FROM alert_ip_details WHERE {IP_SCOPE} IS NULL").fetchone()[0] == old_rows
    compact_day(location, ALERT_IPS, LAST_DAY.date().isoformat())
    with connect(str(root), use_ip_index=False) as session:
        assert session.execute(null_scopes).fetchone() == (0, total)
        pairs = session.execute(f"SELECT DISTINCT ip, {IP_SCOPE} FROM alert_ips WHERE date = ?", [LAST_DAY.date()]).fetchall()
    assert pairs and all(scope == ip_scope(ip) for ip, scope in pairs)
