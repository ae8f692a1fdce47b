"""Analyst query speed on the lake: hourly files vs compacted days vs one IP-sorted file.

    python -m bench lake_queries [--days 180 --alerts-per-day 2000 --ips-per-alert 10]

Generates the window straight into a temporary local lake through the project's writer
(``commit.commit_interval``, one file per table and hour, as the DAG writes them), then
times, in one run and on the same rows, through the analysts' DuckDB views:

* IP lookup over the whole window (a rare, IOC-like public IP and a busy internal one);
* a 7-day window aggregation on ``alert_last_update_time``;
* the alerts/IPs join over the whole window;

for (a) the hourly layout, (b) the lake after ``compact_day`` of every day, (b+) the
same read through the analyst CLI's session, which uses the month IP index the
compaction DAG builds (lake/ip_index.py), (b++) the same with the last two days still
hourly ("between two compaction runs", the analyst's working day), (b+++) that layout with
the recent IP index each hourly publish rebuilds (lake/recent_index.py), (c) one IP-sorted file per table
(the floor), and, to answer "days or months", (d) one IP-sorted file per 30 days (not
the lake's layout: a month file has no ``date=`` key). It also times the compaction of
each day, the index of each month, and the recent index's rebuild (the cost added to
each hourly run). Prints a table; nothing is asserted.

Every layout is read with the CLI's DuckDB settings (analytics.session.DUCKDB_SETTINGS), and
the timed runs go round the layouts in turn, so load from elsewhere on the machine
falls on all of them alike.

The synthetic data (:func:`interval_tables`) is deterministic per (seed, hour), so any
hour can be regenerated exactly: the tests use that to check reruns.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mde_pipeline.common.ip_scope import ip_scope
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS, TIMESTAMP

TENANT = "00000000-0000-4000-8000-00000000beef"
SEVERITIES = np.array(["Informational", "Low", "Medium", "High"])
SEVERITY_WEIGHTS = np.array([0.3, 0.3, 0.25, 0.15])
CATEGORIES = np.array(["Malware", "SuspiciousActivity", "CommandAndControl", "Exfiltration", "LateralMovement"])
STATUSES = np.array(["New", "InProgress", "Resolved"])
# Share of an hour's alerts that are new versions of alerts listed earlier.
UPDATE_SHARE = 0.2
EMPTY_SHARE, NOT_FOUND_SHARE = 0.03, 0.01
INTERNAL_HOSTS, PUBLIC_IPS, IPV6_IPS = 20_000, 300_000, 30_000


class IpPool:
    """Canonical IP strings: busy internal hosts, a long tail of public v4 and some v6."""

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        internal = [str(ipaddress.IPv4Address(0x0A000000 + int(x))) for x in rng.choice(1 << 24, INTERNAL_HOSTS, replace=False)]
        public = [str(ipaddress.IPv4Address(int(x))) for x in np.unique(rng.integers(0x01000000, 0xDF000000, PUBLIC_IPS))]
        v6 = [str(ipaddress.IPv6Address((0x2001_0DB8 << 96) + int(x))) for x in np.unique(rng.integers(0, 1 << 62, IPV6_IPS))]
        self.ips = np.array(internal + public + v6, dtype=object)
        self.versions = np.array([4] * (len(internal) + len(public)) + [6] * len(v6), dtype=np.int8)
        # Internal hosts show up far more often than any one public address.
        weights = np.concatenate([np.full(len(internal), 4.0), 1.0 / np.arange(1, len(public) + 1) ** 0.5, np.full(len(v6), 0.3)])
        self.cumulative = np.cumsum(weights / weights.sum())

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cumulative, rng.random(count)), len(self.ips) - 1)


_POOL: IpPool | None = None


def ip_pool() -> IpPool:
    global _POOL
    if _POOL is None:
        _POOL = IpPool()
    return _POOL


def alerts_in_hour(alerts_per_day: int, hour: int) -> int:
    """The day's alerts spread over 24 hours (the remainder in the first hours)."""
    return alerts_per_day // 24 + (1 if hour < alerts_per_day % 24 else 0)


