"""Every query of docs/ANALYSTS.md shows its point on `make run`'s lake.

One lake as `make run` makes it (include/local_run.py's simulator options: the simulator's
``demo`` profile over the last three complete hours, each hour run by `dag.test()` with
the simulator's clock where the scheduler's run would stand), checked exact against the
simulator; then every query of the doc, run through the analysts' DuckDB session, must
return rows that show what the doc promises (not just "no error").

The doc names each query's check in a marker before its code block,
``<!-- demo-check: name, ... -->``: one name per statement (```sql blocks) or per
``make query SQL="..."`` line, in order; ``not-duckdb`` for another engine's block. A
query without a marker, or a name without a check here, fails.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import lake_check
from local_airflow import REPO, fresh_home, lake_env, migrated_template
from local_run import simulator_options
from mde_pipeline.analytics.session import connect as analysts_session
from mde_pipeline.analytics.session import split_statements
from mde_pipeline.airflow.tenants import DAG_ID
from mde_simulator.demo import IOC_ADDRESSES
from mde_simulator.process import SimulatorProcess
from tests.support.markdown import fenced_blocks

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "ANALYSTS.md"
HOURS = 3
# Fast but real pacing, and short client retries: one alert's /ips fails forever.
LIMITS = [[25, 1], [250, 10]]
CLIENT = {"rate_limit_margin_seconds": 0.5, "retry_backoff_factor": 0.05}
MARKER = re.compile(r"<!--\s*demo-check:\s*(.*?)\s*-->")
MAKE_QUERY = re.compile(r'SQL="([^"]*)"')
NOT_DUCKDB = "not-duckdb"
DOC_IOC = "203.0.113.7"  # the address the doc looks up


def doc_queries(text: str) -> list[tuple[str, str]]:
    """(check name, SQL) of every query in the doc's code blocks, in order."""
    queries = []
    lines = text.splitlines()
    for index, lang, rows in fenced_blocks(lines):
        body = "\n".join(rows)
        if lang == "sql":
            statements = split_statements(body)
        else:  # shell lines: the SQL of `make query SQL="..."` (not the "..." placeholder)
            statements = [sql for sql in MAKE_QUERY.findall(body) if sql.strip(". ")]
        if statements:
            marker = MARKER.search(lines[index - 1]) if index else None
            assert marker, f"docs/ANALYSTS.md line {index + 1}: a query block without <!-- demo-check: ... -->"
            names = [name.strip() for name in marker.group(1).split(",")]
            if names != [NOT_DUCKDB]:
                assert len(names) == len(statements), f"line {index + 1}: {len(statements)} queries, checks {names}"
                queries += zip(names, statements)
    return queries


QUERIES = doc_queries(DOC.read_text())


def demo_lake(root: Path):
    """(lake, ground truth, hours) of `make run`'s shape: the last three complete hours."""
    template = migrated_template(root / "airflow-template")
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    hours = lake_check.hours(end - timedelta(hours=HOURS), end)
    lake = root / "lake"
    with SimulatorProcess(root / "sim", **simulator_options("demo", end, HOURS), rate_limits=LIMITS) as sim:
        home = fresh_home(template, root / "airflow", **sim.env(**CLIENT), **lake_env(lake))
        home.import_pools()
        clock = {DAG_ID: {"base_url": sim.base_url, "ca_bundle": sim.ca_bundle}}
        runs = home.test_runs(DAG_ID, [hour + timedelta(hours=1) for hour in hours], sim_clocks=clock)
        assert [run["state"] for run in runs] == ["success"] * HOURS, home.last_output[-6000:]
        truth = sim.ground_truth()
    return lake, truth, hours


