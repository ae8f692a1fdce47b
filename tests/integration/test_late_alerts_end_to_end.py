"""Issue 11 end to end: late alerts, kept versions, each version's IPs fetched once.

Real Airflow (`dag.test()` through include/dag_runs.py), the HTTPS simulator with late
visibility on its own clock (`now`, so past hours play as if they were closing), the
local lake, and include/lake_check.py against the ground truth.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

import lake_check
from local_airflow import fresh_home, lake_env, migrated_template
from mde_pipeline.airflow.batching import make_batches
from mde_pipeline.api.listing import list_interval
from mde_pipeline.analytics.session import connect as analysts_session
from mde_pipeline.lake.commit_log import recorded_hours
from mde_pipeline.lake.fetch_cache import FetchCache
from mde_pipeline.lake.location import resolve_lake_location
from mde_simulator.process import SimulatorProcess

pytestmark = pytest.mark.slow

T0 = datetime(2026, 10, 5, 9, tzinfo=timezone.utc)
HOURS = lake_check.hours(T0, T0 + timedelta(hours=3))
LIMITS = [[25, 1], [250, 10]]
CLIENT = {"rate_limit_margin_seconds": 0.5}
SETTLE = timedelta(minutes=5)
LATE_MINUTES = 60  # an hour's own run (at H+1h+5min) misses most of its late alerts; the next one sees them


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")


def run_at(hour: datetime) -> datetime:
    return hour + timedelta(hours=1)


def ips_calls(sim) -> int:
    """IP calls the service answered (a 429 on a loaded machine is budget, not a fetch)."""
    return sum(n for status, n in sim.stats()["calls"].get("ips", {}).items() if str(status) != "429")


def list_calls(sim) -> int:
    return sum(sim.stats()["calls"].get("list", {}).values())


def play(home, sim, hour: datetime, conf: dict | None = None, now: datetime | None = None) -> dict:
    """Run the hour as the scheduler would: after the hour has closed and settled (or,
    for a rerun, at ``now``)."""
    sim.configure(now=(now or run_at(hour) + SETTLE).isoformat())
    (run,) = home.test_runs("mde_alert_ips", [run_at(hour)], conf=conf)
    assert run["state"] == "success", home.last_output[-6000:]
    return run


def lake_rows(lake: Path, sql: str):
    con = lake_check.connect(lake)
    return con.execute(sql).fetchall()


def missed(lake: Path, sim, hour: datetime) -> set[str]:
    """The alerts of ``hour`` the lake lacks (after the hour's own run: the late ones)."""
    problems = lake_check.compare(lake, sim.ground_truth(), [hour]).problems
    return {p.split()[1] for p in problems if p.startswith("alerts: ") and p.endswith(" is missing")}


def found_by_lookback(lake: Path) -> dict[str, datetime]:
    """alert id -> found_by_lookback_at of the rows a look-back found (one version each
    here), after checking that both tables agree on every version."""
    disagree = lake_rows(lake, "SELECT count(*) FROM alert_ips AS i JOIN alerts AS a ON a.alert_id = i.alert_id "
                               "AND a.last_update_time = i.alert_last_update_time "
                               "WHERE i.found_by_lookback_at IS DISTINCT FROM a.found_by_lookback_at")[0][0]
    assert disagree == 0
    return dict(lake_rows(lake, "SELECT alert_id, found_by_lookback_at FROM alerts WHERE found_by_lookback_at IS NOT NULL"))


def start(tmp_path: Path, **options) -> SimulatorProcess:
    defaults = dict(alerts=60, start=T0.isoformat(), end=(T0 + timedelta(hours=3)).isoformat(), seed=11,
                    rate_limits=LIMITS, late_share=0.15, late_minutes=LATE_MINUTES)
    defaults.update(options)
    return SimulatorProcess(tmp_path / "sim", **defaults)


def test_late_alerts_are_found_once_reruns_duplicate_nothing_and_refetch_replaces(template_db, tmp_path):
    """Also: the second run's look-back commit into the first hour fails between its two
    tables (a storage error right after alert_ips was replaced): publish fails (no task
    retry here), readers leave the hour out, and the next run finishes it."""
    lake = tmp_path / "lake"
    with start(tmp_path) as sim:
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(**CLIENT), **lake_env(lake),
                          MDE_ALERT_IPS_TASK_RETRIES="0")  # fmt: skip
        home.import_pools()
        truth = sim.ground_truth()["alerts"]
        play(home, sim, HOURS[0])
        late_first = missed(lake, sim, HOURS[0])
        assert late_first, "some alerts of the first hour must have been late"

        # Commit 1 of this run is its own hour; commit 2 the look-back's, into HOURS[0].
        sim.configure(now=(run_at(HOURS[1]) + SETTLE).isoformat())
        (run,) = home.test_runs("mde_alert_ips", [run_at(HOURS[1])], fail_commit="applied alert_ips@2")
        assert run["tasks"]["publish"] == "failed" and "LakeCommitPending" in home.last_output, run
        assert {hour for _, hour in recorded_hours(resolve_lake_location(str(lake)))} == {HOURS[0]}
        with analysts_session(str(lake)) as session:  # a half-written hour is never counted by readers
            for table in ("alerts", "alert_ips"):
                assert session.execute(f"SELECT count(*) FROM {table} WHERE interval_start = ?", [HOURS[0]]).fetchall() == [(0,)]
            assert session.execute("SELECT count(*) FROM alerts WHERE interval_start = ?", [HOURS[1]]).fetchall() != [(0,)]

        late = set(late_first) | missed(lake, sim, HOURS[1])
        for hour in [*HOURS[2:], HOURS[-1] + timedelta(hours=1)]:
            play(home, sim, hour)  # the first of these finishes the first hour's commit
            if hour in HOURS:
                late |= missed(lake, sim, hour)
        assert recorded_hours(resolve_lake_location(str(lake))) == set()
        comparison = lake_check.compare(lake, sim.ground_truth(), HOURS)
        assert comparison.exact, str(comparison)
        # Which rows a look-back found, and when: exactly the late ones (in both tables),
        # at the look-back's listing time; the rows the hours' own runs loaded are null.
        found = found_by_lookback(lake)
        assert set(found) == late
        assert lake_rows(lake, "SELECT count(DISTINCT alert_id) FROM alert_ips WHERE found_by_lookback_at IS NOT NULL")[0][0]
        assert lake_rows(lake, "SELECT count(*) FROM alerts WHERE found_by_lookback_at IS NOT NULL "
                               "AND found_by_lookback_at != listed_at")[0][0] == 0
        # Every alert version's IPs were fetched exactly once.
        assert ips_calls(sim) == len(truth)

        # A rerun of the first hour after its look-back (later: its alerts are all listable
        # now): one copy of each row, no API call for IPs.
        later = run_at(HOURS[-1]) + timedelta(hours=2)
        before = ips_calls(sim)
        play(home, sim, HOURS[0], now=later)
        assert ips_calls(sim) == before
        assert lake_check.compare(lake, sim.ground_truth(), HOURS).exact
        # It lists the late ones itself now, and they keep the look-back's time.
        assert found_by_lookback(lake) == found
        ids = ", ".join(f"'{alert_id}'" for alert_id in late_first)
        relisted = lake_rows(lake, f"SELECT count(*) FROM alerts WHERE alert_id IN ({ids}) AND listed_at > found_by_lookback_at")
        assert relisted[0][0] == len(late_first)
        # refetch: fresh calls for every alert of the hour, the hour replaced whole
        # (found_by_lookback_at of its rows null again, as documented).
        play(home, sim, HOURS[0], conf={"refetch": True}, now=later)
        in_first = sum(1 for t in truth.values() if lake_check.parse_time(t["lastUpdateTime"]) < HOURS[1])
        assert ips_calls(sim) == before + in_first
        assert lake_check.compare(lake, sim.ground_truth(), HOURS).exact
        assert found_by_lookback(lake) == {a: t for a, t in found.items() if a not in late_first}


