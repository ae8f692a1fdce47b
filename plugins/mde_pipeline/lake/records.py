"""Alert JSON -> lake rows: records, tables, and the checks of one interval.

Inputs (see docs/DESIGN.md, "Lake"):

* listed alerts: the JSON objects of ``GET /api/alerts`` (camelCase), unchanged;
* IP results: :class:`mde_pipeline.common.fetch_result.FetchResult` dicts (``alert_id``,
  ``last_update_time``, ``status``, ``ips`` as ``[[ip, version], ...]``,
  ``invalid_ip_values``, ``fetched_at``).

:func:`interval_tables` turns one interval's listing and IP results into both tables and
refuses anything that would put a half or inconsistent interval in the lake;
:func:`check_interval` is what every commit checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mde_pipeline.common import timestamps
from mde_pipeline.common.fetch_result import IPS_ERROR, IPS_OK, IPS_STATUSES
from mde_pipeline.common.ip_scope import ip_scope
from mde_pipeline.common.timestamps import format_timestamp
from mde_pipeline.lake import alert_fields
from mde_pipeline.lake.alert_fields import AlertFields
from mde_pipeline.lake.schema import (
    ALERT_IPS,
    ALERTS,
    ROW_KEYS,
    SCHEMAS,
    LakeSchemaError,
    conform,
    parse_timestamp,
    table_schema,
)

# Alert JSON field -> alerts column, for the plain (string / integer) fields.
_ALERT_STRING_FIELDS = {
    "title": "title",
    "description": "description",
    "severity": "severity",
    "status": "status",
    "category": "category",
    "detectionSource": "detection_source",
    "threatFamilyName": "threat_family_name",
    "threatName": "threat_name",
    "classification": "classification",
    "determination": "determination",
    "machineId": "machine_id",
    "computerDnsName": "computer_dns_name",
    "rbacGroupName": "rbac_group_name",
    "aadTenantId": "aad_tenant_id",
    "assignedTo": "assigned_to",
}
_ALERT_INT_FIELDS = {"incidentId": "incident_id", "investigationId": "investigation_id"}
_ALERT_TIME_FIELDS = {
    "alertCreationTime": "alert_creation_time",
    "firstEventTime": "first_event_time",
    "lastEventTime": "last_event_time",
    "resolvedTime": "resolved_time",
}


def canonical_ip_version(ip: Any) -> int:
    """The version of an IP already in canonical form (``ipaddress`` compressed text).

    The fetch step canonicalises (mde_pipeline.ip_addresses); this only checks, so a
    spelling that would split one address into two rows never reaches the lake.
    """
    if not isinstance(ip, str):
        raise LakeSchemaError(f"ip: expected a string, got {type(ip).__name__}")
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise LakeSchemaError(f"ip: not an IP address: {ip!r:.80}") from None
    if address.compressed != ip or getattr(address, "scope_id", None):
        raise LakeSchemaError(f"ip: {ip!r} is not canonical (expected {address.compressed!r})")
    return address.version


# --------------------------------------------------------------------------- records


def alert_record(
    alert: Mapping[str, Any],
    *,
    tenant_id: str,
    interval_start: datetime | str,
    listed_at: datetime | str,
    ips_status: str,
    ip_count: int,
    invalid_ip_values: Sequence[str] | None = None,
    fetched_at: datetime | str | None = None,
    ips_error: str | None = None,
    found_by_lookback_at: datetime | str | None = None,
) -> dict[str, Any]:
    """One ``alerts`` row (snake_case, parsed) from one listed alert's JSON.

    A field that does not fit its column is null and named in ``field_problems``; the
    alert itself is kept whole in ``raw``. Only the row's identity must parse: the id and
    lastUpdateTime (the listing checked both already).
    """
    if not isinstance(alert, Mapping):
        raise LakeSchemaError(f"alert: expected an object, got {type(alert).__name__}")
    alert_id = alert.get("id")
    if not isinstance(alert_id, str) or not alert_id:
        raise LakeSchemaError(f"alert without a string id: {alert_id!r:.80}")
    if ips_status not in IPS_STATUSES:
        raise LakeSchemaError(f"alert {alert_id}: ips_status {ips_status!r} is not one of {IPS_STATUSES}")
    fields = AlertFields(alert)
    related_user = fields.related_user()
    record: dict[str, Any] = {"tenant_id": tenant_id, "alert_id": alert_id}
    for source, column in _ALERT_INT_FIELDS.items():
        record[column] = fields.read(alert_fields.integer, source)
    for source, column in _ALERT_STRING_FIELDS.items():
        record[column] = fields.read(alert_fields.string, source)
    for source, column in _ALERT_TIME_FIELDS.items():
        record[column] = fields.read(alert_fields.timestamp, source)
    record.update(
        mitre_techniques=fields.read(alert_fields.string_list, "mitreTechniques"),
        last_update_time=parse_timestamp(alert.get("lastUpdateTime"), field=f"alert {alert_id}: lastUpdateTime"),
        related_user_name=fields.read(alert_fields.string, "relatedUser.userName", related_user.get("userName"), given=True),
        related_user_domain=fields.read(
            alert_fields.string, "relatedUser.domainName", related_user.get("domainName"), given=True
        ),
        comments=fields.read(alert_fields.comments, "comments"),
        ips_status=ips_status,
        ip_count=ip_count,
        invalid_ip_values=alert_fields.string_list(invalid_ip_values, f"alert {alert_id}: invalid_ip_values"),
        interval_start=parse_timestamp(interval_start, field="interval_start"),
        listed_at=parse_timestamp(listed_at, field="listed_at"),
        fetched_at=parse_timestamp(fetched_at, field="fetched_at"),
        ips_error=ips_error,
        field_problems=fields.problems or None,
        raw=alert_fields.raw_json(alert),
        found_by_lookback_at=parse_timestamp(found_by_lookback_at, field="found_by_lookback_at"),
    )
    return record


def alert_ip_records(
    alert_row: Mapping[str, Any],
    ips: Iterable[str | Sequence[Any]],
    *,
    fetched_at: datetime | str,
) -> list[dict[str, Any]]:
    """``alert_ips`` rows of one alert version (its ``alerts`` row): one per distinct canonical IP.

    The alert's columns come from its row, so both tables agree (a field that did not fit
    is null in both). ``ips`` holds canonical IP strings or ``[ip, version]`` pairs (the
    fetch result's form); a pair whose version does not match its address is refused.
    ``ip_scope`` classifies each address (common/ip_scope.py).
    """
    alert_id = alert_row["alert_id"]
    common = {
        "tenant_id": alert_row["tenant_id"],
        "alert_id": alert_id,
        "alert_last_update_time": alert_row["last_update_time"],
        "alert_creation_time": alert_row.get("alert_creation_time"),
        "severity": alert_row.get("severity"),
        "incident_id": alert_row.get("incident_id"),
        "machine_id": alert_row.get("machine_id"),
        "interval_start": alert_row["interval_start"],
        "fetched_at": parse_timestamp(fetched_at, field="fetched_at"),
        "found_by_lookback_at": alert_row.get("found_by_lookback_at"),
    }
    records: dict[str, dict[str, Any]] = {}
    for item in ips:
        if isinstance(item, str):
            ip, claimed_version = item, None
        elif isinstance(item, Sequence) and len(item) == 2:
            ip, claimed_version = item
        else:
            raise LakeSchemaError(f"alert {alert_id}: expected an IP string or [ip, version], got {item!r:.80}")
        version = canonical_ip_version(ip)
        if claimed_version is not None and claimed_version != version:
            raise LakeSchemaError(f"alert {alert_id}: {ip} is IPv{version}, not IPv{claimed_version}")
        records.setdefault(ip, {**common, "ip": ip, "ip_version": version, "ip_scope": ip_scope(ip)})
    return list(records.values())


def to_table(table: str, records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A table with exactly the lake schema of ``table`` from snake_case records.

    Keys outside the schema are an error (a typo would otherwise vanish silently);
    missing optional keys are null; a null in a required column is an error.
    """
    schema = table_schema(table)
    names = set(schema.names)
    rows = []
    for index, record in enumerate(records):
        unknown = set(record) - names
        if unknown:
            raise LakeSchemaError(f"{table} row {index}: unknown columns {sorted(unknown)}")
        rows.append(record)
    try:
        result = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise LakeSchemaError(f"{table}: rows do not fit the schema: {exc}") from exc
    return conform(table, result)


# --------------------------------------------------------------------------- intervals


def version_ticks(value: Any, field: str) -> int:
    """An alert version's lastUpdateTime as exact ticks (the join key of listing and results)."""
    try:
        return timestamps.parse_timestamp(value, assume_utc=True)
    except ValueError as exc:
        raise LakeSchemaError(f"{field}: {exc}") from None


def interval_tables(
    alerts: Iterable[Mapping[str, Any]],
    ip_results: Iterable[Mapping[str, Any]],
    *,
    tenant_id: str,
    interval_start: datetime,
    listed_at: datetime | str,
    found_by_lookback_at: datetime | str | None = None,
) -> dict[str, pa.Table]:
    """Both lake tables of one interval from its listing and the IP results of every alert.

    ``found_by_lookback_at``: set on every row when a look-back listed these versions
    (its listing time); None for the hour's own run.

    Every listed alert needs exactly one IP result (matched on alert id and
    lastUpdateTime) and every result needs its listed alert: a missing batch is an
    error here, not a hole in the lake.
    """
    if not isinstance(tenant_id, str) or not tenant_id:
        raise LakeSchemaError("tenant_id is required")
    # The join key is the version exactly as listed: (id, lastUpdateTime in 100 ns ticks).
    results: dict[tuple[str, int], Mapping[str, Any]] = {}
    for result in ip_results:
        key = (result.get("alert_id"), version_ticks(result.get("last_update_time"), "ip result last_update_time"))
        if key in results:
            raise LakeSchemaError(f"two IP results for alert {key[0]} at {format_timestamp(key[1])}")
        results[key] = result
    alert_rows, ip_rows = [], []
    for alert in alerts:
        key = (alert.get("id"), version_ticks(alert.get("lastUpdateTime"), "lastUpdateTime"))
        result = results.pop(key, None)
        if result is None:
            raise LakeSchemaError(f"no IP result for listed alert {key[0]} at {format_timestamp(key[1])}")
        status = result.get("status")
        pairs = result.get("ips") or []
        if status != IPS_OK and pairs:
            raise LakeSchemaError(f"alert {key[0]}: status {status!r} with {len(pairs)} IPs")
        row = alert_record(
            alert,
            tenant_id=tenant_id,
            interval_start=interval_start,
            listed_at=listed_at,
            ips_status=status,
            ip_count=0,
            invalid_ip_values=result.get("invalid_ip_values") or [],
            fetched_at=result.get("fetched_at"),
            ips_error=result.get("error") if status == IPS_ERROR else None,
            found_by_lookback_at=found_by_lookback_at,
        )
        ips = alert_ip_records(row, pairs, fetched_at=result.get("fetched_at"))
        row["ip_count"] = len(ips)
        alert_rows.append(row)
        ip_rows.extend(ips)
    if results:
        orphans = ", ".join(f"{alert_id} at {format_timestamp(ticks)}" for alert_id, ticks in list(results)[:5])
        raise LakeSchemaError(f"{len(results)} IP results without a listed alert: {orphans}")
    return {ALERTS: to_table(ALERTS, alert_rows), ALERT_IPS: to_table(ALERT_IPS, ip_rows)}


def check_interval(tables: Mapping[str, pa.Table], interval_start: datetime, interval: timedelta) -> None:
    """Refuse tables that do not make one consistent interval ``[start, start + interval)``.

    Vectorised (the benchmark writes months of data through here). Checks: both tables
    present; every row's ``interval_start`` is this interval and its alert version falls
    inside it (a file owns exactly its interval, so a rerun replaces exactly it); no
    duplicate rows; ``alerts.ip_count`` equals the ``alert_ips`` rows of that version and
    no IP row lacks its alert.
    """
    if set(tables) != set(SCHEMAS):
        raise LakeSchemaError(f"an interval is committed with all tables {sorted(SCHEMAS)}, got {sorted(tables)}")
    end = interval_start + interval
    for table, time_column in ((ALERTS, "last_update_time"), (ALERT_IPS, "alert_last_update_time")):
        data = tables[table]
        if data.num_rows == 0:
            continue
        starts = pc.unique(data.column("interval_start"))
        if len(starts) != 1 or starts[0].as_py() != interval_start:
            raise LakeSchemaError(f"{table}: rows with interval_start {starts.to_pylist()[:3]} in the interval {interval_start}")
        times = data.column(time_column)
        low, high = pc.min(times).as_py(), pc.max(times).as_py()
        if low < interval_start or high >= end:
            raise LakeSchemaError(f"{table}: {time_column} from {low} to {high} is outside [{interval_start}, {end})")
        keys = list(ROW_KEYS[table])
        if data.group_by(keys).aggregate([]).num_rows != data.num_rows:
            raise LakeSchemaError(f"{table}: duplicate rows for key {keys}")

    alerts, alert_ips = tables[ALERTS], tables[ALERT_IPS]
    ip_counts = (
        alert_ips.group_by(["tenant_id", "alert_id", "alert_last_update_time"])
        .aggregate([("ip", "count")])
        .rename_columns(["tenant_id", "alert_id", "last_update_time", "ip_rows"])
    )
    declared = alerts.select(["tenant_id", "alert_id", "last_update_time", "ip_count"])
    joined = declared.join(ip_counts, keys=["tenant_id", "alert_id", "last_update_time"], join_type="full outer")
    orphan = pc.is_null(joined.column("ip_count"))
    if pc.any(orphan).as_py():
        sample = joined.filter(orphan).column("alert_id").to_pylist()[:5]
        raise LakeSchemaError(f"alert_ips rows without their alert version in alerts: {sample}")
    ip_rows = pc.fill_null(joined.column("ip_rows"), 0)
    mismatch = pc.not_equal(pc.cast(joined.column("ip_count"), pa.int64()), ip_rows)
    if pc.any(mismatch).as_py():
        sample = joined.filter(mismatch).column("alert_id").to_pylist()[:5]
        raise LakeSchemaError(f"alerts.ip_count differs from the alert_ips rows for alerts {sample}")
    statuses = pc.unique(alerts.column("ips_status")).to_pylist()
    unknown = [s for s in statuses if s not in IPS_STATUSES]
    if unknown:
        raise LakeSchemaError(f"alerts.ips_status values {unknown} are not in {IPS_STATUSES}")


def recorded_problems(alerts: pa.Table) -> dict[str, int]:
    """How many alerts of a table landed with ``ips_status`` 'error' or with field problems."""
    return {
        "ips_errors": pc.sum(pc.equal(alerts.column("ips_status"), IPS_ERROR)).as_py() or 0,
        "alerts_with_field_problems": alerts.num_rows - alerts.column("field_problems").null_count,
    }