def test_every_query_of_the_doc_shows_its_point_on_the_demo_lake(tmp_path):
    """One lake for all queries (one test, so that xdist workers never build it twice)."""
    lake, truth, hours = demo_lake(tmp_path)
    comparison = lake_check.compare(lake, truth, hours)
    assert comparison.exact, str(comparison)
    assert comparison.error_versions == 1  # the alert whose /ips always fails, as the truth says
    assert comparison.kept_versions >= 3  # alerts that changed over the hours kept each version
    assert sum("late_minutes" in t for t in truth["alerts"].values()) >= 1

    failures = []
    with analysts_session(str(lake)) as session:
        for name, sql in QUERIES:
            cursor = session.execute(sql.replace("<tenant id>", truth["tenant_id"]))
            columns = [column[0] for column in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
            try:
                CHECKS[name](rows, truth)
            except AssertionError as exc:
                failures.append(f"{name}: {exc}\n  {sql}\n  rows: {rows[:5]}")
    assert not failures, "\n".join(failures)


def test_every_query_of_the_doc_has_a_check():
    names = [name for name, _ in QUERIES]
    assert len(names) == len(set(names)), "each check name once"
    assert set(names) == set(CHECKS), "a query without a check, or a check without its query"


def test_a_query_block_without_its_checks_is_refused():
    sql_block = "```sql\nSELECT 1;\nSELECT 2;\n```\n"
    assert doc_queries("<!-- demo-check: one, two -->\n" + sql_block) == [("one", "SELECT 1"), ("two", "SELECT 2")]
    assert doc_queries('<!-- demo-check: top -->\n```\nmake query SQL="SELECT 3"\nmake query SQL="..."\n```') == [
        ("top", "SELECT 3")
    ]
    for text in ("Some text\n" + sql_block, "<!-- demo-check: one -->\n" + sql_block):
        with pytest.raises(AssertionError):
            doc_queries(text)


# ------------------------------------------------------------------ the checks


def _scope_is_global(ip: str) -> bool:
    from mde_pipeline.common.ip_scope import ip_scope

    return ip_scope(ip) == "global"


def check_raw_new_field(rows, truth):
    assert rows and all(row["new_field"] for row in rows)  # a field no schema names, from raw
    assert all(row["new_field_kind"] for row in rows)  # nested, too


def check_field_problems(rows, truth):
    assert rows and all(row["field_problems"] for row in rows)
    assert any(p.startswith("incidentId") for row in rows for p in row["field_problems"])
    assert "12.5" in {str(row["sent"]) for row in rows}  # the value as sent, from raw


def check_ips_errors(rows, truth):
    failing = {a for a, t in truth["alerts"].items() if t["ips_status"] == "error"}
    assert {row["alert_id"] for row in rows} == failing and rows
    assert all("500" in row["ips_error"] for row in rows)


def check_unclassified_none(rows, truth):
    assert rows == []  # every row this pipeline writes has its ip_scope


def check_public_high_ips(rows, truth):
    assert rows and all(_scope_is_global(row["ip"]) for row in rows)
    public_ioc = [ip for ip in IOC_ADDRESSES if _scope_is_global(ip)]
    by_ip = {row["ip"]: row["high_alerts"] for row in rows}
    assert all(by_ip.get(ip, 0) >= 3 for ip in public_ioc), by_ip
    assert rows[0]["high_alerts"] > 1


def check_alert_versions(rows, truth):
    versions: dict[str, list] = {}
    for row in rows:
        versions.setdefault(row["alert_id"], []).append(row)
    assert len(versions) >= 3 and all(len(v) >= 2 for v in versions.values())
    assert any(len({row["status"] for row in v}) > 1 for v in versions.values())  # status changed
    assert any(v[0]["classification"] is None and v[-1]["classification"] for v in versions.values())


def check_lookback_alerts(rows, truth):
    late = {a for a, t in truth["alerts"].items() if "late_minutes" in t}
    assert rows and {row["alert_id"] for row in rows} == late
    assert all(row["arrived_after"] > timedelta(0) for row in rows)


def check_lookback_ips(rows, truth):
    late = {a for a, t in truth["alerts"].items() if "late_minutes" in t}
    assert rows and {row["alert_id"] for row in rows} <= late


def _top_ips(rows):
    """ip_summary's busiest IPs: repeated addresses, the IOC-like ones among them."""
    assert len(rows) == 20
    counts = [row["alert_count"] for row in rows]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 5 and counts[-1] >= 2
    by_ip = {row["ip"]: row for row in rows}
    assert all(by_ip[ioc]["alert_count"] >= 3 for ioc in IOC_ADDRESSES), counts
    return by_ip


def check_top_ips(rows, truth):
    by_ip = _top_ips(rows)
    assert {row["tenant_id"] for row in rows} == {truth["tenant_id"]}
    assert {"private", "global"} <= {row["ip_scope"] for row in rows}  # busy internal hosts, shared public services
    for ioc in IOC_ADDRESSES:  # IOC-like: on several devices, in High alerts only
        assert by_ip[ioc]["machine_count"] >= 2
        assert by_ip[ioc]["high_severity_alert_count"] == by_ip[ioc]["alert_count"]


def check_ip_lookup(rows, truth):
    naming = {a for a, t in truth["alerts"].items() if DOC_IOC in t["ips"]}
    assert {row["alert_id"] for row in rows} == naming and len(naming) >= 3  # an IOC-like address
    assert {row["severity"] for row in rows} == {"High"}


def check_tenant_top_ips(rows, truth):
    _top_ips(rows)


def check_tenant_alert_counts(rows, truth):
    (row,) = rows  # one tenant, every version of its alerts
    assert row["tenant_id"] == truth["tenant_id"] and row["count_star()"] > len(truth["alerts"])


CHECKS = {
    "raw_new_field": check_raw_new_field,
    "field_problems": check_field_problems,
    "ips_errors": check_ips_errors,
    "unclassified_none": check_unclassified_none,
    "public_high_ips": check_public_high_ips,
    "alert_versions": check_alert_versions,
    "lookback_alerts": check_lookback_alerts,
    "lookback_ips": check_lookback_ips,
    "top_ips": check_top_ips,
    "ip_lookup": check_ip_lookup,
    "tenant_top_ips": check_tenant_top_ips,
    "tenant_alert_counts": check_tenant_alert_counts,
}
