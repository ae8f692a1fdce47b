"""The lake's tables: names, explicit Arrow schemas, dictionary columns, row keys.

Every file of a table carries exactly the schema below, whatever the rows (an empty
interval too), so DuckDB, Spark, Trino and Synapse all see one schema and never infer
one from the data. Timestamps are ``timestamp[us, tz=UTC]``: the service sends 7
fractional digits (100 ns), parsed once by :mod:`mde_pipeline.common.timestamps`; the
7th is truncated, as no SQL engine here keeps it. The conversion of API records into
rows is :mod:`.records`.

``alert_ips.ip_scope`` (:mod:`mde_pipeline.common.ip_scope`) is set when the rows are
built, and :func:`conform` computes it from ``ip`` wherever a row lacks it (a file from
before the column), so every file the lake writes carries it on every row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mde_pipeline.common.ip_scope import ip_scope
from mde_pipeline.common.timestamps import to_utc_datetime

TIMESTAMP = pa.timestamp("us", tz="UTC")

ALERTS = "alerts"
ALERT_IPS = "alert_ips"
FOUND_BY_LOOKBACK_AT = "found_by_lookback_at"
IP_SCOPE = "ip_scope"

COMMENT_TYPE = pa.struct(
    [
        pa.field("comment", pa.string()),
        pa.field("created_by", pa.string()),
        pa.field("created_time", TIMESTAMP),
    ]
)


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


ALERT_IPS_SCHEMA = pa.schema(
    [
        _required("tenant_id", pa.string()),
        _required("alert_id", pa.string()),
        _required("ip", pa.string()),
        _required("ip_version", pa.int8()),
        _required("alert_last_update_time", TIMESTAMP),
        _optional("alert_creation_time", TIMESTAMP),
        _optional("severity", pa.string()),
        _optional("incident_id", pa.int64()),
        _optional("machine_id", pa.string()),
        _required("interval_start", TIMESTAMP),
        _required("fetched_at", TIMESTAMP),
        # Added later (see ADDED_COLUMNS): the alert version's, as in alerts.
        _optional(FOUND_BY_LOOKBACK_AT, TIMESTAMP),
        # global | private | loopback | link_local | shared | multicast | documentation |
        # reserved (common/ip_scope.py); null only in files from before the column.
        _optional(IP_SCOPE, pa.string()),
    ]
)

ALERTS_SCHEMA = pa.schema(
    [
        _required("tenant_id", pa.string()),
        _required("alert_id", pa.string()),
        _optional("incident_id", pa.int64()),
        _optional("investigation_id", pa.int64()),
        _optional("title", pa.string()),
        _optional("description", pa.string()),
        _optional("severity", pa.string()),
        _optional("status", pa.string()),
        _optional("category", pa.string()),
        _optional("detection_source", pa.string()),
        _optional("threat_family_name", pa.string()),
        _optional("threat_name", pa.string()),
        _optional("classification", pa.string()),
        _optional("determination", pa.string()),
        _optional("machine_id", pa.string()),
        _optional("computer_dns_name", pa.string()),
        _optional("rbac_group_name", pa.string()),
        _optional("aad_tenant_id", pa.string()),
        _optional("mitre_techniques", pa.list_(pa.string())),
        _optional("alert_creation_time", TIMESTAMP),
        _optional("first_event_time", TIMESTAMP),
        _optional("last_event_time", TIMESTAMP),
        _required("last_update_time", TIMESTAMP),
        _optional("resolved_time", TIMESTAMP),
        _optional("assigned_to", pa.string()),
        _optional("related_user_name", pa.string()),
        _optional("related_user_domain", pa.string()),
        _optional("comments", pa.list_(COMMENT_TYPE)),
        _required("ips_status", pa.string()),
        _required("ip_count", pa.int32()),
        _optional("invalid_ip_values", pa.list_(pa.string())),
        _required("interval_start", TIMESTAMP),
        _required("listed_at", TIMESTAMP),
        _optional("fetched_at", TIMESTAMP),
        # Added later (files written before read them as null; see ADDED_COLUMNS):
        _optional("ips_error", pa.string()),  # why ips_status is 'error'
        _optional("field_problems", pa.list_(pa.string())),  # fields that did not fit: null in their column
        _optional("raw", pa.string()),  # the alert as listed, JSON: every field, also new ones
        # When a look-back first brought this version into the lake (its listing time);
        # null when a run of the version's own hour listed it (lake/versions.py).
        _optional(FOUND_BY_LOOKBACK_AT, TIMESTAMP),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {ALERTS: ALERTS_SCHEMA, ALERT_IPS: ALERT_IPS_SCHEMA}

# Optional columns appended after files were already written: a file without them is
# read with nulls there (compaction and the IP index rewrite such files in full schema).
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    ALERTS: ("ips_error", "field_problems", "raw", FOUND_BY_LOOKBACK_AT),
    ALERT_IPS: (FOUND_BY_LOOKBACK_AT, IP_SCOPE),
}

# Low-cardinality string columns: dictionary encoding makes them small and fast to filter.
DICTIONARY_COLUMNS: dict[str, tuple[str, ...]] = {
    ALERTS: (
        "tenant_id",
        "severity",
        "status",
        "category",
        "detection_source",
        "threat_family_name",
        "classification",
        "determination",
        "rbac_group_name",
        "aad_tenant_id",
        "ips_status",
    ),
    ALERT_IPS: ("tenant_id", "severity", IP_SCOPE),
}

# Columns that identify one row; a table never holds two rows with the same key.
ROW_KEYS: dict[str, tuple[str, ...]] = {
    ALERTS: ("tenant_id", "alert_id", "last_update_time"),
    ALERT_IPS: ("tenant_id", "alert_id", "alert_last_update_time", "ip"),
}


class LakeSchemaError(ValueError):
    """Data that does not fit the lake's schema or would make an interval inconsistent."""


