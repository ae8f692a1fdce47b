"""Interval data for the lake tests, reproducible from a seed.

``sample_interval`` goes the production way (alert JSON + fetch results ->
``interval_tables``); ``large_interval`` builds big tables column-wise (fast) for the
crash tests, which need files of several MB.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.schema import ALERT_IPS, ALERT_IPS_SCHEMA, ALERTS, ALERTS_SCHEMA, TIMESTAMP

UTC = timezone.utc
SEVERITIES = ["Informational", "Low", "Medium", "High"]



TENANT = "tenant-a"  # the tenant id of the sample data and of the fixtures' lake locations

def service_time(moment: datetime, extra_digit: int) -> str:
    """The service's 7-digit form: microseconds plus a 7th digit the lake truncates."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + str(extra_digit) + "Z"


def _random_ip(rng: random.Random) -> tuple[str, int]:
    if rng.random() < 0.8:
        return f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", 4
    return f"2001:db8:{rng.randrange(1, 0xffff):x}::{rng.randrange(1, 0xffff):x}", 6


def sample_listing(start: datetime, *, alerts: int = 12, ips_per_alert: int = 3, seed: int = 0):
    """(listed alert JSON, fetch results) of one interval: ok, empty and 404 alerts."""
    rng = random.Random(seed)
    listed, results = [], []
    for index in range(alerts):
        updated = start + timedelta(microseconds=rng.randrange(3600 * 10**6))
        alert = {
            "id": f"da{seed:03d}{index:05d}_{rng.randrange(10**9)}",
            "incidentId": rng.randrange(1, 10**6),
            "severity": rng.choice(SEVERITIES),
            "status": "New",
            "title": f"alert {index} of seed {seed}",
            "machineId": f"{rng.getrandbits(160):040x}",
            "alertCreationTime": service_time(updated - timedelta(minutes=5), rng.randrange(10)),
            "lastUpdateTime": service_time(updated, rng.randrange(10)),
            "mitreTechniques": [f"T{rng.randrange(1000, 1700)}" for _ in range(rng.randrange(3))],
            "comments": [{"comment": "seen", "createdBy": "soc", "createdTime": service_time(updated, 0)}] if index % 4 == 0 else [],
            "relatedUser": {"userName": f"user{index}", "domainName": "CONTOSO"} if index % 3 == 0 else None,
        }
        kind = index % 6
        status = "not_found" if kind == 4 else "empty" if kind == 5 else "ok"
        ips = sorted({_random_ip(rng) for _ in range(ips_per_alert)}) if status == "ok" else []
        listed.append(alert)
        results.append(
            {
                "alert_id": alert["id"],
                "last_update_time": alert["lastUpdateTime"],
                "status": status,
                "ips": [list(pair) for pair in ips],
                "invalid_ip_values": ["not-an-ip"] if kind == 3 else [],
                "fetched_at": (start + timedelta(hours=1, seconds=index)).isoformat(),
            }
        )
    return listed, results


def sample_interval(start: datetime, *, alerts: int = 12, ips_per_alert: int = 3, seed: int = 0, tenant: str = TENANT) -> dict[str, pa.Table]:
    listed, results = sample_listing(start, alerts=alerts, ips_per_alert=ips_per_alert, seed=seed)
    return interval_tables(listed, results, tenant_id=tenant, interval_start=start, listed_at=start + timedelta(hours=1))


