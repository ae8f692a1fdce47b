"""Committing intervals to a local lake: layout, reruns, atomicity, crashes, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lake_data import WrappedFile, hourly_intervals, large_interval, same_rows, sample_interval

from mde_pipeline.lake import storage
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.layout import interval_file
from mde_pipeline.lake.schema import ALERT_IPS, ALERT_IPS_SCHEMA, ALERTS, ALERTS_SCHEMA, LakeSchemaError, empty_table
from mde_pipeline.lake.storage import remove_stale_temp_files

UTC = timezone.utc
START = datetime(2024, 2, 29, 23, tzinfo=UTC)  # the child processes' interval (lake_child.START)
HERE = Path(__file__).resolve().parent
CHILD = HERE / "lake_child.py"

DUCKDB_TYPES_ALERT_IPS = {
    "tenant_id": "VARCHAR", "alert_id": "VARCHAR", "ip": "VARCHAR", "ip_version": "TINYINT",
    "alert_last_update_time": "TIMESTAMP WITH TIME ZONE", "alert_creation_time": "TIMESTAMP WITH TIME ZONE",
    "severity": "VARCHAR", "incident_id": "BIGINT", "machine_id": "VARCHAR",
    "interval_start": "TIMESTAMP WITH TIME ZONE", "fetched_at": "TIMESTAMP WITH TIME ZONE", "date": "DATE",
    "found_by_lookback_at": "TIMESTAMP WITH TIME ZONE", "ip_scope": "VARCHAR",
}  # fmt: skip


def duckdb_query(sql: str) -> pa.Table:
    with duckdb.connect() as connection:
        return connection.sql(sql).to_arrow_table()


def duckdb_read(location, table: str) -> pa.Table:
    return duckdb_query(f"select * from read_parquet('{location.table_glob(table)}', hive_partitioning=true)")


def lake_files(location) -> list[str]:
    root = Path(location.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_locks" not in p.parts)


def test_commit_writes_one_file_per_table_in_the_documented_layout(local_location):
    tables = sample_interval(START)
    result = commit_interval(local_location, START, tables)
    assert lake_files(local_location) == [
        "alert_ips/tenant_id=tenant-a/date=2024-02-29/interval=20240229T23.parquet",
        "alerts/tenant_id=tenant-a/date=2024-02-29/interval=20240229T23.parquet",
    ]
    assert result.rows == {ALERTS: 12, ALERT_IPS: tables[ALERT_IPS].num_rows}
    assert result.files[ALERTS] == f"{local_location.root}/alerts/tenant_id=tenant-a/date=2024-02-29/interval=20240229T23.parquet"
    assert same_rows(read_interval(local_location, ALERTS, START), tables[ALERTS])
    assert same_rows(read_interval(local_location, ALERT_IPS, START), tables[ALERT_IPS])


def test_duckdb_reads_hive_partitions_with_the_declared_types(local_location):
    # 2024-02-29 00:00 and 23:00, then 2024-03-01 00:00: two date partitions.
    first, second, third = START - timedelta(hours=23), START, START + timedelta(hours=1)
    expected = {}
    for seed, start in enumerate((first, second, third)):
        expected[start] = sample_interval(start, seed=seed)
        commit_interval(local_location, start, expected[start])
    read = duckdb_read(local_location, ALERT_IPS)
    glob = local_location.table_glob(ALERT_IPS)
    description = duckdb_query(f"describe select * from read_parquet('{glob}', hive_partitioning=true)")
    described = dict(zip(description.column("column_name").to_pylist(), description.column("column_type").to_pylist()))
    assert described == DUCKDB_TYPES_ALERT_IPS
    dates = sorted({d.isoformat() for d in read.column("date").to_pylist()})
    assert dates == ["2024-02-29", "2024-03-01"]
    all_ips = pa.concat_tables([t[ALERT_IPS] for t in expected.values()])
    assert same_rows(read.drop_columns(["date"]).cast(ALERT_IPS_SCHEMA), all_ips)
    # Every row's date partition is the UTC date of its interval.
    for row in read.select(["date", "interval_start"]).to_pylist():
        assert row["date"] == row["interval_start"].astimezone(UTC).date()
    # alerts: lists and structs come back as lists and structs.
    alerts = duckdb_query(
        f"select alert_id, mitre_techniques, comments, ip_count, ips_status from read_parquet('{local_location.table_glob(ALERTS)}', hive_partitioning=true)"
    )
    assert alerts.num_rows == sum(t[ALERTS].num_rows for t in expected.values())
    assert pa.types.is_list(alerts.schema.field("mitre_techniques").type)
    assert pa.types.is_struct(alerts.schema.field("comments").type.value_type)


def test_rerun_replaces_exactly_the_interval(local_location):
    neighbour = START - timedelta(hours=1)
    commit_interval(local_location, neighbour, sample_interval(neighbour, seed=7))
    commit_interval(local_location, START, sample_interval(START, seed=1, alerts=30))
    second = sample_interval(START, seed=2, alerts=5)
    commit_interval(local_location, START, second)
    assert same_rows(read_interval(local_location, ALERT_IPS, START), second[ALERT_IPS])
    assert same_rows(read_interval(local_location, ALERTS, START), second[ALERTS])
    read = duckdb_read(local_location, ALERTS)
    assert sorted(read.column("alert_id").to_pylist()) == sorted(
        second[ALERTS].column("alert_id").to_pylist() + sample_interval(neighbour, seed=7)[ALERTS].column("alert_id").to_pylist()
    )
    assert len(lake_files(local_location)) == 4  # two intervals x two tables, no leftovers
    assert hourly_intervals(local_location, ALERTS) == [neighbour, START]


def test_same_rerun_twice_gives_identical_rows(local_location):
    tables = sample_interval(START, seed=3)
    for _ in range(3):
        commit_interval(local_location, START, tables)
    assert duckdb_read(local_location, ALERT_IPS).num_rows == tables[ALERT_IPS].num_rows


def test_empty_interval_is_a_file_with_the_full_schema(local_location):
    commit_interval(local_location, START, {ALERTS: empty_table(ALERTS), ALERT_IPS: empty_table(ALERT_IPS)})
    for table, schema in ((ALERTS, ALERTS_SCHEMA), (ALERT_IPS, ALERT_IPS_SCHEMA)):
        stored = read_interval(local_location, table, START)
        assert stored.num_rows == 0 and stored.schema == schema
    assert read_interval(local_location, ALERTS, START - timedelta(hours=1)) is None  # missing != empty
    # An empty interval next to a full one: readers still see one schema.
    other = START - timedelta(hours=1)
    commit_interval(local_location, other, sample_interval(other))
    assert duckdb_read(local_location, ALERTS).num_rows == 12


def test_rerun_of_a_busy_interval_as_empty_removes_its_rows(local_location):
    commit_interval(local_location, START, sample_interval(START))
    commit_interval(local_location, START, {ALERTS: empty_table(ALERTS), ALERT_IPS: empty_table(ALERT_IPS)})
    assert duckdb_read(local_location, ALERT_IPS).num_rows == 0


def test_parquet_settings(local_location):
    tables = sample_interval(START, alerts=50)
    commit_interval(local_location, START, tables)
    path = local_location.path(interval_file(ALERT_IPS, START))
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 1
    column = metadata.row_group(0).column(metadata.schema.names.index("ip"))
    assert column.compression == "ZSTD"
    assert column.statistics is not None and column.statistics.has_min_max
    severity = metadata.row_group(0).column(metadata.schema.names.index("severity"))
    assert "RLE_DICTIONARY" in severity.encodings or "PLAIN_DICTIONARY" in severity.encodings
    assert b"pandas" not in (metadata.metadata or {})
    timestamp = pq.ParquetFile(path).schema_arrow.field("alert_last_update_time").type
    assert timestamp == pa.timestamp("us", tz="UTC")
    logical = pq.ParquetFile(path).schema.column(metadata.schema.names.index("alert_last_update_time")).logical_type
    assert json.loads(logical.to_json())["isAdjustedToUTC"] is True
    assert json.loads(logical.to_json())["timeUnit"] == "microseconds"


def test_commit_refuses_bad_tables_and_writes_nothing(local_location):
    tables = sample_interval(START)
    with pytest.raises(LakeSchemaError, match="without table 'alert_ips'"):
        commit_interval(local_location, START, {ALERTS: tables[ALERTS]})
    with pytest.raises(LakeSchemaError, match="interval_start"):
        commit_interval(local_location, START + timedelta(hours=1), tables)
    with pytest.raises(LakeSchemaError, match="unknown lake tables"):
        commit_interval(local_location, START, {**tables, "extra": tables[ALERTS]})
    with pytest.raises(LakeSchemaError, match="ip_count differs"):
        commit_interval(local_location, START, {ALERTS: tables[ALERTS], ALERT_IPS: tables[ALERT_IPS].slice(1)})
    assert lake_files(local_location) == []


# --------------------------------------------------------------------------- atomicity


class _FailingFile(WrappedFile):
    """Writes half of what it is given, then fails like a full disk."""

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")


def test_exception_mid_write_leaves_the_previous_files_and_no_temp(local_location, monkeypatch):
    before = sample_interval(START, seed=1)
    commit_interval(local_location, START, before)
    monkeypatch.setattr(storage, "_open_new_file", _FailingFile)
    with pytest.raises(OSError, match="No space left"):
        commit_interval(local_location, START, sample_interval(START, seed=2))
    assert same_rows(read_interval(local_location, ALERTS, START), before[ALERTS])
    assert same_rows(read_interval(local_location, ALERT_IPS, START), before[ALERT_IPS])
    assert len(lake_files(local_location)) == 2  # the temp file was removed


def test_failure_on_the_second_table_leaves_the_first_untouched_too(local_location, monkeypatch):
    """Both files of an interval are staged (then recorded) before either replaces its live file."""
    before = sample_interval(START, seed=1)
    commit_interval(local_location, START, before)
    opened = []

    def fail_on_second(path):
        opened.append(path)
        return _FailingFile(path) if len(opened) == 2 else open(path, "xb")

    monkeypatch.setattr(storage, "_open_new_file", fail_on_second)
    with pytest.raises(OSError):
        commit_interval(local_location, START, sample_interval(START, seed=2))
    assert "/commits/" in opened[0] and "alert_ips.parquet" in opened[0] and "alerts.parquet" in opened[1]
    assert same_rows(read_interval(local_location, ALERTS, START), before[ALERTS])
    assert same_rows(read_interval(local_location, ALERT_IPS, START), before[ALERT_IPS])
    assert len(lake_files(local_location)) == 2


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"child exited with {process.returncode} before {path.name}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"child did not reach {path.name} in {timeout} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_process_killed_mid_write_leaves_the_previous_version(local_location, tmp_path):
    before = sample_interval(START, seed=1)
    commit_interval(local_location, START, before)
    marker = tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "stall-local", local_location.root, str(marker), "5"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(),
    )  # fmt: skip
    try:
        _wait_for(marker, child)
        child.kill()
    finally:
        child.wait(timeout=60)
    assert child.returncode == -9
    temp = Path(marker.read_text())
    # The kill really hit the middle of a large file: half of it is on disk, unreadable.
    assert "/commits/" in str(temp) and "alert_ips.parquet" in temp.name and temp.stat().st_size > 1_000_000
    with pytest.raises(pa.ArrowInvalid):
        pq.read_metadata(temp)
    # Killed while staging, before the commit record: nothing of the hour changed.
    leftovers = sorted(Path(local_location.root).rglob("*.tmp"))
    assert leftovers == [temp]
    # Readers see exactly the previous version; the half file matches no reader's glob.
    assert same_rows(read_interval(local_location, ALERTS, START), before[ALERTS])
    assert same_rows(duckdb_read(local_location, ALERT_IPS).drop_columns(["date"]).cast(ALERT_IPS_SCHEMA), before[ALERT_IPS])
    # A rerun commits normally and discards the dead writer's incomplete staging.
    after = sample_interval(START, seed=2)
    commit_interval(local_location, START, after)
    assert same_rows(read_interval(local_location, ALERT_IPS, START), after[ALERT_IPS])
    assert not temp.exists()
    assert len(lake_files(local_location)) == 2


def test_stale_temp_cleanup_keeps_young_temps_and_real_files(tmp_path):
    (tmp_path / ".interval=20240101T00.parquet.abc.tmp").write_bytes(b"x")
    (tmp_path / "interval=20240101T00.parquet").write_bytes(b"x")
    old = tmp_path / ".interval=20240101T01.parquet.def.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_stale_temp_files(str(tmp_path)) == [str(old)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".interval=20240101T00.parquet.abc.tmp", "interval=20240101T00.parquet"]


@pytest.mark.slow
def test_concurrent_writers_leave_one_complete_version(local_location):
    """Two processes commit their own version of one interval over and over while we read."""
    versions = {seed: sample_interval(START, alerts=300, ips_per_alert=5, seed=seed) for seed in (11, 12)}
    children = [
        subprocess.Popen([sys.executable, str(CHILD), "commit-loop", local_location.root, str(seed), "25"],
                         stderr=subprocess.PIPE, text=True, env=_child_env())
        for seed in versions
    ]  # fmt: skip
    path = local_location.path(interval_file(ALERT_IPS, START))
    fingerprint_sql = f"select count(*) as n, min(alert_id) as a, max(ip) as i from read_parquet('{local_location.table_glob(ALERT_IPS)}')"
    fingerprints = {
        seed: {"n": t[ALERT_IPS].num_rows, "a": min(t[ALERT_IPS].column("alert_id").to_pylist()), "i": max(t[ALERT_IPS].column("ip").to_pylist())}
        for seed, t in versions.items()
    }
    assert fingerprints[11] != fingerprints[12]
    seen = set()
    try:
        while any(child.poll() is None for child in children):
            try:
                # One open file = one version. (pq.read_table(path) opens the path twice,
                # footer then pages, and could pair two versions: a reader artefact.)
                with open(path, "rb") as handle:
                    read = pq.read_table(handle)  # must always parse: never a half file
            except FileNotFoundError:
                read = None  # before the first commit
            if read is not None:
                matches = [seed for seed, tables in versions.items() if read.equals(tables[ALERT_IPS])]
                assert len(matches) == 1, "a reader saw a file that is neither version"
                seen.add(matches[0])
                # And what an analyst's DuckDB query sees is one version too.
                assert duckdb_query(fingerprint_sql).to_pylist()[0] in fingerprints.values()
            time.sleep(0.02)
    finally:
        for child in children:
            child.wait(timeout=300)
    assert [child.returncode for child in children] == [0, 0], [child.stderr.read() for child in children]
    final_ips = read_interval(local_location, ALERT_IPS, START)
    final_alerts = read_interval(local_location, ALERTS, START)
    winner = [seed for seed, tables in versions.items() if final_ips.equals(tables[ALERT_IPS])]
    assert len(winner) == 1
    # Both tables come from the same writer: commits of one interval never interleave.
    assert final_alerts.equals(versions[winner[0]][ALERTS])
    assert len(lake_files(local_location)) == 2
    assert seen  # the reader did observe the file while the writers ran


def test_large_interval_round_trip(local_location):
    tables = large_interval(START, alerts=2000, ips_per_alert=10)
    commit_interval(local_location, START, tables)
    counts = duckdb_query(f"select count(*) as n, count(distinct alert_id) as a from read_parquet('{local_location.table_glob(ALERT_IPS)}')")
    assert counts.to_pylist() == [{"n": 20000, "a": 2000}]


def test_local_day_lock_waits_with_a_timeout(local_location):
    """Two holders of one day's lock: the second waits, then gives up with LakeLockTimeout."""
    import time

    from mde_pipeline.lake.locks import LakeLockTimeout, lake_lock

    with lake_lock(local_location, "date=2024-02-29"):
        started = time.monotonic()
        with pytest.raises(LakeLockTimeout, match="stayed held"):
            with lake_lock(local_location, "date=2024-02-29", timeout=0.5):
                pass
        assert 0.4 < time.monotonic() - started < 5
    with lake_lock(local_location, "date=2024-02-29", timeout=0.5):
        pass
