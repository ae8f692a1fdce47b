"""Read the lake with DuckDB and compare it with the simulator's ground truth.

Used by `make run`, the end-to-end tests and the benchmarks: one definition of "the lake
is exact" for all of them.

Exact means, for the alerts whose current ``lastUpdateTime`` lies in the loaded
intervals: each has exactly one ``alerts`` row of that version, with the simulator's IP
status and invalid strings, and its ``alert_ips`` rows are exactly its canonical IP set,
once each. Besides, the lake may keep earlier versions of an alert (the pipeline never
drops a version it loaded, issue 11): each at most once, a version the simulator really
had; they are counted in ``kept_versions``. Nothing else is in the lake (or, with
``tenant_id``, in that tenant's partition: a lake of several tenants is checked one
simulator, so one tenant, at a time), and every file's rows carry the tenant of its
``tenant_id=`` folder.

Every version the lake holds, current or kept, is checked against the IPs the simulator
recorded for it (``ground_truth["alerts"][id]["ips"]``, or that version's entry of
``versions``): ``ip_count`` equals its ``alert_ips`` rows; ``ok`` has exactly the truth's
IP set (never no IPs, unless every value served was invalid), each row with the
``ip_scope`` of common/ip_scope.py; ``empty`` has none and the
truth none; ``not_found`` (the service's 404 then) has none. ``alert_ips`` rows of a
version ``alerts`` lacks are a problem. A version recorded as ``error`` (its IPs could
not be fetched) is counted in ``error_versions`` and is a problem unless the truth says
``error`` too (an alert whose /ips always fails, simulator profile ``demo``) or the
caller passes ``allow_errors=True`` (a fault test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import duckdb

from mde_pipeline.analytics.session import HIVE_TYPES
from mde_pipeline.common.fetch_result import IPS_EMPTY, IPS_ERROR, IPS_NOT_FOUND, IPS_OK
from mde_pipeline.common.ip_scope import ip_scope
from mde_pipeline.common.timestamps import to_utc_datetime

if TYPE_CHECKING:
    from mde_pipeline.lake.location import LakeLocation


def open_lake(root: str | Path | LakeLocation, conn_id: str | None = None) -> LakeLocation:
    """The lake at ``root``: a LakeLocation as is; a local root directly; an ``abfs://``
    root through the Airflow face's resolver (its connection ``conn_id``)."""
    from mde_pipeline.lake.location import LakeLocation, resolve_lake_location

    if isinstance(root, LakeLocation):
        return root
    if "://" in str(root) and not str(root).startswith(("file://", "local://")):
        from mde_pipeline.airflow.lake_location import configured_lake_location as resolve_with_airflow

        return resolve_with_airflow(str(root), conn_id)
    return resolve_lake_location(str(root))


TABLES = ("alerts", "alert_ips")
HIVE = f"hive_partitioning = true, hive_types = {HIVE_TYPES}"  # the analysts' partition types


def connect(
    root: str | Path | LakeLocation, conn_id: str | None = None, tenant_id: str | None = None
) -> duckdb.DuckDBPyConnection:
    """DuckDB with views ``alerts`` and ``alert_ips`` over the lake (Hive partitions
    ``tenant_id`` and ``date``): every tenant's rows, or ``tenant_id``'s only.

    A local root is read directly; an ``abfs://`` one through the project's own
    filesystem (see :func:`open_lake`), registered with DuckDB. A lake in the layout from
    before tenants is refused (lake.tenants.check_not_legacy), and so is one holding a
    tenant folder not named by the lower-case GUID (check_canonical_tenants).
    """
    from mde_pipeline.lake.location import TENANT_PREFIX
    from mde_pipeline.lake.tenants import check_canonical_tenants, check_not_legacy, replace_tenant

    location = open_lake(root, conn_id)
    tenant_id = tenant_id or location.tenant_id  # a tenant's location: that tenant's rows
    location = replace_tenant(location, None)
    check_not_legacy(location)
    check_canonical_tenants(location)  # one tenant in two folders (upper case, a domain): migrate
    con = duckdb.connect()
    if not location.is_local:
        con.register_filesystem(location.fs)
    tenant = "*" if tenant_id is None else tenant_id
    for table in TABLES:
        location.fs.invalidate_cache()
        if not location.fs.glob(location.path(table, f"{TENANT_PREFIX}{tenant}", "*", "*.parquet")):
            suffix = "" if tenant_id is None else f" for tenant {tenant_id}"
            raise AssertionError(f"no {table} files under {root}{suffix}")
        where = "" if tenant_id is None else " WHERE tenant_id = '" + tenant_id.replace("'", "''") + "'"
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{location.table_glob(table)}', {HIVE}, "
            f"union_by_name = false){where}"
        )
    return con


