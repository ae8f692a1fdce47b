"""Retention: whole days older than the setting leave the lake, with everything kept about them.

Setting: ``keep_days`` (Airflow Variable ``mde_lake_retention_days``; None = keep
everything, the default). A day ``D`` of a tenant is *expired* when
``D < today - keep_days`` (UTC, ``today`` = the compaction run's data interval end), so
``keep_days`` whole days before today stay. Removing a day removes, in this order, under
the day's lock (the one hourly commits and compaction take):

1. the removal record ``_staging/T/retention/date=D.json`` ("marked"): from here on the
   removal is finished by every later run, whatever the setting says then;
2. the IP index of D's month if it covers D ("index dropped"; the index step that follows
   rebuilds the month without D, so the index never names a removed file);
3. ``alerts`` files of D ("removed alerts"), then ``alert_ips`` files ("removed
   alert_ips"): the reverse of a commit's apply order, so no alert version is ever
   visible without its IPs (a reader may see IPs of D whose alerts are gone, as during a
   commit's apply step, for the length of one removal or until the next run finishes a
   killed one);
4. what staging holds of D ("removed staging"): interrupted compaction swaps, its
   swapped-out directories (``_staging/T/compaction_retired/``), commit records of its
   hours, fetch-cache hours of D in every cache folder;
5. the record ("unmarked"), last.

Never a day being loaded: a day with a staged run of one of its hours (a run that is
listing, fetching or publishing it, a backfill's included, or a failed run that may be
cleared and rerun until the 7-day staging sweep) or with a commit record not yet cleared
(``_commit.json``; a commit staging without one is a leftover and goes with the day)
is kept and the reason logged; a later run removes it. Day lock files (empty) stay.
"""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from mde_pipeline.lake.commit_log import pending_hours, recorded_hours
from mde_pipeline.lake.ip_index import invalidate_covering
from mde_pipeline.lake.layout import (
    DATE_PREFIX,
    FETCH_CACHE_DIR,
    JSON_SUFFIX,
    RETENTION_DIR,
    commit_path,
    compaction_retired_directory,
    compaction_staging_directory,
    day_directory,
    day_of,
    list_names,
    parse_interval_key,
    partition_date,
    table_days,
)
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import check_day_held, day_lock
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS
from mde_pipeline.lake.staging import staged_intervals
from mde_pipeline.lake.storage import write_files_atomic
from mde_pipeline.lake.tenants import check_not_legacy, is_canonical_partition, staged_tenants, tenant_locations

REMOVAL_ORDER = (ALERTS, ALERT_IPS)  # alerts first: no version looks listed without its IPs
STEPS = ["marked", "index dropped", "removed alerts", "removed alert_ips", "removed staging", "unmarked"]
REMOVED, WOULD_REMOVE, KEPT = "removed", "would remove", "kept"

log = logging.getLogger(__name__)


class RetentionSettingError(ValueError):
    """The retention setting is not a whole number of days >= 1."""


def retention_checkpoint(step: str) -> None:
    """Called between the steps of a day's removal: the seam of the crash tests."""
    return None


def parse_keep_days(value: Any, source: str = "mde_lake_retention_days") -> int | None:
    """The setting as days (None, "" or "none": keep everything); anything else refused."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        days = int(str(value).strip())
    except ValueError:
        days = 0
    if days < 1 or str(days) != str(value).strip():
        raise RetentionSettingError(f"{source} must be a whole number of days >= 1 (or unset: keep everything), got {value!r}")
    return days


def first_day_kept(keep_days: int, today: date | datetime | str) -> str:
    """The oldest day the setting keeps: every day before it is expired."""
    return (date.fromisoformat(day_of(today)) - timedelta(days=keep_days)).isoformat()


@dataclass(frozen=True)
class DayRemoval:
    tenant_id: str
    day: str
    action: str  # REMOVED, WOULD_REMOVE, KEPT
    files: int = 0
    reason: str = ""
    paths: list[str] = field(default_factory=list)  # dry run: what would go

    def summary(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "day": self.day, "action": self.action, "files": self.files,
                "reason": self.reason}  # fmt: skip


def _record(day: str) -> str:
    return f"{RETENTION_DIR}/{DATE_PREFIX}{day}{JSON_SUFFIX}"


def lake_days(location: LakeLocation) -> list[str]:
    """Every day either table holds for this tenant, sorted."""
    location.fs.invalidate_cache()
    return sorted({day for table in SCHEMAS for day in table_days(location, table)})


def marked_days(location: LakeLocation) -> list[str]:
    """Days whose removal started (a record under ``_staging/T/retention/``), sorted."""
    days = []
    for name in list_names(location, RETENTION_DIR) or ():
        if name.startswith(DATE_PREFIX) and name.endswith(JSON_SUFFIX):
            with suppress(ValueError):
                days.append(day_of(name.removeprefix(DATE_PREFIX).removesuffix(JSON_SUFFIX)))
    return sorted(days)


def loading_reason(location: LakeLocation, day: str) -> str:
    """Why ``day`` must stay for now ("" when nothing is loading it)."""
    staged = [hour for hour in staged_intervals(location) if partition_date(hour) == day]
    if staged:
        return f"a run of hour {staged[0].isoformat()} is staged (loading, or failed and may be rerun)"
    # A commit record (not a folder without one: a leftover, removed with the day); the
    # compact task right before finishes every record, so this is a writer at work.
    pending = sorted(hour for _, hour in recorded_hours(location) if partition_date(hour) == day)
    if pending:
        return f"the commit of hour {pending[0].isoformat()} is not finished"
    return ""


def day_paths(location: LakeLocation, day: str) -> list[str]:
    """Every file the lake holds of ``day`` (filesystem paths), in removal order."""
    location.fs.invalidate_cache()
    directories = [day_directory(table, day) for table in REMOVAL_ORDER] + _staging_directories(location, day)
    return [path for directory in directories for path in _files_under(location, directory)]


def _files_under(location: LakeLocation, relative: str) -> list[str]:
    try:
        return sorted(location.fs.find(location.path(relative)))
    except FileNotFoundError:
        return []


def _staging_directories(location: LakeLocation, day: str) -> list[str]:
    """Staging folders of ``day``: compaction swaps and swapped-out days (their grace does
    not outlive the day), commit records, fetch-cache hours."""
    directories = [compaction_staging_directory(table, day) for table in SCHEMAS]
    directories += [compaction_retired_directory(table, day) for table in SCHEMAS]
    for hour in pending_hours(location):
        if partition_date(hour) == day:
            directories.append(commit_path(hour))
    for folder in list_names(location, FETCH_CACHE_DIR) or ():
        for name in list_names(location, f"{FETCH_CACHE_DIR}/{folder}") or ():
            with suppress(ValueError):
                if partition_date(parse_interval_key(name)) == day:
                    directories.append(f"{FETCH_CACHE_DIR}/{folder}/{name}")
    return directories


def _remove_tree(location: LakeLocation, relative: str, day: str) -> int:
    """Remove a folder's files, then the folder; the number of files removed."""
    fs = location.fs
    files = _files_under(location, relative)
    for path in files:
        check_day_held(location, day)
        with suppress(FileNotFoundError):
            fs.rm_file(path)
    with suppress(FileNotFoundError, OSError):
        fs.rm(location.path(relative), recursive=True)
    fs.invalidate_cache()
    return len(files)


