"""Crash-safe compaction on ADLS (Azurite): a compaction killed at every step of its swap,
then the next compaction run restores the exact day; a holder that lost its lease stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from lake_data import TENANT, duckdb_read, sample_interval, wait_for_marker

from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compact_closed_days, compact_day
from mde_pipeline.lake.layout import MANIFEST_NAME, day_directory
from mde_pipeline.lake.locks import LakeLockLost, check_day_held, day_lock
from mde_pipeline.lake.schema import ALERT_IPS, ROW_KEYS
from mde_pipeline.lake.storage import write_files_atomic
from tests.lake.azurite import resolve_with_airflow

UTC = timezone.utc
START = datetime(2024, 2, 29, 23, tzinfo=UTC)  # lake_child.START
DAY = "2024-02-29"
HOURS = [START - timedelta(hours=h) for h in range(4)]
CHILD = Path(__file__).resolve().parent / "lake_child.py"

pytestmark = pytest.mark.slow  # Azurite and killed writer processes (a next run waits out a 15 s lease)

# Every step of a blob swap (storage.finish_blob_swap and days.replace_day), in order.
STEPS = ["staging", "staged", "copying", "copied", "deleting", "swapped", "unmarked"]


def _rows(location) -> pa.Table:
    return duckdb_read(location, ALERT_IPS).drop_columns(["date"]).sort_by([(k, "ascending") for k in ROW_KEYS[ALERT_IPS]])


def _distinct(table: pa.Table) -> pa.Table:
    return table.group_by(table.schema.names).aggregate([]).sort_by([(k, "ascending") for k in ROW_KEYS[ALERT_IPS]])


def _blobs(location, relative: str) -> list[str]:
    location.fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[-1] for p in location.fs.find(location.path(relative)))


def _lake_with_a_day(location) -> pa.Table:
    for hour in HOURS:
        commit_interval(location, hour, sample_interval(hour, alerts=40, ips_per_alert=4, seed=hour.hour))
    return _rows(location)


def test_compaction_killed_at_each_step_is_restored_exactly_by_the_next_run(azurite, azurite_conn_id, abfs_root, tmp_path, subtests):
    """One lake per step, all killed within seconds: a killed compaction's lease blocks
    the next run for up to 15 s, and the seven waits overlap instead of adding up."""
    locations = {step: resolve_with_airflow(f"{abfs_root}/{step}", conn_id=azurite_conn_id).for_tenant(TENANT) for step in STEPS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    before, children, killed = {}, {}, []

    def kill_the_stalled(wait: bool) -> None:
        for step, child in children.items():
            marker = tmp_path / f"stalled-{step}"
            if step not in killed and (wait or marker.exists()):
                wait_for_marker(child, marker, f"reached step {step}")
                child.kill()
                killed.append(step)

    try:
        for step, location in locations.items():  # each child starts while the next lake is written
            before[step] = _lake_with_a_day(location)
            assert before[step].num_rows > 0
            children[step] = subprocess.Popen(
                [sys.executable, str(CHILD), "compact-stall", azurite.connection_string, f"{abfs_root}/{step}",
                 str(tmp_path / f"stalled-{step}"), step],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            kill_the_stalled(wait=False)
        kill_the_stalled(wait=True)
    finally:
        for child in children.values():
            child.kill()
            child.wait(timeout=60)
    assert {step: child.returncode for step, child in children.items()} == dict.fromkeys(STEPS, -9)

    far = datetime(2030, 1, 1, tzinfo=UTC)
    for step in killed:  # the first killed first: its lease is the first to expire
        location = locations[step]
        with subtests.test(step=step):
            # What a reader sees right after the crash: never a row missing, at worst some twice.
            crashed = _rows(location)
            assert _distinct(crashed).equals(_distinct(before[step])), f"rows missing after a kill at {step}"

            # The next compaction run (nothing else touches the day) recovers it first.
            compact_closed_days(location, closed_before=far, grace=timedelta(0), quiet_period=timedelta(0))
            assert _rows(location).equals(before[step])
            names = _blobs(location, day_directory(ALERT_IPS, DAY))
            assert MANIFEST_NAME in names and all(n == MANIFEST_NAME or n.startswith("compacted-") for n in names), names
            assert _blobs(location, "_staging/compaction") == []


def test_holder_that_lost_its_lease_stops_before_changing_the_day(azurite, abfs_location):
    """The lease is broken and taken by another writer: the first holder's renewal fails
    and its next destructive step raises LakeLockLost; the day is untouched."""
    before = _lake_with_a_day(abfs_location)
    container, blob = abfs_location.path("_locks/date=2024-02-29.lock").split("/", 1)
    client = azurite.blob_service().get_blob_client(container, blob)
    with day_lock(abfs_location, DAY):
        from azure.storage.blob import BlobLeaseClient

        BlobLeaseClient(client).break_lease(lease_break_period=0)
        thief = BlobLeaseClient(client)
        thief.acquire(lease_duration=60)
        try:
            time.sleep(6)  # one renewal period: the renewal fails (another lease id)
            with pytest.raises(LakeLockLost, match="lost lock"):
                compact_day(abfs_location, ALERT_IPS, DAY, lock=False)
            with pytest.raises(LakeLockLost):  # the hourly commit's write path checks too
                write_files_atomic(abfs_location, {"alert_ips/x.parquet": b"x"}, lambda: check_day_held(abfs_location, DAY))
        finally:
            thief.release()
    assert _rows(abfs_location).equals(before)
    assert _blobs(abfs_location, "_staging/compaction") == []
    assert "x.parquet" not in _blobs(abfs_location, ALERT_IPS)