def misplaced_rows(root: str | Path | LakeLocation, conn_id: str | None = None) -> list[str]:
    """Files holding rows whose ``tenant_id`` column is not their folder's tenant (the
    views show the folder's value, so this reads the files' own column)."""
    from mde_pipeline.lake.tenants import replace_tenant

    location = replace_tenant(open_lake(root, conn_id), None)
    con = duckdb.connect()
    if not location.is_local:
        con.register_filesystem(location.fs)
    found = []
    for table in TABLES:
        found += [
            f"{table}: {name} holds rows of tenant {tenant}"
            for name, tenant in con.execute(
                f"SELECT DISTINCT filename, tenant_id FROM read_parquet('{location.table_glob(table)}', "
                "hive_partitioning = false, filename = true) "
                "WHERE NOT contains(filename, '/tenant_id=' || tenant_id || '/') ORDER BY ALL"
            ).fetchall()
        ]
    return found


def parse_time(value: str) -> datetime:
    """The simulator's 7-digit timestamps, truncated to microseconds like the lake."""
    return to_utc_datetime(value)


@dataclass
class LakeComparison:
    expected_alerts: int = 0
    expected_ips: int = 0
    lake_alerts: int = 0
    lake_ips: int = 0
    kept_versions: int = 0
    error_versions: int = 0  # versions with ips_status 'error' (problems unless allowed)
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (
            f"expected {self.expected_alerts} alerts / {self.expected_ips} alert IPs; "
            f"lake has {self.lake_alerts} / {self.lake_ips}"
        )
        if self.error_versions:
            head += f" ({self.error_versions} versions with ips_status 'error')"
        if self.exact:
            return head + ": exact"
        return head + f"; {len(self.problems)} problems:\n  " + "\n  ".join(self.problems[:20])


def expected_rows(ground_truth: dict[str, Any], intervals: Iterable[datetime]) -> dict[str, dict[str, Any]]:
    """Alerts of the ground truth whose lastUpdateTime lies in one of ``intervals`` (hours)."""
    hours = {start.astimezone(timezone.utc) for start in intervals}
    expected = {}
    for alert_id, truth in ground_truth["alerts"].items():
        updated = parse_time(truth["lastUpdateTime"])
        if updated.replace(minute=0, second=0, microsecond=0) in hours:
            expected[alert_id] = truth
    return expected


