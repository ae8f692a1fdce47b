"""Retention on ADLS (Azurite): a full removal of an expired compacted, indexed day; a
removal failed at each of its steps and finished by the next run; a process killed
half-way (after ``alerts``, before ``alert_ips``) finished by the next run once its lease
has expired. The local kill points (every step) are in tests/analytics/test_retention.py."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lake_data import TENANT, duckdb_read, sample_interval, wait_for_marker

from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.ip_index import index_months, valid_month_indexes
from mde_pipeline.lake.layout import day_directory, fetch_cache_path
from mde_pipeline.lake import retention
from mde_pipeline.lake.retention import REMOVED, STEPS, apply_retention
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS
from mde_pipeline.lake.storage import write_files_atomic
from tests.lake.azurite import resolve_with_airflow

UTC = timezone.utc
START = datetime(2024, 2, 29, 23, tzinfo=UTC)  # lake_child.START
DAY, KEPT_HOUR = "2024-02-29", datetime(2024, 3, 8, 5, tzinfo=UTC)
TODAY, KEEP = "2024-03-10", 3  # lake_child.retention_kill's setting: keeps 2024-03-07 onwards
CHILD = Path(__file__).resolve().parent / "lake_child.py"

pytestmark = pytest.mark.slow  # Azurite and a killed process (the next run waits out its 15 s lease)


def _lake(location) -> None:
    for hour in [START - timedelta(hours=h) for h in range(3)] + [KEPT_HOUR]:
        commit_interval(location, hour, sample_interval(hour, alerts=20, ips_per_alert=3, seed=hour.hour))
    for table in SCHEMAS:
        compact_day(location, table, DAY)
    index_months(location)
    write_files_atomic(location, {fetch_cache_path(TENANT, START, "part.jsonl"): b"{}\n"})


def _blobs(location, relative: str) -> list[str]:
    location.fs.invalidate_cache()
    try:
        return sorted(location.fs.find(location.path(relative)))
    except FileNotFoundError:
        return []


def _days(location, table: str) -> list[str]:
    return sorted({str(d) for d in duckdb_read(location, table, "date").column("date").to_pylist()})


def _assert_day_gone(location) -> None:
    for table in SCHEMAS:
        assert _blobs(location, day_directory(table, DAY)) == []
        assert _days(location, table) == ["2024-03-08"]
    assert _blobs(location, fetch_cache_path(TENANT, START)) == []
    assert _blobs(location, "_staging/retention") == []


def test_retention_on_adls_full_run_and_a_kill_finished_by_the_next_run(azurite, azurite_conn_id, abfs_root, tmp_path):
    full, killed = (resolve_with_airflow(f"{abfs_root}/{name}", conn_id=azurite_conn_id).for_tenant(TENANT) for name in ("full", "killed"))
    _lake(killed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    marker = tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "retention-kill", azurite.connection_string, f"{abfs_root}/killed", "removed alerts", str(marker)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _lake(full)  # while the child works
        assert [i.days for i in valid_month_indexes(full)] == [(DAY,)]
        [result] = apply_retention(full, KEEP, TODAY)
        assert (result.day, result.action) == (DAY, REMOVED)
        _assert_day_gone(full)
        assert valid_month_indexes(full) == [] and index_months(full) == []  # no compacted day left in February

        wait_for_marker(child, marker, "reached step 'removed alerts'")
        child.kill()
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -9
    # Killed after alerts went: a reader sees no alert of the day, and its IPs for now
    # (never an alert without its IPs).
    assert DAY not in _days(killed, ALERTS) and DAY in _days(killed, ALERT_IPS)
    assert _blobs(killed, "_staging/retention")  # the removal record: the next run finishes it

    # The next run, with retention switched off meanwhile, finishes the removal it began
    # (once the killed holder's lease has expired).
    [result] = apply_retention(killed, None, TODAY)
    assert (result.day, result.action) == (DAY, REMOVED)
    _assert_day_gone(killed)


def _kept_rows(location) -> dict[str, list]:
    """Every row of the kept day, per table, in a stable order (what no step may touch)."""
    return {
        table: sorted(str(row) for row in duckdb_read(location, table, "*").to_pylist() if str(row["date"]) != DAY)
        for table in SCHEMAS
    }


def test_retention_on_adls_failed_at_each_step_is_finished_by_the_next_run(azurite_conn_id, abfs_root, monkeypatch):
    """An error between any two steps (the task fails, its lease is released): a reader
    never sees an alert of the day without its IPs, the next run (retention switched off
    meanwhile) finishes the removal, and the kept day holds exactly what it held."""
    for step in STEPS:
        location = resolve_with_airflow(f"{abfs_root}/{step.replace(' ', '-')}", conn_id=azurite_conn_id).for_tenant(TENANT)
        _lake(location)
        kept = _kept_rows(location)

        def fail(reached, step=step):
            if reached == step:
                raise RuntimeError(f"failed after {reached}")

        monkeypatch.setattr(retention, "retention_checkpoint", fail)
        with pytest.raises(RuntimeError, match=step):
            apply_retention(location, KEEP, TODAY)
        monkeypatch.setattr(retention, "retention_checkpoint", lambda reached: None)
        assert DAY not in _days(location, ALERTS) or DAY in _days(location, ALERT_IPS), step

        results = apply_retention(location, None, TODAY)
        assert [(r.day, r.action) for r in results] == ([] if step == "unmarked" else [(DAY, REMOVED)]), step
        _assert_day_gone(location)
        assert _kept_rows(location) == kept, step
    assert all(kept.values())
