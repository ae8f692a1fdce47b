"""The alert versions the lake holds, per committed hour, and how new versions merge in.

An alert version is (alert_id, lastUpdateTime); the lake stores lastUpdateTime in
microseconds, so versions are compared at that precision (with the tenant). An hour is
*committed* when its ``alerts`` file exists (or its key is in its compacted day's
manifest), empty or not; an hour never committed belongs to backfills.

* :func:`committed_versions` reads only the key columns (and ``ips_status``) of the
  ``alerts`` hour files and compacted day files of a window; a version held with
  ``ips_status = 'error'`` is not counted (a later look-back tries it again).
* :func:`missing_versions` picks the listed alerts whose version a committed hour lacks.
* :func:`merge_versions` is what every ``commit.commit_interval`` writes: the new rows,
  plus (``keep_versions``) every row the lake held for versions the new rows do not
  carry. A version the lake holds is never dropped; a version present on both sides
  keeps one copy: the new one, unless the new answer is worse than the held one (an
  ``error`` over any answer, ``not_found`` over IPs: never a downgrade, ``refetch``
  included).

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

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mde_pipeline.common.fetch_result import IPS_EMPTY, IPS_ERROR, IPS_NOT_FOUND, IPS_OK
from mde_pipeline.common.timestamps import parse_timestamp, ticks_to_datetime, TICKS_PER_MICROSECOND
from mde_pipeline.lake.layout import interval_key, list_day, parse_interval_key
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, FOUND_BY_LOOKBACK_AT, SCHEMAS, conform

Version = tuple[str, int]  # (alert_id, lastUpdateTime in microseconds since the epoch)
VERSION_COLUMNS = {ALERTS: "last_update_time", ALERT_IPS: "alert_last_update_time"}
_KEY_COLUMNS = ["alert_id", "last_update_time", "interval_start", "ips_status", "ip_count"]
_IP_KEY_COLUMNS = ["alert_id", "alert_last_update_time", "interval_start"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

log = logging.getLogger(__name__)


def _read_columns(location: LakeLocation, path: str, columns: list[str]) -> pa.Table:
    if location.is_local:
        with open(path, "rb") as handle:
            return pq.read_table(handle, columns=columns)
    return pq.read_table(pa.BufferReader(location.fs.cat_file(path)), columns=columns)


def _hour_of_micros(micros: int) -> datetime:
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.replace(minute=0, second=0, microsecond=0)


def committed_versions(location: LakeLocation, start: datetime, end: datetime) -> dict[datetime, set[Version]]:
    """``hour -> versions`` of every committed hour in ``[start, end)`` (whole hours).

    A version counts as held only when it is complete: its ``ips_status`` is a final
    answer and its ``ip_count`` equals the ``alert_ips`` rows the lake holds for it. An
    ``error`` row, or a version whose IPs are missing (a lake written before commit
    records, or changed by hand), is missing: the look-back fetches it again and its new
    rows replace the old ones in both tables.
    """
    wanted = set()
    hour = start
    while hour < end:
        wanted.add(interval_key(hour))
        hour += timedelta(hours=1)
    days = sorted({key[:4] + "-" + key[4:6] + "-" + key[6:8] for key in wanted})
    result: dict[datetime, set[Version]] = {}
    for day in days:
        alerts, hours = _key_parts(location, ALERTS, day, wanted, _KEY_COLUMNS)
        for key in hours:
            result[parse_interval_key(key)] = set()
        if not alerts:
            continue
        ips = [p.select(["alert_id", "alert_last_update_time"]) for p in _key_parts(location, ALERT_IPS, day, wanted, _IP_KEY_COLUMNS)[0]]
        ip_rows = _ip_rows(pa.concat_tables(ips)) if ips else {}
        for part in alerts:
            complete = pc.not_equal(part.column("ips_status"), IPS_ERROR).to_pylist()
            ids = part.column("alert_id").to_pylist()
            times = pc.cast(part.column("last_update_time"), pa.int64()).to_pylist()
            hours_of_rows = pc.cast(part.column("interval_start"), pa.int64()).to_pylist()
            counts = part.column("ip_count").to_pylist()
            for alert_id, micros, hour_micros, final, count in zip(ids, times, hours_of_rows, complete, counts):
                bucket = result.get(_hour_of_micros(hour_micros))
                if bucket is not None and final and count == ip_rows.get((alert_id, micros), 0):
                    bucket.add((alert_id, micros))
    return result


def _ip_rows(ips: pa.Table) -> dict[Version, int]:
    """``alert_ips`` rows per version (group_by: no Python loop over the rows)."""
    if ips.num_rows == 0:
        return {}
    counts = ips.group_by(["alert_id", "alert_last_update_time"]).aggregate([([], "count_all")])
    times = pc.cast(counts.column("alert_last_update_time"), pa.int64()).to_pylist()
    return dict(zip(zip(counts.column("alert_id").to_pylist(), times), counts.column("count_all").to_pylist()))


def _key_parts(location: LakeLocation, table: str, day: str, wanted: set[str], columns: list[str]) -> tuple[list[pa.Table], set[str]]:
    """Key columns of ``table``'s committed hours of ``day`` among ``wanted``, and those hours."""
    files = list_day(location, table, day)
    parts, hours = [], set()
    if files.is_compacted:
        keys = (set((files.manifest or {}).get("intervals", {})) - set(files.interval_files)) & wanted
        hours |= keys
        if keys:
            # Rows of an interval that also has an hourly file (which wins) are left out.
            shadowed = pa.array(sorted(files.interval_files), pa.string())
            for path in files.compacted_files:
                part = _read_columns(location, path, columns)
                hour_keys = pc.strftime(part.column("interval_start"), format="%Y%m%dT%H", locale="C")
                parts.append(part.filter(pc.invert(pc.is_in(hour_keys, value_set=shadowed))))
    for key, path in files.interval_files.items():
        if key in wanted:
            hours.add(key)
            parts.append(_read_columns(location, path, columns))
    return parts, hours


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