def alert_id(interval_start: datetime, index: int) -> str:
    return f"da{interval_start:%Y%m%d%H}_{index:05d}"


def interval_tables(
    interval_start: datetime,
    *,
    alerts_per_day: int = 2000,
    ips_per_alert: int = 10,
    seed: int = 1,
    variant: int = 0,
    tenant_id: str = TENANT,
) -> dict[str, pa.Table]:
    """Both lake tables of one hour, consistent enough for ``commit.commit_interval``.

    ``variant`` changes the hour's content (a "rerun" that found different data).
    Alert ids depend on the hour only: two tenants given the same hour share ids (as
    ids from two tenants may), and their rows differ with ``seed``.
    """
    start = interval_start.astimezone(timezone.utc)
    hour_index = int(start.timestamp()) // 3600
    rng = np.random.default_rng([seed, hour_index, variant])
    count = alerts_in_hour(alerts_per_day, start.hour)
    pool = ip_pool()
    # Alert ids: mostly new; some are new versions of alerts first seen 1-48 hours ago.
    updated = rng.random(count) < UPDATE_SHARE
    lags = rng.integers(1, 49, count)
    ids: list[str] = []
    for i, (is_update, lag) in enumerate(zip(updated, lags)):
        candidate = alert_id(start, i)
        if is_update:
            earlier = start - timedelta(hours=int(lag))
            picked = alert_id(earlier, int(rng.integers(0, alerts_in_hour(alerts_per_day, earlier.hour))))
            if picked in ids:
                updated[i] = False  # an alert is listed once per hour: make it a new one
            else:
                candidate = picked
        ids.append(candidate)
    offsets = np.sort(rng.choice(3_600_000_000, count, replace=False))
    update_times = pa.array(int(start.timestamp() * 1_000_000) + offsets, pa.int64()).cast(TIMESTAMP)
    creation_times = pa.array(
        int(start.timestamp() * 1_000_000) + offsets - np.where(updated, lags * 3_600_000_000, 0) - rng.integers(0, 600_000_000, count),
        pa.int64(),
    ).cast(TIMESTAMP)
    severity = SEVERITIES[rng.choice(len(SEVERITIES), count, p=SEVERITY_WEIGHTS)]
    machines = [f"m{int(x):040x}" for x in rng.integers(0, INTERNAL_HOSTS, count)]
    incident = rng.integers(1, 500_000, count)
    status_draw = rng.random(count)
    ips_status = np.where(status_draw < NOT_FOUND_SHARE, "not_found", np.where(status_draw < NOT_FOUND_SHARE + EMPTY_SHARE, "empty", "ok"))

    # IPs: draw a few extra per alert, keep the distinct ones, at most ips_per_alert.
    draws = ips_per_alert + 3
    alert_index = np.repeat(np.arange(count), draws)
    ip_index = pool.draw(rng, count * draws)
    pairs = np.unique(alert_index.astype(np.int64) * len(pool.ips) + ip_index)
    pair_alert, pair_ip = pairs // len(pool.ips), pairs % len(pool.ips)
    rank = np.arange(len(pairs)) - np.searchsorted(pair_alert, pair_alert)
    keep = (rank < ips_per_alert) & (ips_status[pair_alert] == "ok")
    pair_alert, pair_ip = pair_alert[keep], pair_ip[keep]
    ip_count = np.bincount(pair_alert, minlength=count).astype(np.int32)

    fetched_at = pa.array(np.full(count, int(start.timestamp() * 1_000_000) + 3_700_000_000), pa.int64()).cast(TIMESTAMP)
    interval = pa.array(np.full(count, int(start.timestamp() * 1_000_000)), pa.int64()).cast(TIMESTAMP)
    take = pa.array(pair_alert)
    alert_ips = pa.table(
        {
            "tenant_id": pa.array([tenant_id] * len(pair_alert), pa.string()),
            "alert_id": pa.array(ids, pa.string()).take(take),
            "ip": pa.array(pool.ips[pair_ip], pa.string()),
            "ip_version": pa.array(pool.versions[pair_ip], pa.int8()),
            "alert_last_update_time": update_times.take(take),
            "alert_creation_time": creation_times.take(take),
            "severity": pa.array(severity, pa.string()).take(take),
            "incident_id": pa.array(incident, pa.int64()).take(take),
            "machine_id": pa.array(machines, pa.string()).take(take),
            "interval_start": interval.take(take),
            "fetched_at": fetched_at.take(take),
            "found_by_lookback_at": pa.nulls(len(pair_alert), TIMESTAMP),
            "ip_scope": pa.array([ip_scope(ip) for ip in pool.ips[pair_ip]], pa.string()),
        },
        schema=SCHEMAS[ALERT_IPS],
    )
    columns = {name: pa.nulls(count, SCHEMAS[ALERTS].field(name).type) for name in SCHEMAS[ALERTS].names}
    columns.update(
        tenant_id=pa.array([tenant_id] * count, pa.string()),
        alert_id=pa.array(ids, pa.string()),
        incident_id=pa.array(incident, pa.int64()),
        title=pa.array([f"Suspicious activity {int(x)}" for x in rng.integers(0, 300, count)], pa.string()),
        severity=pa.array(severity, pa.string()),
        status=pa.array(STATUSES[rng.integers(0, len(STATUSES), count)], pa.string()),
        category=pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), count)], pa.string()),
        detection_source=pa.array(["WindowsDefenderAtp"] * count, pa.string()),
        machine_id=pa.array(machines, pa.string()),
        computer_dns_name=pa.array([f"host-{m[-6:]}.corp.example" for m in machines], pa.string()),
        mitre_techniques=pa.array([["T1059", "T1071"][: int(x)] for x in rng.integers(0, 3, count)], pa.list_(pa.string())),
        alert_creation_time=creation_times,
        last_update_time=update_times,
        ips_status=pa.array(ips_status, pa.string()),
        ip_count=pa.array(ip_count, pa.int32()),
        invalid_ip_values=pa.array([[] for _ in range(count)], pa.list_(pa.string())),
        interval_start=interval,
        listed_at=fetched_at,
        fetched_at=fetched_at,
    )
    alerts = pa.table([columns[name] for name in SCHEMAS[ALERTS].names], schema=SCHEMAS[ALERTS])
    return {ALERTS: alerts, ALERT_IPS: alert_ips}


