"""An hour's two tables through a commit record: failed or killed at every step, local and
on Azurite, then the next writer; the lake always reaches the fault-free truth, readers
never count a half-written hour, and a writer whose lease lapsed cannot land a write."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from commit_scenarios import HOUR, OTHER_HOUR, SCENARIOS, STEPS, hour_rows, truth
from lake_data import TENANT, same_rows, sample_interval, sample_listing, wait_for_marker

from mde_pipeline.analytics.session import connect
from mde_pipeline.lake import commit_log
from mde_pipeline.lake.commit import commit_interval, read_interval, recover_pending_commits
from mde_pipeline.lake.commit_log import LakeCommitPending, recorded_hours
from mde_pipeline.lake.layout import COMMITS_DIR, interval_file, list_names
from mde_pipeline.lake.parquet import parquet_bytes
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS
from mde_pipeline.lake.storage import LakeWriteFenced
from mde_pipeline.lake.versions import committed_versions
from tests.lake.azurite import resolve_with_airflow

CHILD = Path(__file__).resolve().parent / "lake_child.py"
TRUTH = {name: truth(scenario) for name, scenario in SCENARIOS.items()}


class Fault(RuntimeError):
    pass


def _fail_at(monkeypatch, step: str) -> None:
    def checkpoint(name: str) -> None:
        if name == step:
            raise Fault(f"failed at {step}")

    monkeypatch.setattr(commit_log, "commit_checkpoint", checkpoint)


def _versions(tables: dict[str, pa.Table | None]) -> dict[str, set]:
    """What a reader counts: alert versions with their answer, and IP rows, of the hour."""
    alerts, ips = tables[ALERTS], tables[ALERT_IPS]
    return {
        ALERTS: set(zip(*(alerts.column(c).to_pylist() for c in ("alert_id", "last_update_time", "ips_status", "ip_count")))),
        ALERT_IPS: set(zip(*(ips.column(c).to_pylist() for c in ("alert_id", "alert_last_update_time", "ip")))),
    }


def _readers_see(location) -> dict[str, pa.Table]:
    """The hour as the analysts' views show it (every tenant from the lake root)."""
    root = dataclasses.replace(location, tenant_id=None)
    with connect(root) as session:
        return {
            table: session.execute(f"SELECT * FROM {table} WHERE interval_start = ?", [HOUR]).to_arrow_table()
            for table in SCHEMAS
        }


def _assert_hour(location, expected: dict[str, pa.Table]) -> None:
    held = hour_rows(location)
    for table in SCHEMAS:
        assert same_rows(held[table], expected[table]), f"{table} differs from the truth"


def _commit_staging(location) -> list[str]:
    """Files and hour folders left under _staging/commits (an empty folder counts too)."""
    location.fs.invalidate_cache()
    return location.fs.find(location.path(COMMITS_DIR)) + (list_names(location, COMMITS_DIR) or [])


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_commit_failing_at_each_step_is_finished_by_the_next_writer(local_location, monkeypatch, name, step):
    _fail_recover_retry(local_location, monkeypatch, name, step)


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("name", ["refetch"])  # the hour loses versions: the hardest case for readers
def test_a_commit_failing_at_each_step_on_azurite_is_finished_by_the_next_writer(abfs_location, monkeypatch, name, step):
    _fail_recover_retry(abfs_location, monkeypatch, name, step)


def _fail_recover_retry(local_location, monkeypatch, name: str, step: str) -> None:
    """Fail the scenario's commit at ``step`` (in process: the lock is released as on any
    error), look at what readers see, then the next writer and a retry."""
    scenario, (before, after) = SCENARIOS[name], TRUTH[name]
    scenario.setup(local_location)
    _fail_at(monkeypatch, step)
    with pytest.raises(Fault if step == "staged" else LakeCommitPending):
        scenario.commit(local_location)
    monkeypatch.undo()

    # Readers right after the failure: the old hour before the commit point, the new one
    # once the record is cleared, and in between no row of the hour at all (pending).
    seen = _versions(_readers_see(local_location))
    if step == "staged":
        assert seen == _versions(before) and not recorded_hours(local_location)
    elif step == "unrecorded":
        assert seen == _versions(after) and not recorded_hours(local_location)
    else:
        assert seen == {ALERTS: set(), ALERT_IPS: set()}
        assert recorded_hours(local_location) == {(TENANT, HOUR)}

    # The next writer (the next run's publish) finishes or discards it first.
    recover_pending_commits(local_location)
    _assert_hour(local_location, before if step == "staged" else after)
    assert _commit_staging(local_location) == []
    # The retry of the failed commit then gives exactly the truth (no duplicate, no downgrade).
    scenario.commit(local_location)
    _assert_hour(local_location, after)
    assert _versions(_readers_see(local_location)) == _versions(after)


