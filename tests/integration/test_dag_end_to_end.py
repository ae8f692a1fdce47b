"""DAG mde_alert_ips end to end: real Airflow (`dag.test()`, as `airflow dags test`),
the HTTPS simulator, the local lake, DuckDB reading it back against the ground truth.

Several intervals run in one Airflow process (include/dag_runs.py) to keep the suite
fast; each test has its own Airflow home, simulator, lake and rate-limit ledger.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

import lake_check
from local_airflow import fresh_home, lake_env, migrated_template
from mde_simulator.process import SimulatorProcess

pytestmark = pytest.mark.slow

# Three loaded hours of simulated alerts, a fourth hour with none.
T0 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
HOURS = lake_check.hours(T0, T0 + timedelta(hours=3))
EMPTY_HOUR = T0 + timedelta(hours=3)
# Fast but real pacing: the client's limiter and the simulator share these windows.
LIMITS = [[25, 1], [250, 10]]
# Loaded CI machines delay requests by 100s of ms between reservation and arrival.
CLIENT = {"rate_limit_margin_seconds": 0.5}


def run_at(interval_start: datetime) -> datetime:
    """A manual run at T loads the hour ending at T."""
    return interval_start + timedelta(hours=1)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")


def start_simulator(tmp_path: Path, **options) -> SimulatorProcess:
    defaults = dict(
        alerts=60,
        start=T0.isoformat(),
        end=(T0 + timedelta(hours=3)).isoformat(),
        seed=7,
        rate_limits=LIMITS,
        invalid_ip_rate=0.1,
        vanish_rate=0.05,
    )
    defaults.update(options)
    return SimulatorProcess(tmp_path / "sim", **defaults)


def home_for(template_db, tmp_path: Path, sim: SimulatorProcess, lake: Path, **env):
    home = fresh_home(template_db, tmp_path / "airflow", **sim.env(**CLIENT), **lake_env(lake), **env)
    home.import_pools()
    return home


def lake_files(lake: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under the lake (staging included)."""
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(lake.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def assert_exact(lake: Path, sim: SimulatorProcess, intervals) -> lake_check.LakeComparison:
    comparison = lake_check.compare(lake, sim.ground_truth(), intervals)
    assert comparison.exact, str(comparison)
    assert comparison.expected_alerts > 0
    return comparison


def test_hours_land_exactly_reruns_replace_and_empty_hours_commit(template_db, tmp_path):
    lake = tmp_path / "lake"
    with start_simulator(tmp_path) as sim:
        home = home_for(template_db, tmp_path, sim, lake)
        runs = home.test_runs("mde_alert_ips", [run_at(h) for h in [*HOURS, EMPTY_HOUR]])
        assert [r["state"] for r in runs] == ["success"] * 4, home.last_output[-6000:]
        assert runs[0]["data_interval"] == [HOURS[0].isoformat(), (HOURS[0] + timedelta(hours=1)).isoformat()]
        comparison = assert_exact(lake, sim, HOURS)
        truth = sim.ground_truth()["alerts"]
        truth_tenant = sim.ground_truth()["tenant_id"]  # the lake partition of every row
        # The simulator's awkward cases really were exercised.
        statuses = {t["ips_status"] for t in truth.values()}
        assert {"ok", "empty", "not_found"} <= statuses
        assert any(t.get("invalid_ips") for t in truth.values())
        before = lake_files(lake)

        # Rerun the middle hour twice and the first once, in another order: same lake.
        again = home.test_runs("mde_alert_ips", [run_at(HOURS[1]), run_at(HOURS[1]), run_at(HOURS[0])])
        assert [r["state"] for r in again] == ["success"] * 3
        assert_exact(lake, sim, HOURS)
        after = lake_files(lake)
        # The recent IP index (lake/recent_index.py) is rebuilt after each publish under a
        # new name: a rerun leaves one file and its manifest there, as before.
        recent = [name for name in after if "/month=recent/" in name]
        assert len(recent) == 2 and len([n for n in before if "/month=recent/" in n]) == 2, recent
        assert sorted(set(after) - set(recent)) == sorted(n for n in before if "/month=recent/" not in n), \
            "a rerun must replace files, not add any"
        stats = sim.stats()

    assert stats["throttled"] == 0, stats
    # Every successful run announced both tables as Asset events, with what it committed.
    db = sqlite3.connect(home.path / "airflow.db")
    events = db.execute(
        "SELECT a.name, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
    ).fetchall()
    assert sorted({name for name, _ in events}) == ["mde_lake.alert_ips", "mde_lake.alerts"]
    assert len(events) == 2 * (len(runs) + len(again))
    first_alerts = json.loads(next(extra for name, extra in events if name == "mde_lake.alerts"))
    assert first_alerts["interval_start"] == HOURS[0].isoformat() and first_alerts["rows"] > 0
    # Nothing left in staging once runs succeeded, but the fetch cache (kept per version).
    assert not [p for p in (lake / "_staging").rglob("*") if p.is_file() and "fetch_cache" not in p.parts]
    # The empty hour committed both tables with zero rows and the full schema.
    con = duckdb.connect()
    empty_key = EMPTY_HOUR.strftime("%Y%m%dT%H")
    for table in ("alerts", "alert_ips"):
        path = lake / table / f"tenant_id={truth_tenant}" / f"date={EMPTY_HOUR:%Y-%m-%d}" / f"interval={empty_key}.parquet"
        assert path.exists(), path
        assert con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0] == 0
    # One schema for every file: DuckDB reads all files without union_by_name.
    columns = con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{lake}/alert_ips/*/*/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert {"tenant_id", "alert_id", "ip", "ip_version", "alert_last_update_time", "date"} <= {c[0] for c in columns}
    assert comparison.lake_ips == comparison.expected_ips