def generate_lake(
    location,
    first_day: datetime,
    days: int,
    *,
    alerts_per_day: int,
    ips_per_alert: int,
    seed: int = 1,
    tenant_id: str = TENANT,
    progress=None,
) -> int:
    """Commit ``days`` x 24 hourly intervals of one tenant through ``commit.commit_interval``
    (into ``location.for_tenant(tenant_id)``, as the DAG does); returns IP rows."""
    from mde_pipeline.lake.commit import commit_interval

    tenant = location.for_tenant(tenant_id)
    rows = 0
    for day in range(days):
        for hour in range(24):
            start = first_day + timedelta(days=day, hours=hour)
            tables = interval_tables(start, alerts_per_day=alerts_per_day, ips_per_alert=ips_per_alert, seed=seed, tenant_id=tenant_id)
            rows += commit_interval(tenant, start, tables).rows[ALERT_IPS]
        if progress:
            progress(day + 1)
    return rows


# --------------------------------------------------------------------------- benchmark


def _floor_files(hourly_root: Path, target: Path, *, per_days: int | None, first_day: datetime, days: int) -> None:
    """IP-sorted files outside the lake layout: one per table, or one per ``per_days`` days."""
    from mde_pipeline.lake.parquet import ROW_GROUP_ROWS, parquet_bytes, sort_for_queries

    for table in (ALERT_IPS, ALERTS):
        tenant_folder = hourly_root / table / f"tenant_id={TENANT}"
        groups = [(0, days)] if per_days is None else [(d, min(days, d + per_days)) for d in range(0, days, per_days)]
        for index, (lo, hi) in enumerate(groups):
            paths = [
                str(p)
                for d in range(lo, hi)
                for p in sorted((tenant_folder / f"date={(first_day + timedelta(days=d)):%Y-%m-%d}").glob("*.parquet"))
            ]
            data = sort_for_queries(table, pa.concat_tables([pq.read_table(p, partitioning=None) for p in paths]))
            directory = target / table / (f"part={index:03d}" if per_days else "")
            directory.mkdir(parents=True, exist_ok=True)
            # The writer's 128 Ki-row groups: the best measured for one big sorted file.
            (directory / "data.parquet").write_bytes(parquet_bytes(table, data, row_group_rows=ROW_GROUP_ROWS, sorted_for_queries=True))


