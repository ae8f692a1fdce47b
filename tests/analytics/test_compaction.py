"""Compaction of closed days: exact rows, sorted files, atomic swaps, exact reruns, locks."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mde_pipeline.lake import storage
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.compaction import closed_days, compact_closed_days, compact_day
from mde_pipeline.lake.days import (
    CompactionError,
    publish_interval_into_compacted_day,
    read_compacted_interval,
    recover_day,
    recover_interrupted_swaps,
)
from mde_pipeline.lake.layout import MANIFEST_NAME, interval_file, list_day, staged_compaction_days
from mde_pipeline.lake.locks import day_lock
from mde_pipeline.lake.parquet import parquet_bytes
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, ROW_KEYS, SCHEMAS
from mde_pipeline.lake.retired import RETIRED_GRACE, retired_at
from mde_pipeline.lake.storage import write_files_atomic
from mde_pipeline.lake.sweeps import sweep_every_tenant_staging

from tests.analytics.conftest import DAYS, FIRST_DAY, OTHER_TENANT, TENANT, day_name, small_tables, tenant_dir
from tests.support.kill_points import kill_at, revive

DAY = day_name(1)
HOUR = FIRST_DAY + timedelta(days=1, hours=5)


def table_rows(root: Path, table: str, day: str | None = None) -> pa.Table:
    """Every row of TENANT's table as readers see it, in key order (with the Hive ``date``)."""
    keys = ", ".join(ROW_KEYS[table])
    where = f"WHERE date = DATE '{day}'" if day else ""
    return duckdb.connect().sql(
        f"SELECT * FROM read_parquet('{tenant_dir(root, table)}/*/*.parquet', hive_partitioning = true, "
        f"hive_types = {{'tenant_id': VARCHAR, 'date': DATE}}) {where} ORDER BY {keys}"
    ).to_arrow_table()


def day_dir(root: Path, table: str, day: str, tenant: str = TENANT) -> Path:
    return tenant_dir(root, table, tenant) / f"date={day}"


def parquet_files(root: Path, table: str, day: str, tenant: str = TENANT) -> list[str]:
    return sorted(p.name for p in day_dir(root, table, day, tenant).glob("*.parquet"))


def test_compacting_a_day_keeps_exactly_its_rows_in_one_sorted_file(hourly_lake):
    root, location = hourly_lake
    before = {table: table_rows(root, table) for table in SCHEMAS}

    results = {table: compact_day(location, table, DAY) for table in SCHEMAS}

    for table in SCHEMAS:
        assert results[table].action == "compacted" and results[table].source_files == 24
        assert table_rows(root, table).equals(before[table])
        files = parquet_files(root, table, DAY)
        assert len(files) == 1 and files[0].startswith("compacted-")
        # Other days, and the other tenant's same day, are untouched.
        assert len(parquet_files(root, table, day_name(0))) == 24
        assert len(parquet_files(root, table, DAY, OTHER_TENANT)) == 24
    data = pq.read_table(day_dir(root, ALERT_IPS, DAY) / parquet_files(root, ALERT_IPS, DAY)[0])
    ips = data.column("ip").to_pylist()
    assert ips == sorted(ips)
    manifest = json.loads((day_dir(root, ALERT_IPS, DAY) / MANIFEST_NAME).read_text())
    assert len(manifest["intervals"]) == 24 and manifest["rows"] == data.num_rows
    assert sum(manifest["intervals"].values()) == data.num_rows


def test_compacted_file_carries_sort_order_statistics_and_bloom_filter(hourly_lake):
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)
    path = day_dir(root, ALERT_IPS, DAY) / parquet_files(root, ALERT_IPS, DAY)[0]
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(0)
    ip_column = group.column(SCHEMAS[ALERT_IPS].get_field_index("ip"))
    assert ip_column.statistics.has_min_max
    assert [c.column_index for c in group.sorting_columns][:1] == [SCHEMAS[ALERT_IPS].get_field_index("ip")]
    # DuckDB finds the Bloom filter and uses it: a present IP may match, an absent one never.
    present = pq.read_table(path, columns=["ip"]).column("ip")[0].as_py()
    probe = duckdb.connect().execute(
        f"SELECT bloom_filter_excludes FROM parquet_bloom_probe('{path}', 'ip', ?)", [present]
    ).fetchall()
    absent = duckdb.connect().execute(
        f"SELECT bloom_filter_excludes FROM parquet_bloom_probe('{path}', 'ip', '203.0.113.254')"
    ).fetchall()
    assert probe == [(False,)] and absent == [(True,)]