def parse_timestamp(value: Any, *, field: str = "timestamp") -> datetime | None:
    """A UTC ``datetime`` (microseconds) from the service's text or an aware datetime.

    :func:`mde_pipeline.common.timestamps.to_utc_datetime` with the field named in the
    error: ``2020-01-26T20:33:57.7220239Z`` -> ``...57.722023`` (the 7th digit truncated,
    never rounded, so a time never moves into the next interval); more than 7 fractional
    digits is an error. Text without an offset is UTC (the service only sends UTC); a
    naive ``datetime`` is refused because in Python it usually means local time by
    mistake. ``None`` stays ``None``.
    """
    if value is None:
        return None
    if not isinstance(value, (str, datetime)):
        raise LakeSchemaError(f"{field}: expected an ISO 8601 string or datetime, got {type(value).__name__}")
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise LakeSchemaError(f"{field}: naive datetime {value!r}; pass a timezone-aware one")
    try:
        return to_utc_datetime(value)
    except ValueError as exc:
        raise LakeSchemaError(f"{field}: {exc}") from None


def empty_table(table: str) -> pa.Table:
    """A table with no rows and the full schema: what an empty interval's file holds."""
    return table_schema(table).empty_table()


def conform(table: str, data: pa.Table) -> pa.Table:
    """``data`` checked against the lake schema of ``table`` (names, order, types, nulls).

    A file written before a column of :data:`ADDED_COLUMNS` existed gets it, as nulls;
    except ``alert_ips.ip_scope``, a function of ``ip``: computed where it is null, so
    whatever rewrites old rows (a commit into their hour, compaction, the IP index)
    writes them with it.

    Returns it with the schema's exact field flags and no metadata (no pandas metadata
    sneaks into the files).
    """
    schema = table_schema(table)
    for name in ADDED_COLUMNS[table]:
        if name not in data.schema.names and data.schema.names == schema.names[: data.num_columns]:
            data = data.append_column(schema.field(name), pa.nulls(data.num_rows, schema.field(name).type))
    if data.schema.names != schema.names:
        missing = [n for n in schema.names if n not in data.schema.names]
        extra = [n for n in data.schema.names if n not in schema.names]
        raise LakeSchemaError(
            f"{table}: columns differ from the lake schema (missing {missing}, unexpected {extra}, "
            f"or a different order)"
        )
    wrong = [
        f"{field.name}: {data.schema.field(field.name).type} (expected {field.type})"
        for field in schema
        if not data.schema.field(field.name).type.equals(field.type)
    ]
    if wrong:
        raise LakeSchemaError(f"{table}: column types differ from the lake schema: {'; '.join(wrong)}")
    if table == ALERT_IPS and data.column(IP_SCOPE).null_count:
        data = _with_ip_scope(data)
    nulls = [field.name for field in schema if not field.nullable and data.column(field.name).null_count]
    if nulls:
        raise LakeSchemaError(f"{table}: nulls in required columns {nulls}")
    return pa.Table.from_arrays(data.columns, schema=schema)


def _with_ip_scope(data: pa.Table) -> pa.Table:
    """``data`` with ``ip_scope`` computed from ``ip`` where it is null (once per distinct IP)."""
    ips = data.column("ip")
    distinct = pc.unique(ips)
    try:
        scopes = pa.array([None if ip is None else ip_scope(ip) for ip in distinct.to_pylist()], pa.string())
    except ValueError as exc:
        raise LakeSchemaError(f"{ALERT_IPS}: ip: {exc}") from None
    computed = pc.take(scopes, pc.index_in(ips, value_set=distinct))
    index = data.schema.get_field_index(IP_SCOPE)
    return data.set_column(index, data.schema.field(index), pc.coalesce(data.column(index), computed))


def table_schema(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise LakeSchemaError(f"unknown lake table {table!r}; known: {sorted(SCHEMAS)}") from None