def _top_level_underscore(root: Path):
    """A copytree ``ignore`` that leaves out the ``_`` folders at the lake's root only."""
    return lambda directory, names: [n for n in names if n.startswith("_")] if Path(directory) == root else []


def _timed_round_robin(connections: dict, queries: dict[str, str], repeats: int) -> dict[str, dict[str, tuple[float, int]]]:
    """Median ms and row count of every query on every connection, the runs interleaved."""
    samples: dict[tuple[str, str], list[float]] = {(n, q): [] for n in connections for q in queries}
    rows: dict[tuple[str, str], int] = {}
    for name, connection in connections.items():
        for label, sql in queries.items():
            rows[name, label] = len(connection.execute(sql).fetchall())  # warm: OS cache, footers
    for _ in range(repeats):
        for label, sql in queries.items():
            for name, connection in connections.items():
                started = time.perf_counter()
                connection.execute(sql).fetchall()
                samples[name, label].append(time.perf_counter() - started)
    return {n: {q: (statistics.median(samples[n, q]) * 1000, rows[n, q]) for q in queries} for n in connections}


def _queries(rare_ip: str, busy_ip: str, window_start: datetime) -> dict[str, str]:
    window_end = window_start + timedelta(days=7)
    return {
        "IP lookup (rare IP)": f"SELECT alert_id, alert_last_update_time, severity FROM alert_ips WHERE ip = '{rare_ip}'",
        "IP lookup (busy IP)": f"SELECT alert_id, alert_last_update_time, severity FROM alert_ips WHERE ip = '{busy_ip}'",
        "7-day window aggregation": (
            "SELECT severity, count(*) AS rows, count(DISTINCT ip) AS ips FROM alert_ips "
            f"WHERE alert_last_update_time >= TIMESTAMPTZ '{window_start.isoformat()}' "
            f"AND alert_last_update_time < TIMESTAMPTZ '{window_end.isoformat()}' GROUP BY severity"
        ),
        "alerts/IPs join (High, whole window)": (
            "SELECT a.category, count(DISTINCT i.ip) AS ips, count(*) AS rows FROM alerts a JOIN alert_ips i "
            "ON i.tenant_id = a.tenant_id AND i.alert_id = a.alert_id AND i.alert_last_update_time = a.last_update_time "
            "WHERE a.severity = 'High' GROUP BY a.category"
        ),
    }


def _connection_for(kind: str, root: Path):
    import duckdb

    from mde_pipeline.analytics.session import configure, connect

    if kind in ("lake", "lake+index"):
        return connect(str(root), use_ip_index=kind == "lake+index")
    connection = duckdb.connect()
    configure(connection)
    hive = ", hive_partitioning = false" if kind == "floor" else ", hive_partitioning = true"
    pattern = "*.parquet" if kind == "floor" else "*/*.parquet"
    for table in (ALERT_IPS, ALERTS):
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{root / table}/{pattern}'{hive})")
    return connection


