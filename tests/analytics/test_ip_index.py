"""The IP index (lake/ip_index.py): an exact, IP-sorted copy that is never used once stale,
and the analyst session that reads it next to the day files it does not cover.

The index is per tenant (``_ip_index/tenant_id=<T>/``): TENANT's is built here, OTHER_TENANT
never gets one, so every session also reads a tenant without an index beside one with it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
import pyarrow.parquet as pq

from mde_pipeline.analytics.session import connect
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.days import publish_interval_into_compacted_day
from mde_pipeline.lake.ip_index import (
    INDEX_DIR,
    INDEX_ROW_GROUP_ROWS,
    build_month_index,
    index_directory,
    index_months,
    months_to_index,
    valid_month_indexes,
)
from mde_pipeline.lake.tenants import replace_tenant
from mde_pipeline.lake.schema import ALERT_IPS, ROW_KEYS, SCHEMAS
from mde_pipeline.lake.layout import interval_file
from mde_pipeline.lake.parquet import parquet_bytes
from mde_pipeline.lake.storage import write_files_atomic

from tests.analytics.conftest import DAYS, FIRST_DAY, OTHER_TENANT, TENANT, day_name, small_tables, tenant_dir, two_days_of_hours

MONTH = FIRST_DAY.strftime("%Y-%m")
HOUR = FIRST_DAY + timedelta(days=1, hours=5)
KEYS = ", ".join(ROW_KEYS[ALERT_IPS])
QUERY = f"SELECT {KEYS}, severity, interval_start, date FROM alert_ips ORDER BY {KEYS}"


def compact(location, days=range(DAYS)) -> None:
    for d in days:
        for table in SCHEMAS:
            compact_day(location, table, day_name(d))


def lake_ips(root: Path, tenant: str = "*") -> list[tuple]:
    """alert_ips as the day files hold it (the truth the index must copy), every tenant's
    or one tenant's."""
    return duckdb.connect().execute(
        f"SELECT {KEYS}, severity, interval_start, date FROM read_parquet('{root}/alert_ips/tenant_id={tenant}/*/*.parquet', "
        f"hive_partitioning = true, hive_types = {{'tenant_id': VARCHAR, 'date': DATE}}) ORDER BY {KEYS}"
    ).fetchall()


def index_folder(root: Path) -> Path:
    """TENANT's index folder of MONTH (``index_directory`` seen from the tenant's location)."""
    return tenant_dir(root, INDEX_DIR) / index_directory(MONTH).removeprefix(f"{INDEX_DIR}/")


def view_ips(root: Path) -> list[tuple]:
    with connect(str(root)) as session:
        return session.execute(QUERY).fetchall()


def alert_ips_view(session) -> str:
    return session.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'alert_ips'").fetchone()[0]


def test_index_is_an_ip_sorted_copy_of_the_compacted_month(hourly_lake):
    root, location = hourly_lake
    assert build_month_index(location, MONTH) is None  # days still hourly: nothing to index
    compact(location)

    index = build_month_index(location, MONTH)

    assert index.days == tuple(day_name(d) for d in range(DAYS))
    path = Path(index.uri)
    assert path.is_relative_to(tenant_dir(root, INDEX_DIR))
    data = pq.read_table(path)
    ips = data.column("ip").to_pylist()
    assert ips == sorted(ips) and data.num_rows == index.rows == len(lake_ips(root, TENANT))
    assert pq.ParquetFile(path).metadata.row_group(0).num_rows == min(INDEX_ROW_GROUP_ROWS, index.rows)
    assert [i.month for i in valid_month_indexes(location)] == [MONTH]
    assert view_ips(root) == lake_ips(root)
    # Table globs never see the index (no double counting for any engine).
    assert duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{root}/alert_ips/*/*/*.parquet')").fetchone()[0] == len(lake_ips(root))