# How good an answer a version holds: a new row never replaces a held one of a higher
# rank. ``error`` (the fetch failed) never replaces an answer; ``not_found`` (the service
# no longer has the alert, e.g. past retention) and ``empty`` never replace the IPs it
# answered before for the same version (a version's IPs do not change; losing them would).
ANSWER_RANK = {IPS_OK: 3, IPS_EMPTY: 2, IPS_NOT_FOUND: 1, IPS_ERROR: 0}
LOST_IPS_ERROR = "IPs lost: ip_count {count} but {rows} alert_ips rows held (an interrupted write); fetched again by the look-back"


def merge_versions(
    existing: Mapping[str, pa.Table | None], new: Mapping[str, pa.Table], *, keep_other_versions: bool = True
) -> dict[str, pa.Table]:
    """What an hour holds after a commit of ``new`` over ``existing``.

    * ``new`` replaces the held rows of each version it carries (both tables), unless
      its answer ranks below the held one (ANSWER_RANK: never a downgrade, also with
      ``keep_other_versions=False``, a ``refetch``): then the held rows of that version stay.
    * ``keep_other_versions``: the held versions ``new`` does not carry stay too.
    * A held version keeps its ``found_by_lookback_at`` (see the module's docstring).
    * The held rows are first made consistent (:func:`heal_held`), so a merge over a lake
      that holds a half-written hour gives a consistent hour.
    """
    # Files written before a column was added read with nulls there (schema.ADDED_COLUMNS).
    held = heal_held({name: None if data is None else conform(name, data) for name, data in existing.items()})
    held_alerts = held.get(ALERTS)
    new_keys = _version_keys(ALERTS, new[ALERTS])
    protected = pa.array([], pa.string())
    if held_alerts is not None and held_alerts.num_rows and new[ALERTS].num_rows:
        index = pc.index_in(new_keys, value_set=_version_keys(ALERTS, held_alerts).combine_chunks())
        held_rank = _ranks(held_alerts).take(index)
        worse = pc.fill_null(pc.less(_ranks(new[ALERTS]), held_rank), False)
        protected = new_keys.filter(worse).unique()
    replaced = new_keys.filter(pc.invert(pc.is_in(new_keys, value_set=protected))).unique()
    merged = {}
    for name in SCHEMAS:
        fresh = new[name].filter(pc.invert(pc.is_in(_version_keys(name, new[name]), value_set=protected)))
        if keep_other_versions:  # a refetch replaces the hour: its rows carry no held fact
            fresh = _held_found_at(held_alerts, name, fresh)
        rows = held.get(name)
        if rows is None or rows.num_rows == 0:
            merged[name] = fresh
            continue
        keys = _version_keys(name, rows)
        stay = pc.invert(pc.is_in(keys, value_set=replaced)) if keep_other_versions else pc.is_in(keys, value_set=protected)
        kept = rows.filter(stay)
        merged[name] = pa.concat_tables([kept, fresh]) if kept.num_rows else fresh
    return merged


