"""The analyst entry point, run as a user runs it (a subprocess), on a generated lake."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mde_pipeline.analytics.cli import main
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS

from tests.analytics.conftest import OTHER_TENANT, tenant_dir

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_VAR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")])
    return subprocess.run(
        [sys.executable, "-m", "mde_pipeline.analytics.cli", *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )


def test_sql_runs_against_the_views_and_prints_csv(hourly_lake):
    root, _ = hourly_lake
    proc = cli("--lake", str(root), "--format", "csv", "--sql",
               "SELECT ip, alert_count FROM ip_summary ORDER BY alert_count DESC, ip LIMIT 3; SELECT count(*) AS n FROM alert_ips")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    top = list(csv.reader(io.StringIO("\n".join(lines[:4]))))
    assert top[0] == ["ip", "alert_count"] and len(top) == 4
    assert int(top[1][1]) >= int(top[2][1]) >= int(top[3][1]) >= 1
    import duckdb

    expected = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{root}/{ALERT_IPS}/*/*/*.parquet')").fetchone()[0]
    assert lines[4:] == ["n", str(expected)]


def test_one_tenant_is_a_where_clause_away(hourly_lake):
    root, _ = hourly_lake
    proc = cli("--lake", str(root), "--format", "json", "--sql",
               f"SELECT tenant_id, count(*) AS n FROM alert_ips WHERE tenant_id = '{OTHER_TENANT}' GROUP BY tenant_id")
    assert proc.returncode == 0, proc.stderr
    import duckdb

    expected = duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{tenant_dir(root, ALERT_IPS, OTHER_TENANT)}/*/*.parquet')"
    ).fetchone()[0]
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [{"tenant_id": OTHER_TENANT, "n": expected}]


def test_a_lake_from_before_tenants_is_refused_with_the_migration_command(tmp_path):
    day = tmp_path / "legacy" / ALERTS / "date=2025-03-01"
    day.mkdir(parents=True)
    (day / "interval=20250301T00.parquet").write_bytes(b"old layout")
    proc = cli("--lake", str(tmp_path / "legacy"), "--sql", "SELECT count(*) FROM alerts")
    assert proc.returncode == 2 and "migrate_lake --tenant-id" in proc.stderr, proc.stderr


@pytest.mark.parametrize("variable", ["MDE_LAKE_ROOT", "AIRFLOW_VAR_MDE_LAKE_ROOT"])
def test_the_lake_root_comes_from_the_environment_too(hourly_lake, variable):
    root, _ = hourly_lake
    env_proc = subprocess.run(
        [sys.executable, "-m", "mde_pipeline.analytics.cli", "--format", "json", "--sql", "SELECT count(*) AS n FROM alerts"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**{k: v for k, v in os.environ.items() if "LAKE_ROOT" not in k}, variable: str(root),
             "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")])},
    )
    assert env_proc.returncode == 0, env_proc.stderr
    assert json.loads(env_proc.stdout)["n"] > 0


def test_shell_reads_statements_from_stdin(hourly_lake):
    root, _ = hourly_lake
    script = ".tables\nSELECT count(*)\n  AS n FROM alerts_latest;\nSELECT nope FROM alerts;\n.quit\n"
    proc = cli("--lake", str(root), stdin=script)
    assert "alert_ip_details" in proc.stdout and "ip_summary" in proc.stdout
    assert "(1 row)" in proc.stdout
    assert "Error:" in proc.stdout and "nope" in proc.stdout
    assert proc.returncode == 1  # a failed statement in a script is an error exit


def test_bad_sql_and_bad_root_fail_clearly(tmp_path, hourly_lake):
    root, _ = hourly_lake
    proc = cli("--lake", str(root), "--sql", "SELECT * FROM no_such_view")
    assert proc.returncode == 1 and "no_such_view" in proc.stderr
    proc = cli("--lake", "s3://bucket/lake", "--sql", "SELECT 1")
    assert proc.returncode == 2 and "unsupported lake root scheme" in proc.stderr
    proc = cli("--lake", "abfs://lake@acct.dfs.core.windows.net/p", "--sql", "SELECT 1")
    assert proc.returncode == 2 and "Airflow-configured entry point" in proc.stderr
    proc = cli("--sql", "SELECT 1")
    assert proc.returncode == 2 and "no lake root" in proc.stderr


def test_main_takes_the_lake_from_an_injected_locate(hourly_lake, capsys):
    """What the Airflow-configured entry point (make query) does: it hands main a locate."""
    root, _ = hourly_lake
    asked = []

    def locate(lake, conn_id):
        asked.append((lake, conn_id))
        return resolve_lake_location(str(root))

    assert main(["--lake", "abfs://lake/p", "--conn-id", "c", "--format", "json", "--sql", "SELECT 1 AS one"], locate=locate) == 0
    assert asked == [("abfs://lake/p", "c")] and json.loads(capsys.readouterr().out) == {"one": 1}


def test_an_empty_lake_has_empty_views(tmp_path):
    proc = cli("--lake", str(tmp_path / "nothing-yet"), "--format", "csv", "--sql",
               "SELECT (SELECT count(*) FROM alert_ips) AS ips, (SELECT count(*) FROM ip_summary) AS summary")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ips,summary", "0,0"]