def test_transient_faults_are_ridden_out_without_losing_a_row(template_db, tmp_path):
    """5xx, dropped connections, slow answers past the read timeout, a 429 storm and a
    token expiring mid-run: the client retries, the lake ends exact."""
    lake = tmp_path / "lake"
    with start_simulator(
        tmp_path,
        fault_5xx=0.08,
        fault_drop=0.05,
        fault_slow=0.03,
        slow_seconds=4,
        token_lifetime=3,
        # The service enforces less than the client believes: real 429s with Retry-After.
        rate_limits=[[6, 1], [250, 10]],
    ) as sim:
        home = fresh_home(
            template_db,
            tmp_path / "airflow",
            **sim.env(**CLIENT, rate_limits=LIMITS, timeout=[2, 1.5]),
            **lake_env(lake),
            MDE_ALERT_IPS_TASK_RETRIES="0",
        )
        home.import_pools()
        runs = home.test_runs("mde_alert_ips", [run_at(h) for h in HOURS])
        stats = sim.stats()
        assert [r["state"] for r in runs] == ["success"] * 3, home.last_output[-8000:]
        assert_exact(lake, sim, HOURS)
    faults = stats["faults"]
    assert faults["500"] + faults["503"] > 0 and faults["drop"] > 0 and faults["slow"] > 0, stats
    assert stats["throttled"] > 0, "the storm must really have happened"
    assert stats["tokens_issued"] > 2, "tokens expired and were renewed mid-run"


def test_a_failed_run_leaves_the_lake_untouched_and_a_rerun_is_exact(template_db, tmp_path):
    lake = tmp_path / "lake"
    with start_simulator(tmp_path) as sim:
        home = home_for(template_db, tmp_path, sim, lake, MDE_ALERT_IPS_TASK_RETRIES="0")
        assert home.test_runs("mde_alert_ips", [run_at(HOURS[0])])[0]["state"] == "success"
        committed = {k: v for k, v in lake_files(lake).items() if not k.startswith("_staging")}

        # Every IP answer is the seed's malformed JSON: the batch fails, nothing publishes.
        sim.configure(fault_malformed=1.0, fault_endpoints=["ips"])
        sim.advance(count=5, add_ip=True)  # the data changed meanwhile, too
        # refetch: the first hour's IPs are in the fetch cache, a plain rerun would not ask.
        failed = home.test_runs("mde_alert_ips", [run_at(HOURS[0]), run_at(HOURS[1])], conf={"refetch": True})
        assert [r["state"] for r in failed] == ["failed", "failed"], home.last_output[-6000:]
        assert failed[0]["tasks"]["publish"] in ("upstream_failed", "TaskInstanceState.UPSTREAM_FAILED")
        now = {k: v for k, v in lake_files(lake).items() if not k.startswith("_staging")}
        assert now == committed, "a failed run must not change a committed file"
        assert "MdeMalformedResponseError" in home.last_output

        sim.configure(fault_malformed=0.0)
        rerun = home.test_runs("mde_alert_ips", [run_at(h) for h in HOURS])
        assert [r["state"] for r in rerun] == ["success"] * 3
        # Advanced alerts moved out of the first hours: the lake follows the current truth
        # for the hours loaded, and alerts advanced past the simulated range are not expected.
        assert_exact(lake, sim, HOURS)


def test_wrong_secret_fails_fast_with_a_clear_error_and_no_secret_in_logs(template_db, tmp_path):
    lake = tmp_path / "lake"
    with start_simulator(tmp_path, alerts=5) as sim:
        secret = "wrong-" + "s3cr3t-value-that-must-not-leak"
        conn = sim.connection_uri(password=secret, **CLIENT)
        home = fresh_home(
            template_db, tmp_path / "airflow", AIRFLOW_CONN_MDE_DEFAULT=conn,
            REQUESTS_CA_BUNDLE=sim.ca_bundle, SSL_CERT_FILE=sim.ca_bundle, **lake_env(lake),
        )
        home.import_pools()
        runs = home.test_runs("mde_alert_ips", [run_at(HOURS[0])])
    assert runs[0]["state"] == "failed"
    assert "MdeAuthenticationError" in home.last_output
    assert "AADSTS7000215" in home.last_output  # Entra's code for a wrong secret
    assert secret not in home.last_output
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "airflow").rglob("*.log"))
    assert secret not in logs
    assert not lake.exists() or not list(lake.glob("alerts/*/*/*.parquet"))