def test_compaction_is_idempotent(hourly_lake):
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)
    files = parquet_files(root, ALERT_IPS, DAY)
    content = (day_dir(root, ALERT_IPS, DAY) / files[0]).read_bytes()

    again = compact_day(location, ALERT_IPS, DAY)

    assert again.action == "unchanged"
    assert parquet_files(root, ALERT_IPS, DAY) == files
    assert (day_dir(root, ALERT_IPS, DAY) / files[0]).read_bytes() == content
    assert compact_day(location, ALERT_IPS, "2031-01-01").action == "empty"


def _fresh_lake_with_rerun(tmp_path: Path, hour: datetime, variant: int):
    """The lake a fresh load would give: hourly files, the hour loaded with ``variant``, compacted."""
    from mde_pipeline.lake.location import resolve_lake_location

    root = tmp_path / "fresh"
    location = resolve_lake_location(str(root)).for_tenant(TENANT)
    day_start = hour.replace(hour=0)
    for h in range(24):
        start = day_start + timedelta(hours=h)
        commit_interval(location, start, small_tables(start, variant if start == hour else 0))
    for table in SCHEMAS:
        compact_day(location, table, DAY)
    return root


@pytest.mark.parametrize("variant", [1, 2])
def test_rerun_of_an_hour_in_a_compacted_day_equals_a_fresh_load(hourly_lake, tmp_path, variant):
    root, location = hourly_lake
    for table in SCHEMAS:
        compact_day(location, table, DAY)
    rerun = small_tables(HOUR, variant)

    for table in SCHEMAS:
        publish_interval_into_compacted_day(location, table, HOUR, rerun[table])

    fresh = _fresh_lake_with_rerun(tmp_path, HOUR, variant)
    for table in SCHEMAS:
        assert table_rows(root, table, DAY).equals(table_rows(fresh, table, DAY))
        # Same rows in the same (total) order: the compacted files hold identical data.
        ours = pq.read_table(day_dir(root, table, DAY) / parquet_files(root, table, DAY)[0])
        theirs = pq.read_table(day_dir(fresh, table, DAY) / parquet_files(fresh, table, DAY)[0])
        assert ours.equals(theirs)
        assert list_day(location, table, DAY).manifest["intervals"] == list_day(_location(fresh), table, DAY).manifest["intervals"]
    assert read_compacted_interval(location, ALERT_IPS, HOUR).sort_by(
        [(k, "ascending") for k in ROW_KEYS[ALERT_IPS]]
    ).equals(rerun[ALERT_IPS].sort_by([(k, "ascending") for k in ROW_KEYS[ALERT_IPS]]))


def _location(root: Path):
    from mde_pipeline.lake.location import resolve_lake_location

    return resolve_lake_location(str(root)).for_tenant(TENANT)


def test_rerun_that_finds_an_empty_hour_removes_its_rows(hourly_lake):
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)
    before = table_rows(root, ALERT_IPS, DAY)
    hour_rows = small_tables(HOUR)[ALERT_IPS].num_rows
    assert hour_rows > 0

    publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, SCHEMAS[ALERT_IPS].empty_table())

    after = table_rows(root, ALERT_IPS, DAY)
    assert after.num_rows == before.num_rows - hour_rows
    assert HOUR not in after.column("interval_start").to_pylist()
    manifest = list_day(location, ALERT_IPS, DAY).manifest
    assert manifest["intervals"][f"{HOUR:%Y%m%dT%H}"] == 0 and len(manifest["intervals"]) == 24


def test_publish_refuses_rows_of_another_interval_and_a_day_not_compacted(hourly_lake):
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)
    other = small_tables(HOUR + timedelta(hours=1))[ALERT_IPS]
    with pytest.raises(CompactionError, match="rows of other intervals"):
        publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, other)
    with pytest.raises(CompactionError, match="not compacted"):
        publish_interval_into_compacted_day(location, ALERTS, HOUR, small_tables(HOUR)[ALERTS])
    assert len(parquet_files(root, ALERTS, DAY)) == 24