def test_an_alert_updated_into_a_later_hour_keeps_its_earlier_version(template_db, tmp_path):
    lake = tmp_path / "lake"
    with start(tmp_path, late_share=0.0) as sim:
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(**CLIENT), **lake_env(lake))
        home.import_pools()
        play(home, sim, HOURS[0])
        first_ids = [i for i, t in sim.ground_truth()["alerts"].items() if lake_check.parse_time(t["lastUpdateTime"]) < HOURS[1]]
        moved = sorted(first_ids)[:2]
        sim.advance(ids=moved, to=(HOURS[2] + timedelta(minutes=10)).isoformat().replace("+00:00", "Z"), add_ip=True)
        for hour in HOURS[1:]:
            play(home, sim, hour)
        play(home, sim, HOURS[0])  # a rerun of the first hour lists the alerts no more
        comparison = lake_check.compare(lake, sim.ground_truth(), HOURS)
        assert comparison.exact, str(comparison)
        assert comparison.kept_versions == 2
        versions = lake_rows(lake, f"SELECT alert_id, count(*) FROM alerts WHERE alert_id IN {tuple(moved)} GROUP BY 1")
        assert sorted(versions) == [(m, 2) for m in moved]


def test_a_look_back_after_a_3_day_outage_finds_the_late_alerts_within_budget(template_db, tmp_path):
    lake = tmp_path / "lake"
    with start(tmp_path, late_share=0.3) as sim:
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(**CLIENT), **lake_env(lake),
                          MDE_ALERT_IPS_LOOKBACK_HOURS="96")
        home.import_pools()
        play(home, sim, HOURS[0])
        missing = [p for p in lake_check.compare(lake, sim.ground_truth(), HOURS[:1]).problems if p.endswith("is missing")]
        assert missing
        lists, ips = list_calls(sim), ips_calls(sim)
        # Paused for three days; resumed, the scheduler runs the latest hour only (no catchup).
        play(home, sim, HOURS[0] + timedelta(days=3, hours=2))
        assert list_calls(sim) - lists == 2  # its own hour, and the whole look-back in one call
        assert ips_calls(sim) - ips == len(missing)  # only the late versions
        assert lake_check.compare(lake, sim.ground_truth(), HOURS[:1]).exact
        # Hours never loaded (the outage) are left alone: they belong to backfills.
        assert not list((lake / "alerts").glob(f"tenant_id=*/*/interval={HOURS[1]:%Y%m%dT%H}.parquet"))


