"""Lake figures for the operator's view: latest hour, missing hours, rows per day.

No full scan per request: each request lists the table's ``date=`` directories and each
day's files (names, sizes, mtimes), and a day's figures are recomputed only when that
listing changed. Recomputing reads Parquet footers only (row counts are in the
metadata) and, for a compacted day, its ``_compaction.json`` manifest, which already
holds every interval's row count. Staged listings (``_staging/<hour>/<run>/listing.json``,
what a running hour's fetches will call for) are parsed once per (path, size, mtime).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow.parquet as pq

from mde_pipeline.lake.commit_log import recorded_hours
from mde_pipeline.lake.layout import (
    INTERVAL,
    STAGING_DIR,
    base_name,
    day_directory,
    list_day,
    interval_key,
    parse_interval_key,
    table_days,
)
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS

RETENTION_DAYS = 180  # the service keeps alerts this long: the window a backfill can cover
MAX_MISSING_RANGES = 50
RECENT_HOURS_FOR_ESTIMATE = 24
KEY_FORMAT = "%Y%m%dT%H"  # interval keys sort as their hours do


@dataclass(frozen=True)
class DayFigures:
    intervals: dict[str, int]  # interval key -> rows


def _signature(location: LakeLocation, table: str, day: str) -> tuple | None:
    """(name, size, mtime) of every entry of a day's directory; None when it is gone."""
    path = location.path(day_directory(table, day))
    try:
        if location.is_local:  # os.scandir: fsspec's local ls costs ~1 ms a directory
            with os.scandir(path) as entries:
                return tuple(sorted((e.name, *_stat(e)) for e in entries))
        entries = location.fs.ls(path, detail=True)
    except FileNotFoundError:
        return None
    return tuple(
        sorted((base_name(e["name"]), e.get("size"), str(e.get("mtime", e.get("last_modified")))) for e in entries)
    )


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    try:
        info = entry.stat()
    except FileNotFoundError:  # replaced between the listing and the stat
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


def _footer_rows(location: LakeLocation, path: str) -> int:
    with location.fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _day_figures(location: LakeLocation, table: str, day: str) -> DayFigures:
    files = list_day(location, table, day)
    intervals: dict[str, int] = {}
    if files.is_compacted and files.manifest is not None:
        intervals.update({str(k): int(v) for k, v in (files.manifest.get("intervals") or {}).items()})
    for key, path in files.interval_files.items():  # an hourly file replaces its interval
        intervals[key] = _footer_rows(location, path)
    return DayFigures(dict(sorted(intervals.items())))


