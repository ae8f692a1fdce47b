"""include/lake_check.py (the end-to-end tests' "the lake is exact") on a two-tenant lake:
one tenant's partition at a time, and rows filed under the wrong tenant are caught."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import lake_check
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS

from tests.analytics.conftest import OTHER_TENANT, TENANT, day_name, small_tables, tenant_hours


def test_views_read_one_tenant_or_all(hourly_lake):
    root, _ = hourly_lake
    expected = {t: sum(small_tables(h, tenant_id=t)[ALERTS].num_rows for h in tenant_hours(t)) for t in (TENANT, OTHER_TENANT)}
    for tenant, rows in expected.items():
        con = lake_check.connect(root, tenant_id=tenant)
        assert con.execute("SELECT count(*), min(tenant_id), max(tenant_id) FROM alerts").fetchone() == (rows, tenant, tenant)
    assert lake_check.connect(root).execute("SELECT count(*) FROM alerts").fetchone()[0] == sum(expected.values())
    assert lake_check.misplaced_rows(root) == []
    assert OTHER_TENANT in lake_check.summary(root)


def test_a_file_under_the_wrong_tenant_is_a_problem(hourly_lake):
    root, _ = hourly_lake
    source = root / ALERT_IPS / f"tenant_id={OTHER_TENANT}" / f"date={day_name(1)}" / "interval=20250302T05.parquet"
    target = root / ALERT_IPS / f"tenant_id={TENANT}" / f"date={day_name(1)}" / "interval=20250302T05.parquet"
    shutil.copyfile(source, target)
    [problem] = lake_check.misplaced_rows(root)
    assert str(target) in problem and OTHER_TENANT in problem


# ------------------------------------------------------------- every version against the truth

LAKE_TENANT = "tenant-check"
HOUR = datetime(2025, 3, 2, 6, tzinfo=timezone.utc)
EARLIER = HOUR - timedelta(hours=1)
V1, V2 = "2025-03-02T05:10:00.0000001Z", "2025-03-02T06:30:00.0000001Z"


def truth_of_three_alerts() -> dict:
    """a1 ok with two IPs (and an earlier version with one), a2 empty, a3 gone (404)."""
    def alert(updated, ips, status, versions):
        return {"lastUpdateTime": updated, "ips": ips, "ips_status": status, "invalid_ips": [], "served_ips": ips,
                "vanished": False, "versions": [{"lastUpdateTime": t, "ips": i} for t, i in versions]}

    return {"tenant_id": LAKE_TENANT, "alerts": {
        "a1": alert(V2, ["10.0.0.1", "10.0.0.2"], "ok", [(V1, ["10.0.0.1"]), (V2, ["10.0.0.1", "10.0.0.2"])]),
        "a2": alert("2025-03-02T06:40:00.0000001Z", [], "empty", [("2025-03-02T06:40:00.0000001Z", [])]),
        "a3": alert("2025-03-02T06:50:00.0000001Z", [], "not_found", [("2025-03-02T06:50:00.0000001Z", [])]),
    }}


def commit_truth(root, truth, *, status_of=None) -> None:
    """Commit the truth's hours through the project's writer (a1's earlier version in its hour)."""
    from mde_pipeline.lake.commit import commit_interval
    from mde_pipeline.lake.location import resolve_lake_location
    from mde_pipeline.lake.records import interval_tables

    location = resolve_lake_location(str(root)).for_tenant(LAKE_TENANT)
    versions = [(a, v["lastUpdateTime"], v["ips"]) for a, t in truth["alerts"].items() for v in t["versions"]]
    for start in (EARLIER, HOUR):
        mine = [(a, u, ips) for a, u, ips in versions if lake_check.parse_time(u).replace(minute=0, second=0, microsecond=0) == start]
        listed = [{"id": a, "lastUpdateTime": u, "title": a, "severity": "Low", "status": "New"} for a, u, _ in mine]
        results = []
        for a, u, ips in mine:
            status = (status_of or {}).get(a) or (truth["alerts"][a]["ips_status"] if not ips else "ok")
            results.append({"alert_id": a, "last_update_time": u, "status": status,
                            "ips": [[ip, 4] for ip in ips] if status == "ok" else [], "invalid_ip_values": [],
                            "fetched_at": (start + timedelta(hours=1)).isoformat(),
                            **({"error": "HTTP 500 after 5 retries"} if status == "error" else {})})
        commit_interval(location, start, interval_tables(listed, results, tenant_id=LAKE_TENANT, interval_start=start,
                                                         listed_at=start + timedelta(hours=1)))


def rewrite_alert_ips(root, start, keep, extra=lambda rows: []) -> None:
    """Replace an hour's alert_ips file with the rows ``keep(row)`` accepts plus
    ``extra(rows)`` (a lost or stray write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "alert_ips" / f"tenant_id={LAKE_TENANT}" / f"date={start:%Y-%m-%d}" / f"interval={start:%Y%m%dT%H}.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    pq.write_table(pa.Table.from_pylist([r for r in rows if keep(r)] + extra(rows), schema=table.schema), path)


def test_every_version_the_lake_keeps_is_exact(tmp_path):
    root, truth = tmp_path / "lake", truth_of_three_alerts()
    commit_truth(root, truth)
    comparison = lake_check.compare(root, truth, [HOUR])
    assert comparison.exact, str(comparison)
    assert (comparison.kept_versions, comparison.lake_ips, comparison.error_versions) == (1, 3, 0)


def test_lost_ips_of_an_ok_version_are_reported(tmp_path):
    """The alerts row says ok with ip_count 2; its alert_ips rows are gone."""
    root, truth = tmp_path / "lake", truth_of_three_alerts()
    commit_truth(root, truth)
    rewrite_alert_ips(root, HOUR, keep=lambda row: row["alert_id"] != "a1")
    problems = lake_check.compare(root, truth, [HOUR]).problems
    assert any("a1" in p and "ip_count 2 but 0 alert_ips rows" in p for p in problems), problems
    assert any("a1" in p and "'ok' without IPs" in p for p in problems), problems


def test_lost_ips_of_a_kept_version_are_reported(tmp_path):
    """An earlier version's IPs were accepted as [] before: no longer."""
    root, truth = tmp_path / "lake", truth_of_three_alerts()
    commit_truth(root, truth)
    rewrite_alert_ips(root, EARLIER, keep=lambda row: False)
    comparison = lake_check.compare(root, truth, [HOUR])
    assert comparison.kept_versions == 1
    assert [p for p in comparison.problems if "kept version a1" in p] == [
        "alerts: kept version a1 2025-03-02 05:10:00+00:00 ip_count 1 but 0 alert_ips rows",
        "alert_ips: kept version a1 2025-03-02 05:10:00+00:00 is 'ok' without IPs, expected ['10.0.0.1']",
    ]


def test_wrong_ips_and_rows_of_a_version_alerts_lacks_are_reported(tmp_path):
    root, truth = tmp_path / "lake", truth_of_three_alerts()
    truth["alerts"]["a1"]["versions"][0]["ips"] = ["10.0.0.9"]  # the lake kept other IPs for that version
    commit_truth(root, truth)
    truth["alerts"]["a1"]["versions"][0]["ips"] = ["10.0.0.1"]
    # a stray row of a version alerts does not hold (one minute after a1's current one)
    rewrite_alert_ips(root, HOUR, keep=lambda row: True, extra=lambda rows: [
        rows[0] | {"alert_last_update_time": lake_check.parse_time(V2) + timedelta(minutes=1)}
    ])
    problems = lake_check.compare(root, truth, [HOUR]).problems
    assert any("kept version a1" in p and "['10.0.0.9'], expected ['10.0.0.1']" in p for p in problems), problems
    assert any("rows of a1 2025-03-02 06:31:00+00:00, a version alerts does not hold" in p for p in problems), problems


def test_error_versions_are_counted_and_allowed_only_when_asked(tmp_path):
    root, truth = tmp_path / "lake", truth_of_three_alerts()
    commit_truth(root, truth, status_of={"a1": "error"})
    strict = lake_check.compare(root, truth, [HOUR])
    assert strict.error_versions == 2  # a1's two versions
    assert sum("has ips_status error" in p for p in strict.problems) == 2, strict.problems
    allowed = lake_check.compare(root, truth, [HOUR], allow_errors=True)
    assert allowed.exact and allowed.error_versions == 2, str(allowed)