def test_a_task_killed_mid_batch_calls_the_api_again_only_for_unfinished_alerts(tmp_path):
    lake = tmp_path / "lake"
    with start(tmp_path, late_share=0.0, rate_limits=[[4, 1], [250, 10]]) as sim:
        conn = sim.connection_uri(ca_bundle=sim.ca_bundle, rate_limit_ledger_dir=str(tmp_path / "ledger"),
                                  rate_limits=[[4, 1], [250, 10]], **CLIENT)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "plugins")}
        from mde_pipeline.api.client import MdeClient
        from mde_pipeline.api.config import MdeConnectionConfig

        parts = json.loads(conn)
        config = MdeConnectionConfig.from_parts(host=parts["host"], login=parts["login"], password=parts["password"],
                                                extra=parts["extra"], conn_id="sim")
        with MdeClient(config) as client:
            listing = list_interval(client, HOURS[0], HOURS[1])
            tenant = client.tenant_id
        (batch,) = make_batches(listing.alerts, batch_size=1000)
        total = len(batch["alerts"])
        batch_file = tmp_path / "batch.json"
        batch_file.write_text(json.dumps(batch))
        sim.reset_stats()
        child = [sys.executable, str(Path(__file__).with_name("fetch_child.py")), conn, str(lake), str(batch_file)]
        process = subprocess.Popen(child, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while ips_calls(sim) < total // 2:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(0.5)
        first_try = ips_calls(sim)
        assert 0 < first_try < total
        cached = len(FetchCache(resolve_lake_location(str(lake)).for_tenant(tenant), tenant).lookup(batch["alerts"]))
        assert first_try - 1 <= cached <= first_try  # at most the call in flight was lost

        retry = subprocess.run(child, env=env, capture_output=True, text=True, timeout=120)
        assert retry.returncode == 0, retry.stderr[-3000:]
        assert json.loads(retry.stdout.strip().splitlines()[-1]) == {"results": total}
        assert ips_calls(sim) - first_try == total - cached  # only the alerts not finished
