"""The lake on ADLS (Azurite) through abfs://, Airflow's ObjectStoragePath and the Azure provider."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lake_data import duckdb_read, hourly_intervals, same_rows, sample_interval, wait_for_marker
from tests.lake.azurite import ACCOUNT_KEY, ACCOUNT_NAME, resolve_with_airflow

from mde_pipeline.lake.location import LakeLocationError
from mde_pipeline.lake.schema import ALERT_IPS, ALERT_IPS_SCHEMA, ALERTS, ALERTS_SCHEMA, empty_table
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.layout import interval_file
from mde_pipeline.lake.storage import LakeWriteError

UTC = timezone.utc
START = datetime(2024, 2, 29, 23, tzinfo=UTC)  # lake_child.START
CHILD = Path(__file__).resolve().parent / "lake_child.py"

pytestmark = pytest.mark.slow  # Azurite (started once per session) and writer processes


def blob_names(location) -> list[str]:
    """Every blob under the root except lock blobs, relative to the root."""
    location.fs.invalidate_cache()
    prefix = location.root + "/"
    return sorted(path[len(prefix) :] for path in location.fs.find(location.root) if "/_locks/" not in path)


def tenant_files(location, relative_paths) -> list[str]:
    """``relative_paths`` (layout's, without the tenant) as the tenant's files relative to the root."""
    prefix = location.root + "/"
    return sorted(location.path(p)[len(prefix) :] for p in relative_paths)


def test_root_forms_resolve_to_the_container_and_prefix(azurite_conn_id, abfs_root):
    location = resolve_with_airflow(abfs_root, conn_id=azurite_conn_id)
    prefix = abfs_root.split(".windows.net/", 1)[1]
    container = abfs_root.split("://", 1)[1].split("@", 1)[0]
    assert (location.protocol, location.root, location.account_name) == ("abfs", f"{container}/{prefix}", ACCOUNT_NAME)
    assert location.uri("alerts") == f"abfs://{container}/{prefix}/alerts"
    short = resolve_with_airflow(f"abfss://{container}/{prefix}", conn_id=azurite_conn_id)
    assert short.root == location.root and short.account_name == ACCOUNT_NAME
    assert ACCOUNT_KEY not in repr(location)


def test_account_in_the_root_must_match_the_connection(azurite_conn_id):
    with pytest.raises(LakeLocationError, match="names storage account 'otheraccount'.*'devstoreaccount1'"):
        resolve_with_airflow("abfs://lake@otheraccount.dfs.core.windows.net/x", conn_id=azurite_conn_id)


def test_end_to_end_commit_rerun_and_duckdb_read(abfs_location):
    hours = [START - timedelta(hours=1), START, START + timedelta(hours=1)]  # 2024-02-29 and 2024-03-01
    expected = {}
    for seed, hour in enumerate(hours):
        expected[hour] = sample_interval(hour, seed=seed, alerts=20)
        commit_interval(abfs_location, hour, expected[hour])
    # Rerun the middle hour with other contents: exactly the second version remains.
    expected[START] = sample_interval(START, seed=99, alerts=7)
    commit_interval(abfs_location, START, expected[START])

    assert blob_names(abfs_location) == tenant_files(abfs_location, (interval_file(t, hour) for t in (ALERTS, ALERT_IPS) for hour in hours))
    assert hourly_intervals(abfs_location, ALERTS) == hours
    for hour in hours:
        for table in (ALERTS, ALERT_IPS):
            assert same_rows(read_interval(abfs_location, table, hour), expected[hour][table])

    for table, schema in ((ALERT_IPS, ALERT_IPS_SCHEMA), (ALERTS, ALERTS_SCHEMA)):
        read = duckdb_read(abfs_location, table)
        assert sorted({d.isoformat() for d in read.column("date").to_pylist()}) == ["2024-02-29", "2024-03-01"]
        want = pa.concat_tables([expected[hour][table] for hour in hours])
        assert same_rows(read.drop_columns(["date"]).cast(schema), want)


def test_empty_interval_on_blob_storage(abfs_location):
    commit_interval(abfs_location, START, {ALERTS: empty_table(ALERTS), ALERT_IPS: empty_table(ALERT_IPS)})
    stored = read_interval(abfs_location, ALERTS, START)
    assert stored.num_rows == 0 and stored.schema == ALERTS_SCHEMA
    assert read_interval(abfs_location, ALERTS, START + timedelta(hours=1)) is None


def test_airflow_object_storage_path_sees_the_same_files(abfs_location):
    tables = sample_interval(START)
    commit_interval(abfs_location, START, tables)
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(abfs_location.uri(interval_file(ALERT_IPS, START)), conn_id=abfs_location.conn_id)
    assert path.conn_id == abfs_location.conn_id and path.exists()
    assert pq.read_table(pa.BufferReader(path.read_bytes())).equals(tables[ALERT_IPS])


def test_failed_upload_leaves_both_previous_files(abfs_location, monkeypatch):
    from azure.core.exceptions import ServiceResponseError
    from azure.storage.blob.aio import BlobClient

    before = sample_interval(START, seed=1)
    commit_interval(abfs_location, START, before)
    real_stage_block = BlobClient.stage_block
    calls = []

    async def stage_then_drop_connection(self, *args, **kwargs):
        calls.append(self.blob_name)
        if self.blob_name.endswith("/alerts.parquet"):  # the staged alert_ips file is complete by now
            raise ServiceResponseError("connection reset by peer")
        return await real_stage_block(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "stage_block", stage_then_drop_connection)
    with pytest.raises(LakeWriteError, match="alerts.parquet.*nothing was committed") as raised:
        commit_interval(abfs_location, START, sample_interval(START, seed=2))
    assert ACCOUNT_KEY not in str(raised.value)
    assert calls[0].endswith("/alert_ips.parquet")
    monkeypatch.undo()
    assert same_rows(read_interval(abfs_location, ALERTS, START), before[ALERTS])
    assert same_rows(read_interval(abfs_location, ALERT_IPS, START), before[ALERT_IPS])


def test_process_killed_mid_upload_leaves_the_previous_version(azurite, abfs_root, abfs_location, tmp_path):
    before = sample_interval(START, seed=1)
    commit_interval(abfs_location, START, before)
    marker = tmp_path / "stalled"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "stall-blob", azurite.connection_string, abfs_root, str(marker), "5"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for_marker(child, marker, "finished staging its blocks")
        # The kill lands after the new bytes reached the service (staged for the commit
        # record), before any Put Block List.
        container, prefix = abfs_location.path("_staging/commits").split("/", 1)
        staged = azurite.blob_service().get_container_client(container).list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
        assert [b.name for b in staged if b.name.endswith("alert_ips.parquet")]
        child.kill()
    finally:
        child.wait(timeout=60)
    assert child.returncode == -9
    assert same_rows(read_interval(abfs_location, ALERTS, START), before[ALERTS])
    assert same_rows(read_interval(abfs_location, ALERT_IPS, START), before[ALERT_IPS])
    assert same_rows(duckdb_read(abfs_location, ALERT_IPS).drop_columns(["date"]).cast(ALERT_IPS_SCHEMA), before[ALERT_IPS])
    # The rerun waits out the dead writer's lease (at most 15 s), then commits.
    after = sample_interval(START, seed=2)
    commit_interval(abfs_location, START, after)
    assert same_rows(read_interval(abfs_location, ALERT_IPS, START), after[ALERT_IPS])
    assert same_rows(read_interval(abfs_location, ALERTS, START), after[ALERTS])
    assert blob_names(abfs_location) == tenant_files(abfs_location, (interval_file(t, START) for t in (ALERTS, ALERT_IPS)))


def test_concurrent_writers_on_blob_storage_leave_one_complete_version(azurite, abfs_root, abfs_location):
    versions = {seed: sample_interval(START, alerts=300, ips_per_alert=5, seed=seed) for seed in (21, 22)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    children = [
        subprocess.Popen([sys.executable, str(CHILD), "commit-loop", abfs_root, str(seed), "6", azurite.connection_string],
                         stderr=subprocess.PIPE, text=True, env=env)
        for seed in versions
    ]  # fmt: skip
    container, blob = abfs_location.path(interval_file(ALERT_IPS, START)).split("/", 1)
    client = azurite.blob_service().get_blob_client(container, blob)
    seen = set()
    try:
        while any(child.poll() is None for child in children):
            try:
                data = client.download_blob().readall()  # one GET: one version
            except Exception as exc:  # not there before the first commit
                assert type(exc).__name__ == "ResourceNotFoundError", exc
            else:
                read = pq.read_table(pa.BufferReader(data))
                matches = [seed for seed, tables in versions.items() if read.equals(tables[ALERT_IPS])]
                assert len(matches) == 1, "a reader saw a blob that is neither version"
                seen.add(matches[0])
            time.sleep(0.05)
    finally:
        for child in children:
            child.wait(timeout=300)
    assert [child.returncode for child in children] == [0, 0], [child.stderr.read() for child in children]
    final_ips = read_interval(abfs_location, ALERT_IPS, START)
    winner = [seed for seed, tables in versions.items() if final_ips.equals(tables[ALERT_IPS])]
    assert len(winner) == 1
    assert read_interval(abfs_location, ALERTS, START).equals(versions[winner[0]][ALERTS])
    assert seen


def test_lease_lock_serialises_commits(abfs_location):
    """While one commit holds the day's lease, another waits; the holder's release lets it in."""
    from mde_pipeline.lake.locks import LakeLockTimeout, lake_lock

    with lake_lock(abfs_location, "date=2024-02-29"):
        with pytest.raises(LakeLockTimeout):
            with lake_lock(abfs_location, "date=2024-02-29", timeout=1.0):
                pass
    with lake_lock(abfs_location, "date=2024-02-29", timeout=5.0):
        pass


def test_blob_writes_never_use_open_wb(abfs_location, monkeypatch):
    """adlfs' open("wb") commits on close, even after an exception: the writer must not use it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the lake writer opened a blob for writing")

    monkeypatch.setattr(type(abfs_location.fs), "open", refuse)
    monkeypatch.setattr(type(abfs_location.fs), "_open", refuse)
    commit_interval(abfs_location, START, sample_interval(START))


def test_open_wb_really_commits_partial_data_on_exception(abfs_location):
    """Why: the failure the writer's design avoids, shown on Azurite."""
    fs = abfs_location.fs
    path = abfs_location.path("_scratch/partial.bin")
    fs.pipe_file(path, b"OLD")
    with pytest.raises(RuntimeError):
        with fs.open(path, "wb") as handle:
            handle.write(b"HALF")
            raise RuntimeError("crash mid-write")
    fs.invalidate_cache()
    assert fs.cat_file(path) == b"HALF"