def test_a_partly_compacted_month_is_indexed_and_the_rest_read_from_day_files(hourly_lake):
    root, location = hourly_lake
    compact(location, days=range(DAYS - 1))
    assert months_to_index(location) == [MONTH]
    [index] = index_months(location)
    assert index.days == tuple(day_name(d) for d in range(DAYS - 1))
    assert months_to_index(location) == []

    with connect(str(root)) as session:
        definition = alert_ips_view(session)
        # The index for the covered days, one glob for the last day only: no glob over the
        # table or a tenant. The other tenant (no index) has its one day's month as one glob.
        assert str(Path(index.uri)) in definition
        assert f"tenant_id={TENANT}/date={day_name(DAYS - 1)}/*.parquet" in definition
        assert f"tenant_id={OTHER_TENANT}/date={MONTH}-*/*.parquet" in definition
        assert "tenant_id=*" not in definition and "alert_ips/*" not in definition
        assert session.execute(QUERY).fetchall() == lake_ips(root)

        # An hourly load into the day the index does not cover leaves the index alone.
        hour = FIRST_DAY + timedelta(days=DAYS - 1, hours=7)
        commit_interval(location, hour, small_tables(hour, 1))
        assert [i.days for i in valid_month_indexes(location)] == [index.days]
        assert session.execute(QUERY).fetchall() == lake_ips(root)

        # Compacting that day: the index is behind, still valid, and rebuilt by the next run.
        compact(location, days=[DAYS - 1])
        assert [i.days for i in valid_month_indexes(location)] == [index.days]
        assert months_to_index(location) == [MONTH]
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        [rebuilt] = index_months(location)
        assert rebuilt.days == tuple(day_name(d) for d in range(DAYS))
        assert not Path(index.uri).exists()
        # The open session was reading the old file: it moves to the new one by itself.
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        assert str(Path(rebuilt.uri)) in alert_ips_view(session)
        assert f"tenant_id={TENANT}/date=" not in alert_ips_view(session)  # every day of TENANT's in the index


def test_a_rerun_into_a_covered_day_drops_the_index_and_the_views_stay_exact(hourly_lake, request):
    root, location = hourly_lake
    compact(location)
    build_month_index(location, MONTH)
    session = connect(str(root))
    request.addfinalizer(session.close)
    raw = duckdb.connect()
    raw.execute(f"CREATE VIEW alert_ips AS SELECT * FROM read_parquet('{valid_month_indexes(location)[0].uri}')")
    raw.execute("SET parquet_metadata_cache = true")
    raw.execute("SELECT count(*) FROM alert_ips").fetchall()

    publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, small_tables(HOUR, 1)[ALERT_IPS])

    assert valid_month_indexes(location) == []
    assert not list(tenant_dir(root, INDEX_DIR).rglob("*.parquet"))
    assert view_ips(root) == lake_ips(root)
    # The session opened before the rerun reads the new rows, not the dropped index...
    assert session.execute(QUERY).fetchall() == lake_ips(root)
    # ...and a plain connection still holding the dropped file fails loudly: DuckDB's
    # footer cache never answers for a file that is gone.
    try:
        raw.execute("SELECT count(*) FROM alert_ips WHERE ip = '10.0.0.1'").fetchall()
    except duckdb.IOException:
        pass
    else:
        raise AssertionError("a connection holding a dropped index must not read on")
    # The next compaction run builds it again.
    assert months_to_index(location) == [MONTH]
    assert index_months(location) and view_ips(root) == lake_ips(root)


def test_an_index_made_stale_behind_its_back_is_ignored(hourly_lake):
    """A writer that bypassed the hook: the index no longer matches the day files."""
    root, location = hourly_lake
    compact(location)
    build_month_index(location, MONTH)
    rerun = small_tables(HOUR, 2)[ALERT_IPS]
    write_files_atomic(location, {interval_file(ALERT_IPS, HOUR): parquet_bytes(ALERT_IPS, rerun)})
    # Folded in by compaction (which also drops the index), but even before that:
    assert valid_month_indexes(location) == []
    with connect(str(root)) as session:
        assert "_ip_index" not in alert_ips_view(session)
        served = session.execute(
            "SELECT alert_id, ip FROM alert_ips WHERE interval_start = ? ORDER BY ALL", [HOUR]
        ).fetchall()
    # The day files, stray file included (the index never held its rows), until compaction
    # folds the stray file in.
    assert set(zip(rerun.column("alert_id").to_pylist(), rerun.column("ip").to_pylist())) <= set(served)
    assert months_to_index(location) == [MONTH]


def test_an_index_of_an_older_format_is_rebuilt(hourly_lake):
    root, location = hourly_lake
    compact(location)
    index = build_month_index(location, MONTH)
    manifest_path = index_folder(root) / "_index.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format": 1}))
    assert valid_month_indexes(location) == []
    assert months_to_index(location) == [MONTH]


