"""The recent IP index (lake/recent_index.py): the hourly days in one IP-sorted file, used
by the analysts' session only while every file it names is exactly what the lake holds.

The lake (tests/analytics/conftest.py): TENANT with 3 hourly days, OTHER_TENANT with one.
Day 0 is compacted and month-indexed, days 1 and 2 stay hourly: the layout between two
compaction runs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from mde_pipeline.analytics.session import connect
from mde_pipeline.lake import recent_index
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.ip_index import INDEX_DIR, index_months, index_step
from mde_pipeline.lake.layout import interval_file
from mde_pipeline.lake.parquet import parquet_bytes
from mde_pipeline.lake.recent_index import (
    build_recent_index,
    read_manifest,
    recent_days,
    refresh_recent_index,
    valid_recent_index,
)
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS
from mde_pipeline.lake.storage import write_files_atomic
from tests.analytics.conftest import DAYS, FIRST_DAY, TENANT, day_name, small_tables, tenant_dir, two_days_of_hours
from tests.analytics.test_ip_index import KEYS, QUERY, alert_ips_view, compact, lake_ips
from tests.lake.lake_data import wait_for_marker

CHILD = Path(__file__).resolve().parents[1] / "lake" / "lake_child.py"
HOURLY_DAYS = tuple(day_name(d) for d in range(1, DAYS))
LAST_HOUR = FIRST_DAY + timedelta(days=DAYS - 1, hours=23)


def between_compactions(location) -> None:
    """Day 0 compacted and indexed; days 1 and 2 hourly."""
    compact(location, days=[0])
    index_months(location)


def recent_folder(root: Path) -> Path:
    return tenant_dir(root, INDEX_DIR) / "month=recent"


def session_rows(root: Path) -> tuple[list[tuple], str]:
    with connect(str(root)) as session:
        return session.execute(QUERY).fetchall(), alert_ips_view(session)


def test_the_session_reads_the_hourly_days_from_the_recent_index_with_the_same_rows(hourly_lake):
    root, location = hourly_lake
    between_compactions(location)
    recent = build_recent_index(location)

    assert recent.days == HOURLY_DAYS
    data = pq.read_table(recent.uri)
    ips = data.column("ip").to_pylist()
    assert ips == sorted(ips) and data.num_rows == recent.rows
    rows, definition = session_rows(root)
    assert rows == lake_ips(root)
    assert str(Path(recent.uri)) in definition
    # Month index + recent index: no glob left for TENANT (the other tenant has no index).
    assert f"tenant_id={TENANT}/date=" not in definition
    with connect(str(root), use_ip_index=False) as plain:
        assert plain.execute(QUERY).fetchall() == rows
    # Nothing changed: the next build writes nothing.
    assert build_recent_index(location) == recent
    assert sorted(p.name for p in recent_folder(root).iterdir()) == sorted(["_index.json", Path(recent.uri).name])


def test_a_file_replaced_or_added_after_the_build_makes_it_unused_and_an_open_session_follows(hourly_lake):
    root, location = hourly_lake
    between_compactions(location)
    for table in (ALERT_IPS, ALERTS):  # the last hour not loaded yet
        (root / interval_file(table, LAST_HOUR).replace("/", f"/tenant_id={TENANT}/", 1)).unlink()
    recent = build_recent_index(location)
    with connect(str(root)) as session:
        assert str(Path(recent.uri)) in alert_ips_view(session)
        assert session.execute(QUERY).fetchall() == lake_ips(root)

        # Added: the last hour arrives. The index no longer names every file of its day.
        commit_interval(location, LAST_HOUR, small_tables(LAST_HOUR))
        assert valid_recent_index(location) is None
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        assert "_ip_index" in alert_ips_view(session) and "month=recent" not in alert_ips_view(session)

        rebuilt = build_recent_index(location)
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        assert str(Path(rebuilt.uri)) in alert_ips_view(session) and not Path(recent.uri).exists()

        # Replaced under the same name, bypassing commit (no hook): still told apart.
        hour = FIRST_DAY + timedelta(days=1, hours=5)
        rerun = small_tables(hour, variant=2)[ALERT_IPS]
        live = interval_file(ALERT_IPS, hour)
        write_files_atomic(location, {live: parquet_bytes(ALERT_IPS, rerun)})
        assert valid_recent_index(location) is None
        assert session.execute(QUERY).fetchall() == lake_ips(root)

        # Compacting a covered day: it falls to the month index, the recent index shrinks.
        build_recent_index(location)
        compact(location, days=[1])
        index_months(location)
        assert valid_recent_index(location) is None
        assert session.execute(QUERY).fetchall() == lake_ips(root)
        assert build_recent_index(location).days == (day_name(2),)
        assert session.execute(QUERY).fetchall() == lake_ips(root)


def test_index_step_keeps_it_current_and_drops_it_when_no_day_is_hourly(hourly_lake):
    root, location = hourly_lake
    between_compactions(location)
    index_step(location)  # the tenant's location: builds the recent index too
    assert valid_recent_index(location).days == HOURLY_DAYS
    compact(location)
    index_step(location)
    assert valid_recent_index(location) is None and not list(recent_folder(root).glob("*"))
    assert session_rows(root)[0] == lake_ips(root)


def test_cost_is_bounded_to_the_newest_days(hourly_lake, monkeypatch):
    root, location = hourly_lake
    monkeypatch.setattr(recent_index, "RECENT_DAYS", 2)
    assert sorted(recent_days(location)) == list(HOURLY_DAYS)  # day 0 hourly too, but older
    recent = build_recent_index(location)
    assert recent.days == HOURLY_DAYS
    assert session_rows(root)[0] == lake_ips(root)  # day 0 from its files, no month index


def test_a_failed_build_is_logged_and_never_raises(hourly_lake, monkeypatch, caplog):
    root, location = hourly_lake
    between_compactions(location)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(recent_index, "write_files_atomic", broken)
    with caplog.at_level(logging.WARNING, logger=recent_index.__name__):
        assert refresh_recent_index(location) is None
    assert "disk full" in caplog.text
    assert valid_recent_index(location) is None
    assert session_rows(root)[0] == lake_ips(root)


def test_a_recent_index_overlapping_the_month_index_is_not_used(hourly_lake):
    """A compaction and index run between the session's two checks: never counted twice."""
    root, location = hourly_lake
    between_compactions(location)
    recent = build_recent_index(location)
    manifest_path = recent_folder(root) / "_index.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["days"][day_name(0)] = {p.name: recent_index.file_version(location.fs.info(str(p)))
                                     for p in (tenant_dir(root, ALERT_IPS) / f"date={day_name(0)}").glob("*.parquet")}  # fmt: skip
    manifest_path.write_text(json.dumps(manifest))
    assert valid_recent_index(location) is not None  # matches the lake, but day 0 is the month index's
    rows, definition = session_rows(root)
    assert rows == lake_ips(root) and str(Path(recent.uri)) not in definition