def test_commit_interval_routes_compacted_days_into_the_compacted_file(hourly_lake, tmp_path):
    """The hourly commit: compacted day -> republish, open day -> interval file."""
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)  # alert_ips compacted, alerts still hourly
    rerun = small_tables(HOUR, 1)

    written = commit_interval(location, HOUR, rerun).files

    assert set(written) == set(SCHEMAS)
    assert "compacted-" in written[ALERT_IPS] and written[ALERTS] == location.uri(interval_file(ALERTS, HOUR))
    assert parquet_files(root, ALERT_IPS, DAY)[0].startswith("compacted-") and len(parquet_files(root, ALERT_IPS, DAY)) == 1
    assert read_interval(location, ALERTS, HOUR).equals(rerun[ALERTS])
    assert len(parquet_files(root, ALERTS, DAY)) == 24
    fresh = _fresh_lake_with_rerun(tmp_path, HOUR, 1)
    for table in SCHEMAS:
        assert table_rows(root, table, DAY).equals(table_rows(fresh, table, DAY))


def test_stray_hourly_file_next_to_a_compacted_day_wins_for_its_interval(hourly_lake, tmp_path):
    """A writer that bypassed the hook: the next compaction folds the newer hour in."""
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)
    rerun = small_tables(HOUR, 2)
    write_files_atomic(location, {interval_file(ALERT_IPS, HOUR): parquet_bytes(ALERT_IPS, rerun[ALERT_IPS])})

    assert compact_day(location, ALERT_IPS, DAY).action == "compacted"

    fresh = _fresh_lake_with_rerun(tmp_path, HOUR, 2)
    assert table_rows(root, ALERT_IPS, DAY).equals(table_rows(fresh, ALERT_IPS, DAY))


def test_readers_never_see_duplicated_or_missing_rows_during_swaps(hourly_lake):
    """A reader globbing the table while the day is compacted and republished, over and over."""
    root, location = hourly_lake
    expected = table_rows(root, ALERT_IPS).num_rows
    seen: list[int] = []
    not_found = 0
    done = threading.Event()

    def reader():
        nonlocal not_found
        connection = duckdb.connect()
        while not done.is_set() or not seen:
            try:
                seen.append(connection.execute(f"SELECT count(*) FROM read_parquet('{tenant_dir(root, ALERT_IPS)}/*/*.parquet')").fetchone()[0])
            except duckdb.IOException:
                not_found += 1  # listed just before a swap, opened after: a loud, retryable failure

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        compact_day(location, ALERT_IPS, DAY)
        same = small_tables(HOUR)[ALERT_IPS]
        for _ in range(15):
            publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, same)
    finally:
        done.set()
        thread.join(timeout=60)
    assert seen and set(seen) == {expected}, f"reader saw counts {sorted(set(seen))}, expected {expected}"


@pytest.mark.parametrize("fail_at", ["staged", "live moved aside"])
def test_a_swap_that_dies_leaves_the_day_recoverable_and_exact(hourly_lake, monkeypatch, fail_at):
    """Without RENAME_EXCHANGE (two renames): a crash between them is repaired by the next run."""
    root, location = hourly_lake
    before = table_rows(root, ALERT_IPS)
    monkeypatch.setattr(storage, "renameat2_exchange", lambda source, target: False)
    kill_at(monkeypatch, storage, "swap_checkpoint", fail_at)
    with pytest.raises(KeyboardInterrupt):
        compact_day(location, ALERT_IPS, DAY)
    revive(monkeypatch, storage, "swap_checkpoint")

    with day_lock(location, DAY):
        recover_day(location, ALERT_IPS, DAY)
    assert table_rows(root, ALERT_IPS).equals(before)
    assert not list((tenant_dir(root, "_staging") / "compaction" / ALERT_IPS).glob(f"date={DAY}/*"))
    assert compact_day(location, ALERT_IPS, DAY).action == "compacted"
    assert table_rows(root, ALERT_IPS).equals(before)


def retired_dirs(root: Path, table: str = ALERT_IPS, day: str = DAY) -> list[Path]:
    return sorted((tenant_dir(root, "_staging") / "compaction_retired" / table / f"date={day}").glob("*"))


def test_a_reader_that_opened_the_day_before_a_swap_reads_every_row_of_the_old_day(hourly_lake):
    """The race a glob hit under load: the day directory opened before the swap, read after.
    The swapped-out directory is retired (renamed), not removed: its listing and rows stay."""
    root, location = hourly_lake
    compact_day(location, ALERT_IPS, DAY)
    rows = table_rows(root, ALERT_IPS, DAY).num_rows
    listing = os.scandir(day_dir(root, ALERT_IPS, DAY))  # opendir only; read after the swap
    handle = os.open(day_dir(root, ALERT_IPS, DAY), os.O_RDONLY | os.O_DIRECTORY)
    try:
        publish_interval_into_compacted_day(location, ALERT_IPS, HOUR, small_tables(HOUR)[ALERT_IPS])
        names = sorted(entry.name for entry in listing if entry.name.endswith(".parquet"))
        assert names and names != parquet_files(root, ALERT_IPS, DAY)  # the old day's files
        seen = 0
        for name in names:
            with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=handle), "rb") as file:
                seen += pq.read_table(pa.BufferReader(file.read())).num_rows
        assert seen == rows
    finally:
        listing.close()
        os.close(handle)
    assert table_rows(root, ALERT_IPS, DAY).num_rows == rows  # readers by path: the new day, once
    assert len(retired_dirs(root)) == 2  # the hourly day and the first compacted one


