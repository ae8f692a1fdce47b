"""Retention (lake/retention.py): expired whole days leave the lake, both tables, the IP
index's coverage, staging and fetch cache; a dry run lists; a kill at any step is
finished by the next run; a day being loaded stays; readers never see an alert without
its IPs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from mde_pipeline.analytics.session import connect
from mde_pipeline.lake import retention
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.ip_index import index_months, valid_month_indexes
from mde_pipeline.lake.layout import commit_path, fetch_cache_path, staging_path
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.retention import (
    KEPT,
    REMOVED,
    STEPS,
    WOULD_REMOVE,
    RetentionSettingError,
    apply_retention,
    first_day_kept,
    oldest_day,
    parse_keep_days,
    retention_step,
)
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS
from mde_pipeline.lake.storage import write_files_atomic
from tests.analytics.conftest import FIRST_DAY, OTHER_TENANT, TENANT, day_name, tenant_dir
from tests.support.kill_points import kill_at, revive

OLD = day_name(0)  # 2025-03-01: the day that expires
TODAY = FIRST_DAY + timedelta(days=4)  # 2025-03-05
KEEP = 3  # keeps 2025-03-02 onwards


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_locks" not in p.parts)


def _prepare(location) -> None:
    """The old day compacted and indexed, with a fetch-cache hour, a leftover commit
    folder and a compaction staging folder of it, and its swapped-out hourly directories
    (all of what retention must take)."""
    for table in SCHEMAS:
        compact_day(location, table, OLD)
        compact_day(location, table, day_name(1))
    index_months(location)
    write_files_atomic(location, {
        fetch_cache_path(TENANT, FIRST_DAY + timedelta(hours=5), "part.jsonl"): b"{}\n",
        fetch_cache_path(TENANT, FIRST_DAY + timedelta(days=1, hours=5), "part.jsonl"): b"{}\n",
        f"_staging/compaction/{ALERT_IPS}/date={OLD}/leftover.tmp": b"x",
    })  # fmt: skip


def _day_rows(root: Path, day: str) -> dict[str, int]:
    with connect(resolve_lake_location(str(root))) as session:
        return {t: session.execute(f"select count(*) from {t} where date = DATE '{day}' and tenant_id = '{TENANT}'").fetchone()[0]
                for t in SCHEMAS}  # fmt: skip


def _alerts_without_ips(root: Path) -> int:
    """Alert versions a reader sees as done (ip_count > 0) whose IP rows are not all there."""
    with connect(resolve_lake_location(str(root)), use_ip_index=False) as session:
        return session.execute(
            "select count(*) from alerts a where a.ip_count > (select count(*) from alert_ips i where i.tenant_id = a.tenant_id "
            "and i.alert_id = a.alert_id and i.alert_last_update_time = a.last_update_time)"
        ).fetchone()[0]


def _assert_old_day_gone(root: Path) -> None:
    left = [f for f in _files(root) if OLD in f or "20250301T" in f]
    assert left == [], left
    assert _day_rows(root, OLD) == {ALERTS: 0, ALERT_IPS: 0}
    assert _day_rows(root, day_name(1))[ALERTS] > 0


def test_expired_days_leave_the_lake_whole_and_the_index_is_rebuilt_without_them(hourly_lake, caplog):
    root, location = hourly_lake
    _prepare(location)
    other_before = [f for f in _files(root) if OTHER_TENANT in f]
    kept_before = _day_rows(root, day_name(1))
    assert oldest_day(location) == OLD
    # The swapped-out hourly days, within their grace: they go with the day too.
    assert len(list((tenant_dir(root, "_staging") / "compaction_retired").glob(f"*/date={OLD}/*"))) == 2

    session = connect(resolve_lake_location(str(root)))  # an analyst's session open across the removal
    count_ips = "select count(*) from alert_ips where date = DATE '2025-03-01'"
    assert session.execute(count_ips).fetchone()[0] > 0
    caplog.set_level("INFO", logger="mde_pipeline.lake.retention")
    summary = retention_step(resolve_lake_location(str(root)), KEEP, TODAY)
    assert session.execute(count_ips).fetchone()[0] == 0
    session.close()
    assert summary["first_day_kept"] == day_name(1) == first_day_kept(KEEP, TODAY)
    assert [(d["tenant_id"], d["day"], d["action"]) for d in summary["days"]] == [(TENANT, OLD, REMOVED)]
    assert [r.message for r in caplog.records if "removed day" in r.message] == [
        f"retention: removed day {OLD} of tenant {TENANT} ({summary['days'][0]['files']} files)"
    ]
    _assert_old_day_gone(root)
    assert not (tenant_dir(root, "_staging") / "fetch_cache" / TENANT / "20250301T05").exists()
    assert (tenant_dir(root, "_staging") / "fetch_cache" / TENANT / "20250302T05").exists()
    assert not (tenant_dir(root, ALERTS) / f"date={OLD}").exists()
    assert [f for f in _files(root) if OTHER_TENANT in f] == other_before  # another tenant's days are its own
    assert _day_rows(root, day_name(1)) == kept_before
    assert oldest_day(location) == day_name(1)

    # The month's index went with the day; the index step rebuilds it over the days left.
    assert valid_month_indexes(location) == []
    [month] = index_months(location)
    assert month.days == (day_name(1),)
    # A rerun has nothing left to do.
    assert retention_step(location, KEEP, TODAY)["days"] == []


def test_dry_run_lists_what_would_go_and_removes_nothing(hourly_lake, caplog):
    root, location = hourly_lake
    _prepare(location)
    before = _files(root)
    caplog.set_level("INFO", logger="mde_pipeline.lake.retention")
    [result] = apply_retention(location, KEEP, TODAY, dry_run=True)
    assert (result.day, result.action) == (OLD, WOULD_REMOVE)
    listed = sorted(str(Path(p).relative_to(root)) for p in result.paths)
    assert listed == sorted(f for f in before if OLD in f or "20250301T" in f)
    assert result.files == len(listed) > 2
    assert _files(root) == before
    summary = retention_step(location, KEEP, TODAY, dry_run=True)
    assert summary["dry_run"] and summary["days"][0]["action"] == WOULD_REMOVE
    assert any("retention dry run: day 2025-03-01" in r.message for r in caplog.records)
    assert _files(root) == before


def test_keep_everything_by_default(hourly_lake):
    root, location = hourly_lake
    before = _files(root)
    assert retention_step(location, None, TODAY) == {"keep_days": None, "first_day_kept": None, "dry_run": False, "days": []}
    assert _files(root) == before


@pytest.mark.parametrize("step", STEPS)
def test_a_removal_killed_at_each_step_is_finished_by_the_next_run(hourly_lake, monkeypatch, step):
    """Killed after each step: readers never see an alert without its IPs; the next run
    finishes the day, even when the setting changed to keep everything meanwhile."""
    root, location = hourly_lake
    _prepare(location)
    kill_at(monkeypatch, retention, "retention_checkpoint", step)
    with pytest.raises(KeyboardInterrupt):
        apply_retention(location, KEEP, TODAY)
    revive(monkeypatch, retention, "retention_checkpoint")
    assert _alerts_without_ips(root) == 0

    results = apply_retention(location, None, TODAY)  # a removal once started is finished
    if step == "unmarked":
        assert results == []  # nothing was left to do
    else:
        assert [(r.day, r.action) for r in results] == [(OLD, REMOVED)]
    _assert_old_day_gone(root)
    assert not (tenant_dir(root, "_staging") / "retention").exists() or not any((tenant_dir(root, "_staging") / "retention").iterdir())


def test_a_day_being_loaded_stays_and_the_reason_is_given(hourly_lake, caplog):
    root, location = hourly_lake
    hour = FIRST_DAY + timedelta(hours=7)
    write_files_atomic(location, {staging_path(hour, "backfill__2025-03-01", "listing.json"): b"{}"})
    before = _files(root)
    [result] = apply_retention(location, KEEP, TODAY)
    assert (result.action, result.day) == (KEPT, OLD)
    assert "2025-03-01T07:00:00+00:00 is staged" in result.reason
    assert _files(root) == before
    assert any("kept for now" in r.message for r in caplog.records)

    # The run published: its staging is gone, but an unfinished commit record holds the day too.
    Path(location.path(staging_path(hour))).rename(root / "moved")
    write_files_atomic(location, {commit_path(hour, "abc", "_commit.json"): json.dumps({}).encode()})
    [result] = apply_retention(location, KEEP, TODAY)
    assert result.action == KEPT and "not finished" in result.reason

    # A commit staging without its record is a leftover (the writer died before its
    # commit point): it goes with the day.
    Path(location.path(commit_path(hour, "abc", "_commit.json"))).unlink()
    [result] = apply_retention(location, KEEP, TODAY)
    assert result.action == REMOVED
    assert not Path(location.path(commit_path(hour))).exists()


@pytest.mark.parametrize(("value", "days"), [(None, None), ("", None), (" none ", None), ("30", 30), (7, 7), (" 400 ", 400)])
def test_the_setting_parses(value, days):
    assert parse_keep_days(value) == days


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "thirty", "30d"])
def test_a_bad_setting_is_refused_naming_it(value):
    with pytest.raises(RetentionSettingError, match="mde_lake_retention_days"):
        parse_keep_days(value)


def test_the_cli_lists_by_default_and_removes_with_apply(hourly_lake, capsys, monkeypatch):
    from mde_pipeline.airflow.lake_retention import main

    root, location = hourly_lake
    before = _files(root)
    monkeypatch.delenv("AIRFLOW_VAR_MDE_LAKE_RETENTION_DAYS", raising=False)
    assert main(["--lake", str(root), "--today", TODAY.date().isoformat()]) == 0
    assert "keeps everything" in capsys.readouterr().out and _files(root) == before
    assert main(["--lake", str(root), "--today", TODAY.date().isoformat(), "--days", str(KEEP), "--files"]) == 0
    out = capsys.readouterr().out
    assert f"{TENANT} {OLD} would remove (" in out and "interval=20250301T00.parquet" in out and _files(root) == before
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_RETENTION_DAYS", str(KEEP))
    assert main(["--lake", str(root), "--today", TODAY.date().isoformat(), "--apply"]) == 0
    assert f"{TENANT} {OLD} removed (" in capsys.readouterr().out
    _assert_old_day_gone(root)


def test_a_killed_removal_of_a_tenants_last_day_is_finished_from_its_staging(hourly_lake, monkeypatch):
    """Its tables are gone (on ADLS their folders with them): the tenant is found by its
    staging, and the record finished, with retention switched off meanwhile."""
    root, location = hourly_lake
    other = location.for_tenant(OTHER_TENANT)
    def kill(step):
        if step == "removed alert_ips":
            raise KeyboardInterrupt(step)

    monkeypatch.setattr(retention, "retention_checkpoint", kill)
    with pytest.raises(KeyboardInterrupt):
        apply_retention(other, 2, TODAY)  # its one day, 2025-03-02, expires
    monkeypatch.undo()
    for top in (*SCHEMAS, "_ip_index"):
        if tenant_dir(root, top, OTHER_TENANT).exists():
            tenant_dir(root, top, OTHER_TENANT).rmdir()
    assert retention.marked_days(other) == [day_name(1)]
    summary = retention_step(resolve_lake_location(str(root)), None, TODAY)
    assert [(d["tenant_id"], d["day"], d["action"]) for d in summary["days"]] == [(OTHER_TENANT, day_name(1), REMOVED)]
    assert retention.marked_days(other) == [] and _day_rows(root, day_name(1))[ALERTS] > 0  # TENANT's day stays