KILL_STEPS = ("index written", "manifest written")


def test_a_build_killed_at_each_step_is_never_wrong_and_the_next_build_cleans_up(hourly_lake, tmp_path):
    """Real kills (lake_child.py recent-index-kill): the first build, then a rebuild after
    a new hour, each killed after the new file and after the manifest."""
    root, location = hourly_lake
    between_compactions(location)
    first = build_recent_index(location)
    hour = FIRST_DAY + timedelta(days=2, hours=3)
    commit_interval(location, hour, small_tables(hour, variant=1))  # the index is now stale
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    for step in KILL_STEPS:
        marker = tmp_path / f"{step.replace(' ', '-')}.marker"
        child = subprocess.Popen(
            [sys.executable, str(CHILD), "recent-index-kill", str(root), TENANT, step, str(marker)],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            wait_for_marker(child, marker, "reached its step")
        finally:
            child.kill()
            child.wait(timeout=60)
        assert child.returncode == -9
        names = {p.name for p in recent_folder(root).iterdir()}
        if step == "index written":
            # The old manifest still names the old (stale) file: not used; the new file is unnamed.
            assert len(names) == 3 and valid_recent_index(location) is None
        else:
            # The manifest names the new file (valid); the old file is a leftover.
            assert Path(first.uri).name in names and valid_recent_index(location) is not None
        assert session_rows(root)[0] == lake_ips(root)
    rebuilt = build_recent_index(location)
    assert {p.name for p in recent_folder(root).iterdir()} == {"_index.json", Path(rebuilt.uri).name}
    assert session_rows(root)[0] == lake_ips(root)


@pytest.mark.slow
def test_recent_index_on_abfs(abfs_location):
    """Through adlfs against Azurite: versions are ETags; a rerun under the same name is told apart."""
    from mde_pipeline.analytics.session import LakeSession
    from mde_pipeline.lake.tenants import replace_tenant

    location = abfs_location
    two_days_of_hours(location, every_hours=8)
    compact(location, days=[0])
    index_months(location)
    recent = build_recent_index(location)
    assert recent.days == (day_name(1),) and recent.uri.startswith("abfs://")
    assert all(v.startswith('"') for files in read_manifest(location)["days"].values() for v in files.values())  # ETags

    def plain_rows():
        connection = duckdb.connect()
        connection.register_filesystem(location.fs)
        return connection.execute(
            f"SELECT {KEYS}, severity, interval_start, date FROM read_parquet('{location.uri(ALERT_IPS)}/*/*.parquet', "
            f"hive_partitioning = true, hive_types = {{'tenant_id': VARCHAR, 'date': DATE}}) ORDER BY {KEYS}"
        ).fetchall()

    with LakeSession(replace_tenant(location, None)) as session:
        assert recent.uri in alert_ips_view(session)
        assert session.execute(QUERY).fetchall() == plain_rows()
        hour = FIRST_DAY + timedelta(days=1, hours=8)
        commit_interval(location, hour, small_tables(hour, 1))  # same name, new ETag
        assert valid_recent_index(location) is None
        assert session.execute(QUERY).fetchall() == plain_rows()
        assert refresh_recent_index(location) is not None
        assert session.execute(QUERY).fetchall() == plain_rows()