@pytest.mark.parametrize("fail_at", ["exchanged", "retired"])
def test_a_swap_killed_after_the_exchange_leaves_the_new_day_and_retires_the_old(hourly_lake, monkeypatch, fail_at):
    """Killed after the exchange, before or after the previous day was retired: the live day
    is the new one, complete; the next run retires what staging holds (a reader may be
    listing it) and a later sweep removes it after the grace."""
    root, location = hourly_lake
    before = table_rows(root, ALERT_IPS)
    kill_at(monkeypatch, storage, "swap_checkpoint", fail_at)
    with pytest.raises(KeyboardInterrupt):
        compact_day(location, ALERT_IPS, DAY)
    revive(monkeypatch, storage, "swap_checkpoint")
    assert table_rows(root, ALERT_IPS).equals(before)
    assert parquet_files(root, ALERT_IPS, DAY)[0].startswith("compacted-")
    staging = tenant_dir(root, "_staging") / "compaction" / ALERT_IPS / f"date={DAY}"
    assert len(list(staging.iterdir())) == (1 if fail_at == "exchanged" else 0)  # the previous day / an empty folder
    assert len(retired_dirs(root)) == (0 if fail_at == "exchanged" else 1)

    assert recover_interrupted_swaps(location) == [(ALERT_IPS, DAY)]
    assert not staging.exists()
    [old] = retired_dirs(root)
    assert len(list(old.glob("interval=*.parquet"))) == 24  # the hourly day, whole
    assert table_rows(root, ALERT_IPS).equals(before)

    stamp = retired_at(old.name)
    grace = RETIRED_GRACE.total_seconds()
    assert sweep_every_tenant_staging(location, now=FIRST_DAY, wall_clock=stamp + grace - 1)["retired_swept"] == 0
    assert sweep_every_tenant_staging(location, now=FIRST_DAY, wall_clock=stamp + grace + 1)["retired_swept"] == 1
    assert not (tenant_dir(root, "_staging") / "compaction_retired").exists()
    assert table_rows(root, ALERT_IPS).equals(before)


def test_retired_days_are_not_interrupted_swaps(hourly_lake):
    root, location = hourly_lake
    for table in SCHEMAS:
        compact_day(location, table, DAY)
    assert [len(retired_dirs(root, table)) for table in SCHEMAS] == [1, 1]
    assert [staged_compaction_days(location, table) for table in SCHEMAS] == [[], []]
    assert recover_interrupted_swaps(location) == []
    with day_lock(location, DAY):
        assert recover_day(location, ALERT_IPS, DAY) is False
    assert [len(retired_dirs(root, table)) for table in SCHEMAS] == [1, 1]


def test_compaction_waits_for_an_hourly_commit_holding_the_day_lock(hourly_lake, tmp_path):
    """A rerun committing under the lock lands whole before the compaction reads the day."""
    root, location = hourly_lake
    rerun = small_tables(HOUR, 1)
    started = threading.Event()
    outcome = {}

    def compact():
        started.set()
        outcome["result"] = compact_day(location, ALERT_IPS, DAY)

    with day_lock(location, DAY):
        thread = threading.Thread(target=compact)
        thread.start()
        started.wait(10)
        thread.join(timeout=0.5)  # it cannot finish: it waits for this lock
        assert thread.is_alive()
        write_files_atomic(location, {interval_file(ALERT_IPS, HOUR): parquet_bytes(ALERT_IPS, rerun[ALERT_IPS])})
    thread.join(timeout=60)
    assert outcome["result"].action == "compacted"
    fresh = _fresh_lake_with_rerun(tmp_path, HOUR, 1)
    assert table_rows(root, ALERT_IPS, DAY).equals(table_rows(fresh, ALERT_IPS, DAY))