class LakeStatusCache:
    """Per-day figures of each table, recomputed only when a day's listing changed."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, str, str], tuple[tuple, DayFigures]] = {}
        self._listings: dict[str, tuple[tuple, int]] = {}
        self._lock = threading.Lock()

    def table_figures(self, location: LakeLocation, table: str) -> dict[str, DayFigures]:
        location.fs.invalidate_cache()
        result = {}
        for day in table_days(location, table):
            signature = _signature(location, table, day)
            if signature is None:
                continue
            cache_key = (location.root, location.tenant_id, table, day)  # tenants share day names
            with self._lock:
                cached = self._days.get(cache_key)
            if cached is None or cached[0] != signature:
                cached = (signature, _day_figures(location, table, day))
                with self._lock:
                    self._days[cache_key] = cached
            result[day] = cached[1]
        return result

    def staged_listings(self, location: LakeLocation) -> dict[str, int]:
        """Interval key -> alerts in the newest staged listing of that hour (runs in flight)."""
        fs = location.fs
        counts: dict[str, tuple[float, int]] = {}
        try:
            paths = fs.glob(location.path(STAGING_DIR, "*", "*", "listing.json"))
        except FileNotFoundError:
            return {}
        for path in paths:
            key = path.rstrip("/").split("/")[-3]
            try:
                parse_interval_key(key)
                info = fs.info(path)
            except (ValueError, FileNotFoundError):
                continue
            signature = (info.get("size"), str(info.get("mtime", info.get("last_modified"))))
            with self._lock:
                cached = self._listings.get(path)
            if cached is None or cached[0] != signature:
                try:
                    document = json.loads(fs.cat_file(path))
                except (FileNotFoundError, ValueError):
                    continue
                cached = (signature, len(document.get("alerts") or ()))
                with self._lock:
                    self._listings[path] = cached
            mtime = float(info.get("mtime") or 0.0) if isinstance(info.get("mtime"), (int, float)) else 0.0
            if key not in counts or mtime >= counts[key][0]:
                counts[key] = (mtime, cached[1])
        return {key: value[1] for key, value in sorted(counts.items())}


def _ranges(missing: list[datetime]) -> list[list[str]]:
    """Consecutive missing hours as ``[first start, end)`` pairs, oldest first."""
    ranges: list[list[datetime]] = []
    for start in missing:
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = start + INTERVAL
        else:
            ranges.append([start, start + INTERVAL])
    return [[a.isoformat(), b.isoformat()] for a, b in ranges]


def lake_status(
    location: LakeLocation,
    cache: LakeStatusCache,
    now: datetime,
    *,
    retention_days: int = RETENTION_DAYS,
    lake_retention_days: int | None = None,
) -> dict[str, Any]:
    """The lake section of the status JSON (docs/OPERATORS.md). ``lake_retention_days``:
    the lake's own retention setting (lake.retention; None: it keeps everything), shown
    beside the oldest day it holds."""
    now = now.astimezone(timezone.utc)
    alerts = cache.table_figures(location, ALERTS)
    ips = cache.table_figures(location, ALERT_IPS)
    committed = {key: rows for figures in alerts.values() for key, rows in figures.intervals.items()}
    # An hour whose commit record is not cleared may have its two tables apart: pending,
    # never committed, until the next writer finishes it (lake.commit_log).
    pending = sorted(interval_key(hour) for _, hour in recorded_hours(location))
    for key in pending:
        committed.pop(key, None)
    last_complete = now.replace(minute=0, second=0, microsecond=0) - INTERVAL
    first = last_complete - timedelta(days=retention_days) + INTERVAL  # retention_days x 24 hours
    missing = []
    hour = first
    while hour <= last_complete:
        key = hour.strftime(KEY_FORMAT)  # the key of layout.interval_key, unchecked
        if key not in committed and key not in pending:  # a pending hour is reported as such
            missing.append(hour)
        hour += INTERVAL
    ranges = _ranges(missing)
    first_key, last_key = first.strftime(KEY_FORMAT), last_complete.strftime(KEY_FORMAT)
    latest = max(committed) if committed else None
    # A tenant loaded for three hours is not 4,317 hours behind: its holes count from the
    # first hour it ever loaded (the window's first hour when that one is older).
    first_loaded = parse_interval_key(min(committed)) if committed else None
    since = max(first_loaded, first) if first_loaded else None
    since_key = since.strftime(KEY_FORMAT) if since else None
    recent = [committed[k] for k in sorted(committed)[-RECENT_HOURS_FOR_ESTIMATE:]]
    days = sorted(set(alerts) | set(ips))
    return {
        "root": location.url,
        "latest_committed_hour": parse_interval_key(latest).isoformat() if latest else None,
        "lag_hours": round((now - parse_interval_key(latest) - INTERVAL).total_seconds() / 3600, 2) if latest else None,
        "retention_window": {"first_hour": first.isoformat(), "last_complete_hour": last_complete.isoformat()},
        "hours_committed": sum(1 for k in committed if first_key <= k <= last_key),
        "hours_missing": len(missing),
        "hours_pending_commit": [parse_interval_key(k).isoformat() for k in pending],
        "missing_ranges": ranges[-MAX_MISSING_RANGES:],
        "missing_ranges_total": len(ranges),
        "since_first_loaded": {
            "first_loaded_hour": first_loaded.isoformat() if first_loaded else None,
            "counted_from": since.isoformat() if since else None,
            "hours_committed": sum(1 for k in committed if since_key and since_key <= k <= last_key),
            "hours_missing": sum(1 for hour in missing if since and hour >= since),
            "missing_ranges_total": sum(1 for start, _ in ranges if since and start >= since.isoformat()),
        },
        "alerts_per_hour_recent": round(sum(recent) / len(recent), 2) if recent else None,
        "rows_per_day": [
            {
                "date": day,
                "hours": len(alerts[day].intervals) if day in alerts else 0,
                "alerts": sum(alerts[day].intervals.values()) if day in alerts else 0,
                "alert_ips": sum(ips[day].intervals.values()) if day in ips else 0,
            }
            for day in days
        ],
        "oldest_day_kept": days[0] if days else None,
        "lake_retention_days": lake_retention_days,
        "late_alerts": None,  # filled in once the look-backs of the late-alerts issue exist
    }