def compare(
    root: str | Path | LakeLocation,
    ground_truth: dict[str, Any],
    intervals: Iterable[datetime],
    conn_id: str | None = None,
    *,
    tenant_id: str | None = None,
    allow_errors: bool = False,
) -> LakeComparison:
    """The lake (or ``tenant_id``'s partition of it) against one simulator's ground truth.

    ``allow_errors``: versions recorded as ``error`` are counted, not problems."""
    intervals = list(intervals)
    expected = expected_rows(ground_truth, intervals)
    result = LakeComparison(
        expected_alerts=len(expected),
        expected_ips=sum(len(t["ips"]) for t in expected.values()),
    )
    con = connect(root, conn_id, tenant_id)
    alerts = con.execute(
        "SELECT alert_id, last_update_time, ips_status, ip_count, invalid_ip_values, tenant_id, date FROM alerts"
    ).fetchall()
    ips = con.execute("SELECT alert_id, alert_last_update_time, ip, ip_version, ip_scope FROM alert_ips").fetchall()
    result.lake_alerts, result.lake_ips = len(alerts), len(ips)
    problems = result.problems
    problems.extend(misplaced_rows(root, conn_id))

    seen: dict[str, int] = {}
    kept: dict[tuple, int] = {}
    unexpected: set[str] = set()
    # (alert_id, version) -> (label, ips_status, ip_count, invalid strings, the truth's IPs of that version)
    versions: dict[tuple, tuple[str, str, int, list, list[str]]] = {}
    failing = {a for a, t in ground_truth["alerts"].items() if t["ips_status"] == IPS_ERROR}  # /ips always fails
    for alert_id, updated, status, ip_count, invalid, tenant, date in alerts:
        known = ground_truth["alerts"].get(alert_id)
        if known and updated != parse_time(known["lastUpdateTime"]):
            (version, *_) = [v for v in known.get("versions", []) if parse_time(v["lastUpdateTime"]) == updated] or [None]
            if version is not None:
                kept[(alert_id, updated)] = kept.get((alert_id, updated), 0) + 1
                versions[(alert_id, updated)] = (f"kept version {alert_id} {updated}", status, ip_count, invalid or [], version["ips"])
                if str(date) != updated.strftime("%Y-%m-%d"):
                    problems.append(f"alerts: {alert_id} kept version in partition date={date} but updated {updated}")
                continue
        seen[alert_id] = seen.get(alert_id, 0) + 1
        truth = expected.get(alert_id)
        if truth is None:
            problems.append(f"alerts: {alert_id} is in the lake but not expected")
            unexpected.add(alert_id)
            continue
        versions[(alert_id, updated)] = (alert_id, status, ip_count, invalid or [], truth["ips"])
        if updated != parse_time(truth["lastUpdateTime"]):
            problems.append(f"alerts: {alert_id} version {updated} != {truth['lastUpdateTime']}")
        # A version recorded as 'error' is counted (and reported unless allowed) below.
        if status != truth["ips_status"] and status != IPS_ERROR:
            problems.append(f"alerts: {alert_id} ips_status {status} != {truth['ips_status']}")
        if sorted(invalid or []) != sorted(truth.get("invalid_ips") or []) and status != IPS_ERROR:
            problems.append(f"alerts: {alert_id} invalid_ip_values {invalid} != {truth.get('invalid_ips')}")
        if tenant != ground_truth["tenant_id"]:
            problems.append(f"alerts: {alert_id} tenant {tenant}")
        if str(date) != updated.strftime("%Y-%m-%d"):
            problems.append(f"alerts: {alert_id} in partition date={date} but updated {updated}")
    problems.extend(f"alerts: {a} appears {n} times" for a, n in seen.items() if n > 1)
    problems.extend(f"alerts: kept version {a} {u} appears {n} times" for (a, u), n in kept.items() if n > 1)
    result.kept_versions = len(kept)
    problems.extend(f"alerts: {a} is missing" for a in expected.keys() - seen.keys())
    for alert_id in expected.keys() - seen.keys():
        if expected[alert_id]["ips"]:
            problems.append(f"alert_ips: {alert_id} has [], expected {sorted(expected[alert_id]['ips'])}")

    by_version: dict[tuple, list[str]] = {}
    for alert_id, updated, ip, version, scope in ips:
        by_version.setdefault((alert_id, updated), []).append(ip)
        if ":" in ip and version != 6 or ":" not in ip and version != 4:
            problems.append(f"alert_ips: {alert_id} {ip} has ip_version {version}")
        if scope != ip_scope(ip):
            problems.append(f"alert_ips: {alert_id} {ip} has ip_scope {scope}, expected {ip_scope(ip)}")
    for (alert_id, updated), rows in sorted(by_version.items()):
        if (alert_id, updated) not in versions and alert_id not in unexpected:  # that one is reported already
            problems.append(f"alert_ips: {len(rows)} rows of {alert_id} {updated}, a version alerts does not hold")
    for key, (label, status, ip_count, invalid, want) in versions.items():
        problems.extend(_version_problems(label, status, ip_count, invalid, sorted(want), sorted(by_version.get(key, []))))
        if status == IPS_ERROR:
            result.error_versions += 1
            if not allow_errors and key[0] not in failing:
                problems.append(f"alerts: {label} has ips_status error (its IPs were not fetched)")
    return result