def test_poison_alerts_land_recorded_and_every_other_alert_is_exact(template_db, tmp_path):
    # One alert's fields have the wrong types, every alert carries a field no schema names,
    # one alert's /ips answers 500 forever, one answers an item whose id is not a string.
    lake = tmp_path / "lake"
    with start_simulator(tmp_path, vanish_rate=0.0) as sim:
        truth = sim.ground_truth()["alerts"]
        hour = lake_check.expected_rows(sim.ground_truth(), [HOURS[0]])
        ok = sorted(a for a, t in hour.items() if t["ips_status"] == "ok")
        fields_bad, ips_down, ips_odd = ok[:3]
        sim.configure(
            poison_fields={fields_bad: {"incidentId": 12.5, "severity": 3, "mitreTechniques": "T1059",
                                        "alertCreationTime": "2026-11-20"}},
            extra_fields={"newField": {"kind": "added later"}},
            ips_fail=[ips_down],
            ips_non_string=[ips_odd],
        )  # fmt: skip
        home = home_for(template_db, tmp_path, sim, lake)
        (run,) = home.test_runs("mde_alert_ips", [run_at(HOURS[0])])
        assert run["state"] == "success", home.last_output[-6000:]
        comparison = lake_check.compare(lake, sim.ground_truth(), [HOURS[0]])
        ips_calls = sum(sim.stats()["calls"]["ips"].values())

    # Every other alert is exact; the two whose IPs could not be fetched differ only there.
    others = [p for p in comparison.problems if ips_down not in p and ips_odd not in p]
    assert others == [], str(comparison)
    # Budget: one call per alert, plus the client's retries (retry_total=5) of the one
    # whose /ips fails forever; an unparseable answer is not retried.
    assert ips_calls == len(hour) + 5
    con = lake_check.connect(lake)
    rows = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT alert_id, ips_status, ips_error, ip_count, incident_id, severity, mitre_techniques, "
            "alert_creation_time, field_problems, json_extract_string(raw, '$.newField.kind') FROM alerts"
        ).fetchall()
    }
    assert len(rows) == len(hour)
    status, error, count = rows[ips_down][:3]
    assert (status, count) == ("error", 0) and "MdeServerError" in error and "500" in error
    status, error, count = rows[ips_odd][:3]
    assert (status, count) == ("error", 0) and "MdeMalformedResponseError" in error
    incident, severity, techniques, created, problems = rows[fields_bad][3:8]
    assert (incident, severity, techniques, created) == (None, None, None, None)
    assert sorted(p.split(":")[0] for p in problems) == ["alertCreationTime", "incidentId", "mitreTechniques", "severity"]
    assert rows[fields_bad][0] == "ok"  # its IPs were fetched as usual
    assert {r[-1] for r in rows.values()} == {"added later"}  # the new field, queryable at once
    assert all(r[7] is None for a, r in rows.items() if a != fields_bad)
    assert truth[fields_bad]["ips"]  # the ground truth itself was never poisoned


def test_airflow_dags_test_exits_0_with_the_freshness_alert_on(template_db, tmp_path):
    """The documented `airflow dags test mde_alert_ips <date>` on a stock config: only the
    folders, the connection and the lake Variable set (no pools), the deadline alert at its
    default (Airflow 3.3.2 used to fail the end of the run: airflow/dag_test_deadlines.py)."""
    lake = tmp_path / "lake"
    with start_simulator(tmp_path, alerts=10, invalid_ip_rate=0.0, vanish_rate=0.0) as sim:
        # "" reads as unset: the code's default, whatever this process's environment says.
        home = fresh_home(template_db, tmp_path / "airflow", **sim.env(**CLIENT), **lake_env(lake),
                          MDE_FRESHNESS_DEADLINE_MINUTES="")  # fmt: skip
        proc = home.cli("dags", "test", "mde_alert_ips", run_at(HOURS[0]).isoformat(), check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-8000:]
        assert_exact(lake, sim, [HOURS[0]])
    assert "Traceback" not in output, output[-8000:]
    db = sqlite3.connect(home.path / "airflow.db")
    assert db.execute("SELECT state FROM dag_run WHERE dag_id = 'mde_alert_ips'").fetchall() == [("success",)]
    # The alert really was on: the DAG that ran carries it (a `dags test` run is never
    # queued, so Airflow gives that run itself no deadline).
    alerts = db.execute("SELECT name, interval FROM deadline_alert").fetchall()
    assert [(name, json.loads(interval)["__data__"]) for name, interval in alerts] == [("mde_hour_committed", 3600.0)]