def remove_day(location: LakeLocation, day: date | datetime | str, *, dry_run: bool = False) -> DayRemoval:
    """Remove one expired day of this tenant (both tables, its index coverage, its
    staging); a rerun after a kill at any step finishes it. ``dry_run``: only list."""
    day = day_of(day)
    tenant = location.tenant_id or ""
    with day_lock(location, day):
        reason = loading_reason(location, day)
        if reason:
            log.warning("retention: day %s of tenant %s kept for now: %s", day, tenant, reason)
            return DayRemoval(tenant, day, KEPT, reason=reason)
        if dry_run:
            paths = day_paths(location, day)
            return DayRemoval(tenant, day, WOULD_REMOVE, files=len(paths), paths=paths)
        record = {"day": day, "started_at": datetime.now(timezone.utc).isoformat()}
        check_day_held(location, day)
        write_files_atomic(location, {_record(day): json.dumps(record).encode()}, lambda: check_day_held(location, day))
        retention_checkpoint("marked")
        check_day_held(location, day)
        invalidate_covering(location, day)
        retention_checkpoint("index dropped")
        removed = 0
        for table in REMOVAL_ORDER:
            removed += _remove_tree(location, day_directory(table, day), day)
            retention_checkpoint(f"removed {table}")
        for directory in _staging_directories(location, day):
            removed += _remove_tree(location, directory, day)
        retention_checkpoint("removed staging")
        check_day_held(location, day)
        with suppress(FileNotFoundError):
            location.fs.rm_file(location.path(_record(day)))
        location.fs.invalidate_cache()
        retention_checkpoint("unmarked")
    log.info("retention: removed day %s of tenant %s (%d files)", day, tenant, removed)
    return DayRemoval(tenant, day, REMOVED, files=removed)


def days_to_remove(location: LakeLocation, keep_days: int | None, today: date | datetime | str) -> list[str]:
    """Days of this tenant that go: the expired ones, and any whose removal started."""
    expired = [] if keep_days is None else [d for d in lake_days(location) if d < first_day_kept(keep_days, today)]
    return sorted(set(expired) | set(marked_days(location)))


def apply_retention(
    location: LakeLocation, keep_days: int | None, today: date | datetime | str, *, dry_run: bool = False
) -> list[DayRemoval]:
    """Remove (or, ``dry_run``, list) this tenant's expired days, oldest first."""
    return [remove_day(location, day, dry_run=dry_run) for day in days_to_remove(location, keep_days, today)]


def retention_tenants(location: LakeLocation) -> list[LakeLocation]:
    """``[location]`` for a tenant's location, else every tenant with data, and every one
    with staging only (its last days' removal may have been killed after its tables went)."""
    if location.tenant_id is not None:
        return [location]
    ids = {tenant.tenant_id for tenant in tenant_locations(location)} | set(staged_tenants(location))
    return [location.for_tenant(t) for t in sorted(ids) if is_canonical_partition(t)]


def retention_step(
    location: LakeLocation, keep_days: int | None, today: date | datetime | str, *, dry_run: bool = False
) -> dict[str, Any]:
    """Retention over every tenant of the lake (or the one of a tenant's location); a
    summary for XCom and the log. ``keep_days`` None keeps everything (only a removal a
    crash interrupted is finished)."""
    check_not_legacy(location)
    results = [result for tenant in retention_tenants(location) for result in apply_retention(tenant, keep_days, today, dry_run=dry_run)]
    if dry_run:
        for result in results:
            log.info("retention dry run: day %s of tenant %s %s (%d files)%s", result.day, result.tenant_id,
                     result.action, result.files, f": {result.reason}" if result.reason else "")  # fmt: skip
    return {
        "keep_days": keep_days,
        "first_day_kept": first_day_kept(keep_days, today) if keep_days is not None else None,
        "dry_run": dry_run,
        "days": [r.summary() for r in results],
    }


def oldest_day(location: LakeLocation) -> str | None:
    """The oldest day this tenant's lake holds (either table), or None."""
    days = lake_days(location)
    return days[0] if days else None