def _pick_ips(root: Path) -> tuple[str, str]:
    import duckdb

    counts = duckdb.connect().execute(
        f"SELECT ip, count(*) AS n FROM read_parquet('{root}/alert_ips/*.parquet') GROUP BY ip ORDER BY n DESC, ip"
    ).fetchall()
    busy = counts[0][0]
    rare = next(ip for ip, n in counts if n == 2 and not ip.startswith("10."))
    return rare, busy


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench lake_queries", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--alerts-per-day", type=int, default=2000)
    parser.add_argument("--ips-per-alert", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per query and layout (median reported)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", metavar="DIR", help="build the lakes in DIR and keep them")
    args = parser.parse_args(argv)

    from mde_pipeline.lake.compaction import compact_day
    from mde_pipeline.lake.ip_index import build_month_index, months_to_index
    from mde_pipeline.lake.recent_index import build_recent_index
    from mde_pipeline.lake.recent_index import read_manifest as read_recent_manifest
    from mde_pipeline.lake.location import resolve_lake_location

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mde-bench-lake-"))
    work.mkdir(parents=True, exist_ok=True)
    first_day = datetime(2025, 1, 1, tzinfo=timezone.utc)
    layouts = {name: work / name for name in ("hourly", "compacted", "recent", "recent+index", "floor", "months")}
    try:
        for path in layouts.values():
            shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        print(f"generating {args.days} days x {args.alerts_per_day} alerts x <= {args.ips_per_alert} IPs "
              f"through commit.commit_interval into {layouts['hourly']} ...", flush=True)
        location = resolve_lake_location(str(layouts["hourly"]))
        ip_rows = generate_lake(
            location, first_day, args.days, alerts_per_day=args.alerts_per_day, ips_per_alert=args.ips_per_alert, seed=args.seed,
            progress=lambda d: d % 30 == 0 and print(f"  {d} days, {time.perf_counter() - started:.0f} s", flush=True),
        )
        generate_seconds = time.perf_counter() - started
        print(f"generated {ip_rows:,} alert_ips rows in {generate_seconds:.0f} s")

        # "compacted": every day compacted, every month indexed (months_to_index is what
        # the compaction DAG calls after compacting). "recent": the same lake two days
        # before, as the CLI sees it between two compaction runs: the last two days
        # still hourly and outside the index.
        shutil.copytree(layouts["hourly"], layouts["compacted"], ignore=shutil.ignore_patterns("_*"))
        # One tenant (the generator's): compaction and the index work on a tenant's location.
        compacted = resolve_lake_location(str(layouts["compacted"])).for_tenant(TENANT)
        day_seconds = []
        for d in range(args.days):
            day = f"{first_day + timedelta(days=d):%Y-%m-%d}"
            began = time.perf_counter()
            for table in (ALERT_IPS, ALERTS):
                compact_day(compacted, table, day)
            day_seconds.append(time.perf_counter() - began)
            if d == args.days - 3:
                # Top-level "_" folders only (staging, locks): each day's _compaction.json
                # must come along, or no day counts as compacted and nothing is indexed.
                shutil.copytree(layouts["compacted"], layouts["recent"], ignore=_top_level_underscore(layouts["compacted"]))
        recent = resolve_lake_location(str(layouts["recent"])).for_tenant(TENANT)
        for month in months_to_index(recent):
            build_month_index(recent, month)
        # The same layout with the recent IP index, as the last hourly publish left it;
        # its rebuild timed as each hourly run pays it (both hourly days, every file read).
        shutil.copytree(layouts["recent"], layouts["recent+index"])
        with_recent = resolve_lake_location(str(layouts["recent+index"])).for_tenant(TENANT)
        recent_seconds = []
        for _ in range(5):
            began = time.perf_counter()
            recent_built = build_recent_index(with_recent, force=True)
            recent_seconds.append(time.perf_counter() - began)
        recent_manifest = read_recent_manifest(with_recent)
        month_seconds = []
        for month in months_to_index(compacted):
            began = time.perf_counter()
            build_month_index(compacted, month)
            month_seconds.append(time.perf_counter() - began)
        _floor_files(layouts["hourly"], layouts["floor"], per_days=None, first_day=first_day, days=args.days)
        _floor_files(layouts["hourly"], layouts["months"], per_days=30, first_day=first_day, days=args.days)

        rare, busy = _pick_ips(layouts["floor"])
        queries = _queries(rare, busy, first_day + timedelta(days=args.days // 2))
        runs = {  # column: (connection kind, layout)
            "hourly": ("lake", "hourly"), "compacted": ("lake", "compacted"), "+index": ("lake+index", "compacted"),
            "between runs": ("lake+index", "recent"), "between+recent": ("lake+index", "recent+index"),
            "floor": ("floor", "floor"), "months": ("months", "months"),
        }
        connections = {name: _connection_for(kind, layouts[layout]) for name, (kind, layout) in runs.items()}
        try:
            results = _timed_round_robin(connections, queries, args.repeats)
        finally:
            for connection in connections.values():
                connection.close()

        def data_files(path: Path) -> list[Path]:
            return [p for p in path.rglob("*.parquet") if not p.relative_to(path).parts[0].startswith("_")]

        files = {name: len(data_files(path)) for name, path in layouts.items()}
        size = {name: sum(p.stat().st_size for p in data_files(path)) / 2**20 for name, path in layouts.items()}
        index_mib = sum(p.stat().st_size for p in (layouts["compacted"] / "_ip_index").rglob("*.parquet")) / 2**20
        print()
        print(f"{args.days} days, {args.alerts_per_day} alerts/day, <= {args.ips_per_alert} IPs/alert: {ip_rows:,} alert_ips rows; "
              f"DuckDB, median of {args.repeats} warm runs; rare IP {rare}, busy IP {busy}")
        ratios = ("compacted", "+index", "between runs", "between+recent")
        header = f"{'query':38s} " + " ".join(f"{n:>17s}" for n in results) + "  " + " ".join(f"{n + '/floor':>21s}" for n in ratios)
        print(header)
        print("-" * len(header))
        for label in queries:
            cells = " ".join(f"{results[n][label][0]:15.1f}ms" for n in results)
            f = results["floor"][label][0]
            rows = {results[n][label][1] for n in results}
            flag = "" if len(rows) == 1 else f"  ROW COUNTS DIFFER {rows}"
            print(f"{label:38s} {cells}  " + " ".join(f"{results[n][label][0] / f:20.1f}x" for n in ratios) + flag)
        print(f"{'parquet files (both tables)':38s} " + " ".join(f"{files[runs[n][1]]:17d}" for n in results))
        print(f"{'size MiB (both tables)':38s} " + " ".join(f"{size[runs[n][1]]:17.1f}" for n in results))
        print()
        print(f"generation through commit.commit_interval: {generate_seconds:.0f} s ({args.days * 24} intervals)")
        print(f"compaction of one day (both tables): median {statistics.median(day_seconds):.2f} s, "
              f"max {max(day_seconds):.2f} s over {args.days} days")
        print(f"IP index of one month: median {statistics.median(month_seconds):.2f} s, max {max(month_seconds):.2f} s "
              f"over {len(month_seconds)} months; the indexes take {index_mib:.1f} MiB (not in the sizes above)")
        recent_mib = recent_manifest["bytes"] / 2**20
        print(f"recent IP index rebuild (each hourly run, {len(recent_built.days)} hourly days, "
              f"{sum(len(f) for f in recent_manifest['days'].values())} files read): median {statistics.median(recent_seconds):.2f} s, "
              f"max {max(recent_seconds):.2f} s; {recent_built.rows:,} rows read and written, {recent_mib:.1f} MiB written "
              f"(at most {24 * recent_mib:.0f} MiB a day); it takes {recent_mib:.1f} MiB (the old file is removed)")
        print("layouts: hourly = as the DAG writes; compacted = after compact_day of every day (day files only); "
              "+index = the same lake through the analyst CLI's session, which reads the IP index; between runs = "
              "between two compaction runs: the same with the last two days still hourly (month index only); "
              "between+recent = between two compaction runs with the recent IP index (lake/recent_index.py); "
              "floor = one IP-sorted file per table; months = one IP-sorted file per 30 days (not the lake layout)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