def large_interval(start: datetime, *, alerts: int, ips_per_alert: int, seed: int = 0, tenant: str = TENANT) -> dict[str, pa.Table]:
    """Consistent tables of ``alerts * ips_per_alert`` IP rows, built with Arrow compute."""
    ip_rows = alerts * ips_per_alert

    def random_ints(count: int, low: int, high: int, salt: int) -> pa.Array:
        floats = pc.random(count, initializer=seed * 1000 + salt)
        return pc.cast(pc.floor(pc.add(pc.multiply(floats, high - low), low)), pa.int64())

    def repeat_each(values: pa.Array, times: int) -> pa.Array:
        return values.take(pc.divide(pa.array(range(len(values) * times), pa.int64()), times))

    start_us = int(start.timestamp() * 10**6)
    fetched_us = start_us + 3600 * 10**6
    updated = pc.add(random_ints(alerts, 0, 3600 * 10**6, 1), start_us)
    # Distinct IPs per alert, as the fetch step guarantees: the last octet counts up.
    row_numbers = pa.array(range(ip_rows), pa.int64())
    last_octet = pc.add(pc.subtract(row_numbers, pc.multiply(pc.divide(row_numbers, ips_per_alert), ips_per_alert)), 1)
    octets = [random_ints(ip_rows, 1, 224, salt) for salt in (2, 3, 4)] + [last_octet]
    ips = pc.binary_join_element_wise(*[pc.cast(octet, pa.string()) for octet in octets], ".")
    alert_ids = pc.binary_join_element_wise(f"big{seed}-", pc.cast(pa.array(range(alerts), pa.int64()), pa.string()), "")

    def timestamps(values: pa.Array) -> pa.Array:
        return pc.cast(values, pa.int64()).cast(TIMESTAMP)

    def constant(value, rows: int, type_: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, type_), rows)

    def table(schema: pa.Schema, values: dict[str, pa.Array], rows: int) -> pa.Table:
        return pa.table([values[f.name] if f.name in values else pa.nulls(rows, f.type) for f in schema], schema=schema)

    severities = pa.array(SEVERITIES).take(pc.cast(random_ints(ip_rows, 0, 4, 5), pa.int64()))
    alert_ips = table(
        ALERT_IPS_SCHEMA,
        {
            "tenant_id": constant(tenant, ip_rows, pa.string()),
            "alert_id": repeat_each(alert_ids, ips_per_alert),
            "ip": ips,
            "ip_version": constant(4, ip_rows, pa.int8()),
            "alert_last_update_time": repeat_each(timestamps(updated), ips_per_alert),
            "severity": severities,
            "interval_start": constant(start_us, ip_rows, pa.int64()).cast(TIMESTAMP),
            "fetched_at": constant(fetched_us, ip_rows, pa.int64()).cast(TIMESTAMP),
        },
        ip_rows,
    )
    alerts_table = table(
        ALERTS_SCHEMA,
        {
            "tenant_id": constant(tenant, alerts, pa.string()),
            "alert_id": alert_ids,
            "title": pc.binary_join_element_wise("alert ", alert_ids, ""),
            "last_update_time": timestamps(updated),
            "ips_status": constant("ok", alerts, pa.string()),
            "ip_count": constant(ips_per_alert, alerts, pa.int32()),
            "interval_start": constant(start_us, alerts, pa.int64()).cast(TIMESTAMP),
            "listed_at": constant(fetched_us, alerts, pa.int64()).cast(TIMESTAMP),
            "fetched_at": constant(fetched_us, alerts, pa.int64()).cast(TIMESTAMP),
        },
        alerts,
    )
    return {ALERTS: alerts_table, ALERT_IPS: alert_ips}


def same_rows(left: pa.Table, right: pa.Table) -> bool:
    """Equal content regardless of row order (files keep order, but be explicit)."""
    if left.schema.names != right.schema.names:
        return False
    keys = [(name, "ascending") for name in left.schema.names if not pa.types.is_nested(left.schema.field(name).type)]
    return left.sort_by(keys).to_pylist() == right.sort_by(keys).to_pylist()


def duckdb_read(location, table: str, columns: str = "*") -> pa.Table:
    """What an analyst's DuckDB sees: the table's glob with Hive partitioning (``date``)."""
    with duckdb.connect() as connection:
        if not location.is_local:
            connection.register_filesystem(location.fs)
        return connection.sql(f"select {columns} from read_parquet('{location.table_glob(table)}', hive_partitioning=true)").to_arrow_table()


class WrappedFile:
    """A real file opened for exclusive creation, standing in for the writer's; the crash
    tests subclass it to change ``write``."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "xb")
        self.name = path

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def hourly_intervals(location, table: str) -> list[datetime]:
    """Interval starts with an hourly file of ``table``, sorted (what a test checks was written)."""
    from mde_pipeline.lake.layout import PARQUET_SUFFIX, parse_interval_file

    location.fs.invalidate_cache()
    return sorted(parse_interval_file(p) for p in location.fs.glob(location.path(table, "*", f"interval=*{PARQUET_SUFFIX}")))


def wait_for_marker(child, marker, what: str, timeout: float = 180) -> None:
    """Wait until a writer child (lake_child.py) wrote ``marker``; fail if it exits first."""
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert child.poll() is None, f"child exited early ({child.returncode}): {child.stderr.read()}"
        assert time.monotonic() < deadline, f"child never {what}"
        time.sleep(0.05)