def test_closed_days_respects_grace_and_quiet_period(hourly_lake):
    root, location = hourly_lake
    last_write = max(p.stat().st_mtime for p in root.rglob("interval=*.parquet"))
    now = datetime.fromtimestamp(last_write, timezone.utc)
    end_of_day_1 = FIRST_DAY + timedelta(days=2)

    # Day 1 ends at end_of_day_1; with 3 h of grace it is closed from end_of_day_1 + 3 h.
    assert closed_days(location, closed_before=end_of_day_1 - timedelta(seconds=1), now=now + timedelta(days=1)) == [day_name(0)]
    assert closed_days(location, closed_before=end_of_day_1, now=now + timedelta(days=1)) == [day_name(0), day_name(1)]
    # Written a moment ago: a backfill may still be filling it.
    assert closed_days(location, closed_before=end_of_day_1, now=now + timedelta(minutes=5)) == []

    results = compact_closed_days(location, closed_before=end_of_day_1 + timedelta(hours=3), now=now + timedelta(days=1))
    assert sorted((r.day, r.table, r.action) for r in results) == sorted(
        (day_name(d), t, "compacted") for d in (0, 1) for t in SCHEMAS
    )
    assert len(parquet_files(root, ALERTS, day_name(2))) == 24
    assert compact_closed_days(location, closed_before=end_of_day_1 + timedelta(hours=3), now=now + timedelta(days=1)) == []


def test_writer_temp_files_and_other_days_are_left_alone(hourly_lake):
    root, location = hourly_lake
    stray = day_dir(root, ALERT_IPS, DAY) / ".interval=20250302T05.parquet.abc.tmp"
    stray.write_bytes(b"half a file")
    compact_day(location, ALERT_IPS, DAY)
    # The temp file is not data; it was in the old directory, which left the table (retired).
    assert table_rows(root, ALERT_IPS, DAY).num_rows == sum(
        small_tables(FIRST_DAY + timedelta(days=1, hours=h))[ALERT_IPS].num_rows for h in range(24)
    )
    assert DAYS == 3 and len(parquet_files(root, ALERT_IPS, day_name(2))) == 24


@pytest.mark.slow
def test_compaction_and_rerun_on_abfs(abfs_location, tmp_path):
    """The same guarantees through adlfs against Azurite (Blob API: staged delete + upload)."""
    location = abfs_location
    day_start = FIRST_DAY + timedelta(days=1)
    for h in range(24):
        start = day_start + timedelta(hours=h)
        commit_interval(location, start, small_tables(start))
    fs = location.fs

    def rows(table):
        connection = duckdb.connect()
        connection.register_filesystem(fs)
        keys = ", ".join(ROW_KEYS[table])
        return connection.sql(
            f"SELECT * FROM read_parquet('{location.uri(table)}/*/*.parquet', hive_partitioning = true, "
            f"hive_types = {{'tenant_id': VARCHAR, 'date': DATE}}) ORDER BY {keys}"
        ).to_arrow_table()

    before = rows(ALERT_IPS)
    assert compact_day(location, ALERT_IPS, DAY).action == "compacted"
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(location.path(ALERT_IPS, f"date={DAY}"), detail=False))
    assert len(names) == 2 and names[0] == MANIFEST_NAME and names[1].startswith("compacted-")
    assert rows(ALERT_IPS).equals(before)
    assert compact_day(location, ALERT_IPS, DAY).action == "unchanged"

    commit_interval(location, HOUR, small_tables(HOUR, 1))
    fresh = _fresh_lake_with_rerun(tmp_path, HOUR, 1)
    assert rows(ALERT_IPS).equals(table_rows(fresh, ALERT_IPS, DAY))
    assert not fs.glob(location.path("_staging", "compaction", "**", "*.parquet"))


def test_compaction_run_recovers_a_day_its_own_selection_would_never_pick(hourly_lake, monkeypatch):
    """Killed between the two renames (day absent, no hourly file left to select it): the
    next compaction run scans _staging/compaction and puts the day back before anything else."""
    root, location = hourly_lake
    before = table_rows(root, ALERT_IPS)
    monkeypatch.setattr(storage, "renameat2_exchange", lambda source, target: False)

    def crash(step):
        if step == "live moved aside":
            raise KeyboardInterrupt(step)

    monkeypatch.setattr(storage, "swap_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        compact_day(location, ALERT_IPS, DAY)
    monkeypatch.setattr(storage, "swap_checkpoint", lambda step: None)
    assert not day_dir(root, ALERT_IPS, DAY).exists()

    compact_closed_days(location, closed_before=FIRST_DAY - timedelta(days=1))  # selects no day at all
    assert table_rows(root, ALERT_IPS).equals(before)
    assert not list((tenant_dir(root, "_staging") / "compaction").rglob("*.parquet"))