def _ranks(alerts: pa.Table) -> pa.Array:
    statuses = alerts.column("ips_status").combine_chunks()
    ranks = pa.array([ANSWER_RANK[s] for s in statuses.to_pylist()], pa.int8())
    return ranks


def heal_held(held: Mapping[str, pa.Table | None]) -> dict[str, pa.Table | None]:
    """The held rows of an hour made consistent: ``alert_ips`` rows of a version the
    ``alerts`` rows lack are dropped; a version whose ``alert_ips`` rows disagree with its
    ``ip_count`` (IPs lost) becomes ``ips_status = 'error'`` with no IP rows, so it is
    recorded as what it is and the next look-back fetches it again. A consistent hour
    (every hour written through commit records) comes back unchanged."""
    alerts, ips = held.get(ALERTS), held.get(ALERT_IPS)
    if alerts is None and ips is None:
        return dict(held)
    # One table without the other (a lake written before commit records): its missing
    # side holds nothing.
    alerts = SCHEMAS[ALERTS].empty_table() if alerts is None else alerts
    ips = SCHEMAS[ALERT_IPS].empty_table() if ips is None else ips
    held = {**held, ALERTS: alerts, ALERT_IPS: ips}
    alert_keys = _version_keys(ALERTS, alerts)
    ip_keys = _version_keys(ALERT_IPS, ips)
    counts = pc.value_counts(ip_keys) if ips.num_rows else None
    rows_of = {} if counts is None else dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
    declared = alerts.column("ip_count").to_pylist()
    lost = [i for i, (key, count) in enumerate(zip(alert_keys.to_pylist(), declared)) if rows_of.get(key, 0) != (count or 0)]
    orphan = pc.invert(pc.is_in(ip_keys, value_set=alert_keys))
    if not lost and not pc.any(orphan).as_py():
        return dict(held)
    lost_keys = pa.array([alert_keys[i].as_py() for i in lost], pa.string())
    log.warning("an hour held %d versions with lost IPs and %d orphan IP rows; they are recorded as 'error' and fetched again",
                len(lost), pc.sum(orphan).as_py() or 0)  # fmt: skip
    ips = ips.filter(pc.invert(pc.or_(orphan, pc.is_in(ip_keys, value_set=lost_keys))))
    status = alerts.column("ips_status").to_pylist()
    errors = alerts.column("ips_error").to_pylist()
    for i in lost:
        errors[i] = LOST_IPS_ERROR.format(count=declared[i], rows=rows_of.get(alert_keys[i].as_py(), 0))
        status[i], declared[i] = IPS_ERROR, 0
    for column, values in (("ips_status", status), ("ips_error", errors), ("ip_count", declared)):
        index = alerts.schema.get_field_index(column)
        field = alerts.schema.field(index)
        alerts = alerts.set_column(index, field, pa.array(values, field.type))
    return {**held, ALERTS: alerts, ALERT_IPS: ips}