def test_a_rerun_in_an_outage_never_downgrades_held_answers():
    """The issue's case: held 'ok' rows and their IPs survive a rerun whose /ips all fail;
    the versions the lake lacked come in as 'error' (recorded, fetched again later)."""
    before, after = TRUTH["rerun_in_an_outage"]
    held = {row[0]: row for row in _versions(before)[ALERTS]}
    for alert_id, _, status, count in _versions(after)[ALERTS]:
        if alert_id in held:
            assert (status, count) == held[alert_id][2:], alert_id
        else:
            assert status == "error" and count == 0
    assert _versions(before)[ALERT_IPS] <= _versions(after)[ALERT_IPS]


def _kill_children(lakes: dict, root_of, extra_args, tmp_path) -> None:
    """One child per (scenario, step) committing into its own lake, each killed at its step."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    children = {}
    try:
        for (name, step), location in lakes.items():
            marker = tmp_path / f"killed-{name}-{step.replace(' ', '_')}"
            children[(name, step)] = (subprocess.Popen(
                [sys.executable, str(CHILD), "commit-kill", *extra_args, root_of(location), name, step, str(marker)],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            ), marker)  # fmt: skip
        for child, marker in children.values():
            wait_for_marker(child, marker, "reached its step")
            child.kill()
    finally:
        for child, _ in children.values():
            child.kill()
            child.wait(timeout=60)
    assert {key: child.returncode for key, (child, _) in children.items()} == dict.fromkeys(lakes, -9)


KILLED = [(name, step) for name in ("lookback", "compacted_lookback") for step in STEPS]
KILLED_ON_AZURITE = [("lookback", step) for step in STEPS] + [("compacted_lookback", "applied alert_ips")]


@pytest.mark.slow
def test_a_commit_killed_at_each_step_is_finished_by_the_next_writer_local(tmp_path, subtests):
    from mde_pipeline.lake.location import resolve_lake_location

    lakes = {key: resolve_lake_location(tmp_path / "-".join(key).replace(" ", "_")).for_tenant(TENANT) for key in KILLED}
    for (name, _), location in lakes.items():
        SCENARIOS[name].setup(location)
    _kill_children(lakes, lambda location: str(dataclasses.replace(location, tenant_id=None).root), [], tmp_path)
    for (name, step), location in lakes.items():
        with subtests.test(scenario=name, step=step):
            before, after = TRUTH[name]
            # The next run of another hour of the day recovers the day first.
            commit_interval(location, OTHER_HOUR, hour_rows(location, OTHER_HOUR), keep_versions=True)
            _assert_hour(location, before if step == "staged" else after)
            assert _commit_staging(location) == []


@pytest.mark.slow
def test_a_commit_killed_at_each_step_is_finished_by_the_next_writer_on_azurite(azurite, azurite_conn_id, abfs_root, tmp_path, subtests):
    """All children are killed within seconds: their leases (15 s) expire together."""
    lakes = {
        key: resolve_with_airflow(f"{abfs_root}/{'-'.join(key).replace(' ', '_')}", conn_id=azurite_conn_id).for_tenant(TENANT)
        for key in KILLED_ON_AZURITE
    }
    for (name, _), location in lakes.items():
        SCENARIOS[name].setup(location)
    roots = {id(location): f"{abfs_root}/{'-'.join(key).replace(' ', '_')}" for key, location in lakes.items()}
    _kill_children(lakes, lambda location: roots[id(location)], [azurite.connection_string], tmp_path)
    for (name, step), location in lakes.items():
        with subtests.test(scenario=name, step=step):
            before, after = TRUTH[name]
            seen = _versions(_readers_see(location))
            assert seen == (_versions(before) if step == "staged" else _versions(after) if step == "unrecorded"
                            else {ALERTS: set(), ALERT_IPS: set()})  # fmt: skip
            commit_interval(location, OTHER_HOUR, hour_rows(location, OTHER_HOUR), keep_versions=True)  # waits out the lease
            _assert_hour(location, before if step == "staged" else after)
            assert _commit_staging(location) == []


@pytest.mark.slow
def test_a_writer_whose_lease_lapsed_cannot_land_its_write(azurite, abfs_root, abfs_location, tmp_path):
    """A stalls after its lock check, right before its first Put Block List into the hour;
    its lease is broken and B commits the hour; A resumes: its write is refused (412), and
    the hour holds exactly B's commit."""
    start = HOUR
    commit_interval(abfs_location, start, sample_interval(start, seed=1))
    marker = tmp_path / "stalled"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"PYTHONPATH": ""}
    writer_a = subprocess.Popen(
        [sys.executable, str(CHILD), "commit-stall-after-check", azurite.connection_string, abfs_root, str(marker), "2"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for_marker(writer_a, marker, "stalled after its check")
        container, blob = abfs_location.path("_locks/date=2024-02-29.lock").split("/", 1)
        from azure.storage.blob import BlobLeaseClient

        BlobLeaseClient(azurite.blob_service().get_blob_client(container, blob)).break_lease(lease_break_period=0)
        b_tables = sample_interval(start, seed=3)
        commit_interval(abfs_location, start, b_tables)  # B: finishes A's record first, then its own commit
        writer_a.stdin.write("go\n")
        writer_a.stdin.flush()
        _, stderr = writer_a.communicate(timeout=120)
    finally:
        writer_a.kill()
    assert writer_a.returncode == 5, stderr
    assert "LakeWriteFenced" in stderr and "changed since this writer read it" in stderr
    for table in SCHEMAS:
        assert same_rows(hour_rows(abfs_location)[table], b_tables[table])
    recover_pending_commits(abfs_location)  # whatever A left is stale: nothing changes
    for table in SCHEMAS:
        assert same_rows(hour_rows(abfs_location)[table], b_tables[table])
    assert _commit_staging(abfs_location) == []


def test_a_writer_whose_staging_vanished_after_its_record_is_refused_not_told_success(local_location, monkeypatch):
    """Another writer discarded this writer's staging (its lease had lapsed before its
    record landed): the commit must fail, never return success over nothing applied."""
    scenario, (before, _) = SCENARIOS["lookback"], TRUTH["lookback"]
    scenario.setup(local_location)

    def discard_staging(name: str) -> None:
        if name == "recorded":
            for path in local_location.fs.find(local_location.path(COMMITS_DIR)):
                if path.endswith(".parquet"):
                    local_location.fs.rm_file(path)

    monkeypatch.setattr(commit_log, "commit_checkpoint", discard_staging)
    with pytest.raises(LakeWriteFenced, match="nothing of it was applied"):
        scenario.commit(local_location)
    monkeypatch.undo()
    _assert_hour(local_location, before)
    recover_pending_commits(local_location)  # the void record goes, nothing changes
    _assert_hour(local_location, before)
    assert _commit_staging(local_location) == []


def _lost_ips_hour(location) -> dict[str, pa.Table]:
    """An hour as a lake written before commit records could hold it: the alerts file of
    a commit that died before its alert_ips file (ip_count > 0, no IP rows at all)."""
    tables = sample_interval(HOUR, seed=7)
    path = location.path(interval_file(ALERTS, HOUR))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(parquet_bytes(ALERTS, tables[ALERTS]))
    return tables


def test_an_hour_with_lost_ips_is_healed_by_the_next_write_and_refetched_by_the_look_back(local_location):
    tables = _lost_ips_hour(local_location)
    with_ips = {r["alert_id"] for r in tables[ALERTS].to_pylist() if r["ip_count"]}
    # The look-back counts those versions as missing (only complete versions are held).
    held = committed_versions(local_location, HOUR, HOUR + timedelta(hours=1))[HOUR]
    assert with_ips and not {alert_id for alert_id, _ in held} & with_ips
    # The next write of the hour (a look-back adding nothing of them) records them as
    # 'error' with the reason, instead of failing check_interval forever.
    commit_interval(local_location, HOUR, {t: SCHEMAS[t].empty_table() for t in SCHEMAS}, keep_versions=True)
    rows = {r["alert_id"]: r for r in read_interval(local_location, ALERTS, HOUR).to_pylist()}
    assert {a for a, r in rows.items() if r["ips_status"] == "error"} == with_ips
    assert all("IPs lost" in rows[a]["ips_error"] and rows[a]["ip_count"] == 0 for a in with_ips)
    # The look-back's commit of their answers then makes the hour exact.
    commit_interval(local_location, HOUR, tables, keep_versions=True, only_if_committed=True)
    _assert_hour(local_location, tables)


def test_answers_rank_and_a_new_answer_never_replaces_a_better_held_one(local_location):
    listed, results = sample_listing(HOUR, alerts=6, seed=8)  # ok, ok, ok, ok, not_found, empty
    def tables(rs):
        return interval_tables(listed, rs, tenant_id=TENANT, interval_start=HOUR, listed_at=HOUR + timedelta(hours=1))
    commit_interval(local_location, HOUR, tables(results))
    worse = [{**r, "status": "empty", "ips": []} if r["status"] == "ok" else {**r, "status": "error", "ips": [], "error": "x"}
             for r in results]  # fmt: skip
    commit_interval(local_location, HOUR, tables(worse))  # a refetch in a bad hour
    _assert_hour(local_location, tables(results))
    better = [{**r, "status": "ok", "ips": [["192.0.2.1", 4]]} if r["status"] == "empty" else r for r in results]
    commit_interval(local_location, HOUR, tables(better), keep_versions=True)
    _assert_hour(local_location, tables(better))