def test_a_session_sees_a_day_that_appears_after_it_opened(hourly_lake):
    root, location = hourly_lake
    compact(location)
    index_months(location)
    with connect(str(root)) as session:
        before = session.execute("SELECT count(*) FROM alert_ips").fetchone()[0]
        new_hour = FIRST_DAY + timedelta(days=DAYS, hours=2)
        rows = commit_interval(location, new_hour, small_tables(new_hour)).rows[ALERT_IPS]
        assert rows > 0
        assert session.execute("SELECT count(*) FROM alert_ips").fetchone()[0] == before + rows
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        # A tenant that appears (its first hour, in a covered day of another tenant) too.
        newcomer = "33333333-0000-4000-8000-000000000003"
        hour = FIRST_DAY + timedelta(hours=4)
        commit_interval(location.for_tenant(newcomer), hour, small_tables(hour, tenant_id=newcomer))
        assert valid_month_indexes(location)  # another tenant's hour leaves TENANT's index alone
        assert session.execute("SELECT count(*) FROM alert_ips WHERE tenant_id = ?", [newcomer]).fetchone()[0] == len(
            lake_ips(root, newcomer)
        ) > 0
        assert session.execute(QUERY).fetchall() == lake_ips(root)


def test_day_folders_without_a_file_yet_are_waited_for_not_globbed(hourly_lake):
    """A folder with only a writer's temp file (a load in progress, or one that crashed):
    DuckDB fails on a glob that matches nothing, so the session leaves such days out
    until they get a file, in a month the index covers and in a month it does not."""
    root, location = hourly_lake
    compact(location)
    index_months(location)
    in_month = FIRST_DAY + timedelta(days=DAYS, hours=1)  # same month, not covered
    next_month = FIRST_DAY.replace(month=FIRST_DAY.month + 1, day=1, hour=4)  # no day covered
    for hour in (in_month, next_month):
        folder = tenant_dir(root, ALERT_IPS) / f"date={hour:%Y-%m-%d}"
        folder.mkdir(parents=True)
        (folder / f".{interval_file(ALERT_IPS, hour).rsplit('/', 1)[-1]}.0123.tmp").write_bytes(b"partial")
    with connect(str(root)) as session:
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        for hour in (in_month, next_month):
            commit_interval(location, hour, small_tables(hour))
            assert session.execute(QUERY).fetchall() == lake_ips(root)
        assert {d for (d,) in session.execute("SELECT DISTINCT date FROM alert_ips").fetchall()} >= {
            in_month.date(), next_month.date()
        }


def test_a_leftover_index_file_without_manifest_is_dropped_with_the_day_change(hourly_lake):
    root, location = hourly_lake
    compact(location)
    index = build_month_index(location, MONTH)
    (index_folder(root) / "_index.json").unlink()  # as if deleting the file had failed
    publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, small_tables(HOUR, 1)[ALERT_IPS])
    assert not Path(index.uri).exists()


@pytest.mark.slow
def test_index_and_session_on_abfs(abfs_location):
    """Through adlfs against Azurite: the index is built, used and exact next to an hourly day."""
    from mde_pipeline.analytics.session import LakeSession

    location = abfs_location
    two_days_of_hours(location, every_hours=6)
    compact(location, days=[0])
    [index] = index_months(location)
    assert index.days == (day_name(0),) and index.uri.startswith("abfs://")

    def plain_rows():
        connection = duckdb.connect()
        connection.register_filesystem(location.fs)
        return connection.execute(
            f"SELECT {KEYS}, severity, interval_start, date FROM read_parquet('{location.uri(ALERT_IPS)}/*/*.parquet', "
            f"hive_partitioning = true, hive_types = {{'tenant_id': VARCHAR, 'date': DATE}}) ORDER BY {KEYS}"
        ).fetchall()

    with LakeSession(replace_tenant(location, None)) as session:  # readers open the root
        assert index.uri in alert_ips_view(session)
        assert session.execute(QUERY).fetchall() == plain_rows()
        # A rerun into the covered day drops the index; the open session stays exact.
        hour = FIRST_DAY + timedelta(hours=6)
        commit_interval(location, hour, small_tables(hour, 1))
        assert valid_month_indexes(location) == []
        assert session.execute(QUERY).fetchall() == plain_rows()
