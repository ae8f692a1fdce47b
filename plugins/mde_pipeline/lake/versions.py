"""The alert versions the lake holds, per committed hour, and how new versions merge in.

An alert version is (alert_id, lastUpdateTime); the lake stores lastUpdateTime in
microseconds, so versions are compared at that precision (with the tenant). An hour is
*committed* when its ``alerts`` file exists (or its key is in its compacted day's
manifest), empty or not; an hour never committed belongs to backfills.

* :func:`committed_versions` reads only the key columns (and ``ips_status``) of the
  ``alerts`` hour files and compacted day files of a window; a version held with
  ``ips_status = 'error'`` is not counted (a later look-back tries it again).
* :func:`missing_versions` picks the listed alerts whose version a committed hour lacks.
* :func:`merge_versions` is what ``commit.commit_interval(keep_versions=True)`` writes: the
  new rows, plus every row the lake held for versions the new rows do not carry. A
  version the lake holds is never dropped; a version present on both sides keeps one
  copy (the new one).

``found_by_lookback_at`` records how a version first entered the lake: the listing time
of the look-back that added it, or null when a run of its own hour listed it. It is a
fact about the version's arrival, so a merge keeps the held value of every version the
lake already holds: a rerun whose own listing now carries a version a look-back had
found keeps that time (the earliest: the fact that it came late is not lost), and a
look-back that fetches again a version held with ``ips_status = 'error'`` leaves it null
(the version was listed on time; ``fetched_at`` says when its IPs came). Both tables
take the value from the held ``alerts`` rows, so they always agree. A ``refetch`` run
replaces the hour whole (no merge): its rows are null there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mde_pipeline.common.fetch_result import IPS_ERROR
from mde_pipeline.common.timestamps import parse_timestamp, ticks_to_datetime, TICKS_PER_MICROSECOND
from mde_pipeline.lake.layout import interval_key, list_day, parse_interval_key
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, FOUND_BY_LOOKBACK_AT, SCHEMAS, conform

Version = tuple[str, int]  # (alert_id, lastUpdateTime in microseconds since the epoch)
VERSION_COLUMNS = {ALERTS: "last_update_time", ALERT_IPS: "alert_last_update_time"}
_KEY_COLUMNS = ["alert_id", "last_update_time", "interval_start", "ips_status"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _read_columns(location: LakeLocation, path: str, columns: list[str]) -> pa.Table:
    if location.is_local:
        with open(path, "rb") as handle:
            return pq.read_table(handle, columns=columns)
    return pq.read_table(pa.BufferReader(location.fs.cat_file(path)), columns=columns)


def _hour_of_micros(micros: int) -> datetime:
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.replace(minute=0, second=0, microsecond=0)


def committed_versions(location: LakeLocation, start: datetime, end: datetime) -> dict[datetime, set[Version]]:
    """``hour -> versions`` of every committed hour in ``[start, end)`` (whole hours)."""
    wanted = set()
    hour = start
    while hour < end:
        wanted.add(interval_key(hour))
        hour += timedelta(hours=1)
    days = sorted({key[:4] + "-" + key[4:6] + "-" + key[6:8] for key in wanted})
    result: dict[datetime, set[Version]] = {}
    for day in days:
        files = list_day(location, ALERTS, day)
        parts = []
        if files.is_compacted:
            manifest_keys = set((files.manifest or {}).get("intervals", {})) - set(files.interval_files)
            keys = (manifest_keys & wanted)
            for key in keys:
                result[parse_interval_key(key)] = set()
            if keys:
                for path in files.compacted_files:
                    parts.append(_read_columns(location, path, _KEY_COLUMNS))
        for key, path in files.interval_files.items():
            if key in wanted:
                result[parse_interval_key(key)] = set()
                parts.append(_read_columns(location, path, _KEY_COLUMNS))
        for part in parts:
            ids = part.column("alert_id").to_pylist()
            times = pc.cast(part.column("last_update_time"), pa.int64()).to_pylist()
            hours = pc.cast(part.column("interval_start"), pa.int64()).to_pylist()
            statuses = part.column("ips_status").to_pylist()
            for alert_id, micros, hour_micros, status in zip(ids, times, hours, statuses):
                bucket = result.get(_hour_of_micros(hour_micros))
                # A version whose IPs failed for good ('error') counts as missing: the
                # look-back fetches it again and its new row replaces the old one.
                if bucket is not None and status != IPS_ERROR:
                    bucket.add((alert_id, micros))
    return result


def listed_version(alert: Mapping[str, Any]) -> tuple[datetime, Version]:
    """(hour, version) of a listed alert entity."""
    ticks = parse_timestamp(alert["lastUpdateTime"])
    hour = ticks_to_datetime(ticks).replace(minute=0, second=0, microsecond=0)
    return hour, (alert["id"], ticks // TICKS_PER_MICROSECOND)


def missing_versions(
    alerts: Iterable[Mapping[str, Any]], committed: Mapping[datetime, set[Version]]
) -> dict[datetime, list[Mapping[str, Any]]]:
    """The listed alerts whose version a committed hour lacks, by hour (hours not
    committed are left out: they belong to backfills)."""
    missing: dict[datetime, list[Mapping[str, Any]]] = {}
    for alert in alerts:
        hour, version = listed_version(alert)
        held = committed.get(hour)
        if held is not None and version not in held:
            missing.setdefault(hour, []).append(alert)
    return dict(sorted(missing.items()))


def _version_keys(table: str, data: pa.Table) -> pa.Array:
    times = pc.cast(pc.cast(data.column(VERSION_COLUMNS[table]), pa.int64()), pa.string())
    return pc.binary_join_element_wise(data.column("tenant_id"), data.column("alert_id"), times, "\x1f")


def _held_found_at(held_alerts: pa.Table | None, table: str, rows: pa.Table) -> pa.Table:
    """``rows`` with ``found_by_lookback_at`` of every version ``held_alerts`` holds taken
    from there (null included): the value a version got when it first entered the lake."""
    if held_alerts is None or held_alerts.num_rows == 0 or rows.num_rows == 0:
        return rows
    index = pc.index_in(_version_keys(table, rows), value_set=_version_keys(ALERTS, held_alerts).combine_chunks())
    held = held_alerts.column(FOUND_BY_LOOKBACK_AT).combine_chunks().take(index)  # a null index: null
    column = rows.schema.get_field_index(FOUND_BY_LOOKBACK_AT)
    found = pc.if_else(pc.is_valid(index), held, rows.column(column))
    return rows.set_column(column, rows.schema.field(column), found)


def merge_versions(existing: Mapping[str, pa.Table | None], new: Mapping[str, pa.Table]) -> dict[str, pa.Table]:
    """``new`` plus the rows of ``existing`` whose version ``new`` does not carry; a
    version held keeps its ``found_by_lookback_at`` (see the module's docstring)."""
    replaced = _version_keys(ALERTS, new[ALERTS]).unique()
    # Files written before a column was added read with nulls there (schema.ADDED_COLUMNS).
    existing = {name: None if data is None else conform(name, data) for name, data in existing.items()}
    merged = {}
    for name in SCHEMAS:
        held = existing.get(name)
        if held is None or held.num_rows == 0:
            merged[name] = _held_found_at(existing.get(ALERTS), name, new[name])
            continue
        kept = held.filter(pc.invert(pc.is_in(_version_keys(name, held), value_set=replaced)))
        fresh = _held_found_at(existing.get(ALERTS), name, new[name])
        merged[name] = pa.concat_tables([kept, fresh]) if kept.num_rows else fresh
    return merged