def _version_problems(label: str, status: str, ip_count: int, invalid: list, want: list[str], got: list[str]) -> list[str]:
    """What is wrong with one version's IPs: ``want`` from the truth, ``got`` its alert_ips rows."""
    found = []
    if ip_count != len(got):
        found.append(f"alerts: {label} ip_count {ip_count} but {len(got)} alert_ips rows")
    if status == IPS_OK:
        if not got and not invalid:
            found.append(f"alert_ips: {label} is 'ok' without IPs, expected {want}")
        elif got != want:
            found.append(f"alert_ips: {label} has {got}, expected {want}")
    elif status == IPS_EMPTY:
        if want or got:
            found.append(f"alert_ips: {label} is 'empty' with {got}, expected {want}")
    elif status in (IPS_NOT_FOUND, IPS_ERROR):
        if got:
            found.append(f"alert_ips: {label} is '{status}' with {got}")
    else:
        found.append(f"alerts: {label} has unknown ips_status {status!r}")
    return found


def summary(root: str | Path) -> str:
    """What landed, per tenant and day: what `make run` prints."""
    con = connect(root)
    rows = con.execute(
        """
        SELECT a.tenant_id, a.date, count(*) AS alerts,
               count(*) FILTER (WHERE ips_status = 'ok') AS with_ips,
               count(*) FILTER (WHERE ips_status = 'empty') AS empty,
               count(*) FILTER (WHERE ips_status = 'not_found') AS not_found,
               count(*) FILTER (WHERE ips_status = 'error') AS error,
               sum(len(coalesce(invalid_ip_values, []))) AS invalid_ip_strings,
               sum(ip_count) AS alert_ips
        FROM alerts a GROUP BY a.tenant_id, a.date ORDER BY a.tenant_id, a.date
        """
    ).fetchall()
    top = con.execute(
        "SELECT ip, count(DISTINCT alert_id) AS alerts, count(DISTINCT machine_id) AS devices FROM alert_ips "
        "GROUP BY ip ORDER BY alerts DESC, ip LIMIT 8"
    ).fetchall()
    (alerts, versions, changed, late, poisoned, ips, once), = con.execute(
        """
        SELECT (SELECT count(DISTINCT (tenant_id, alert_id)) FROM alerts), (SELECT count(*) FROM alerts),
               (SELECT count(*) FROM (SELECT 1 FROM alerts GROUP BY tenant_id, alert_id HAVING count(*) > 1)),
               (SELECT count(*) FROM alerts WHERE found_by_lookback_at IS NOT NULL),
               (SELECT count(DISTINCT (tenant_id, alert_id)) FROM alerts WHERE field_problems IS NOT NULL),
               count(*), count(*) FILTER (WHERE alerts = 1)
        FROM (SELECT count(DISTINCT alert_id) AS alerts FROM alert_ips GROUP BY tenant_id, ip)
        """
    ).fetchall()
    lines = [f"{'tenant_id':<36} date        alerts  with_ips  empty  not_found  error  invalid_ip_strings  alert_ips"]
    lines += [f"{t:<36} {d!s:<11} {a:>6}  {w:>8}  {e:>5}  {n:>9}  {x:>5}  {i:>18}  {p:>9}" for t, d, a, w, e, n, x, i, p in rows]
    lines.append(
        f"{versions} versions of {alerts} alerts ({changed} changed over the hours), {late} found late by a "
        f"look-back, {poisoned} with field_problems; {ips} IPs, {once} of them in one alert only"
    )
    lines.append("most frequent IPs (alerts, devices): " + ", ".join(f"{ip} ({n}, {m})" for ip, n, m in top))
    return "\n".join(lines)


def hours(start: datetime, end: datetime) -> list[datetime]:
    out, current = [], start
    while current < end:
        out.append(current)
        current += timedelta(hours=1)
    return out
