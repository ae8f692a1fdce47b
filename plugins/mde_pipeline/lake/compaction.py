"""Compaction: closed days of hourly files rewritten as one file sorted for queries.

Why: an analyst's IP lookup over 180 days of hourly files opens 4,320 files per table;
after compaction it opens 180, each sorted so min/max statistics and a Bloom filter on
the lookup column skip what does not match (bench/lake_queries.py has the figures).

Sort order (parquet.SORT_KEYS): ``alert_ips`` by ip, then alert_last_update_time (the IP
hunt and its time filter); ``alerts`` by alert_id, then last_update_time (the join key).
The remaining key columns make the order total, so the same rows always give the same
file content whatever order they arrived in. How a day is read, built and swapped in
atomically: :mod:`.days`.

Concurrency with the hourly loads: every change to a day's files happens under the
day's lock (locks.day_lock: ``flock`` on a local lake, a renewed blob lease on abfs).
The hourly commit takes the same lock, so a rerun either lands before the compaction
reads the day or after it swapped.

The compaction DAG runs :func:`compaction_step`, then ip_index.index_step: two tasks, so
each retries alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from mde_pipeline.lake.commit import recover_day_writes, recover_pending_commits
from mde_pipeline.lake.days import build_compacted_day, check_day, read_day, recover_interrupted_swaps, replace_day
from mde_pipeline.lake.layout import check_table, day_of, days_with_interval_files, list_day
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import day_lock
from mde_pipeline.lake.schema import SCHEMAS
from mde_pipeline.lake.staging import STAGING_MAX_AGE
from mde_pipeline.lake.sweeps import sweep_every_tenant_staging
from mde_pipeline.lake.tenants import check_not_legacy, tenant_locations

# A day is compacted once it ended this long ago (late reruns of its last hours are
# likely within it) and no hourly file of it changed for QUIET_PERIOD (a backfill that
# is filling the day is left to finish first).
DEFAULT_GRACE = timedelta(hours=3)
DEFAULT_QUIET_PERIOD = timedelta(hours=1)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactionResult:
    table: str
    day: str
    action: str  # "compacted", "unchanged", "empty"
    rows: int = 0
    intervals: int = 0
    source_files: int = 0
    seconds: float = 0.0


def compact_day(location: LakeLocation, table: str, day: date | datetime | str, *, lock: bool = True) -> CompactionResult:
    """Rewrite one table's day as sorted compacted file(s); idempotent.

    A day with no hourly file left (already compacted, or nothing loaded) is unchanged.
    Takes the day's lock unless the caller holds it (``lock=False``).
    """
    day = day_of(day)
    check_table(table)
    if lock:
        with day_lock(location, day):
            return compact_day(location, table, day, lock=False)
    started = time.perf_counter()
    recover_day_writes(location, day)  # an hour's commit record is finished before the day is read
    current = list_day(location, table, day)
    if not current.interval_files:
        action = "unchanged" if current.is_compacted else "empty"
        return CompactionResult(table, day, action)
    rows, intervals = read_day(location, current)
    check_day(table, day, rows)
    built = build_compacted_day(table, day, rows, intervals)
    replace_day(location, built)
    result = CompactionResult(
        table, day, "compacted", rows=built.rows, intervals=len(intervals),
        source_files=len(current.interval_files) + len(current.compacted_files), seconds=time.perf_counter() - started,
    )
    log.info("compacted %s %s: %d files -> %d, %d rows, %.2f s", table, day, result.source_files,
             len(built.files) - 1, result.rows, result.seconds)
    return result


def closed_days(
    location: LakeLocation,
    *,
    closed_before: datetime,
    quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
    now: datetime | None = None,
) -> list[str]:
    """Days with hourly files that ended by ``closed_before`` and had no write for ``quiet_period``."""
    now = now or datetime.now(timezone.utc)
    candidates = set()
    for table in SCHEMAS:
        for day in days_with_interval_files(location, table):
            end = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(days=1)
            if end <= closed_before:
                candidates.add(day)
    ready = []
    for day in sorted(candidates):
        newest = [list_day(location, table, day).newest_mtime for table in SCHEMAS]
        newest_write = max((m for m in newest if m is not None), default=None)
        if newest_write is None or now.timestamp() - newest_write >= quiet_period.total_seconds():
            ready.append(day)
        else:
            log.info("day %s was written %.0f s ago: left for a later run", day, now.timestamp() - newest_write)
    return ready


def compact_closed_days(
    location: LakeLocation,
    *,
    closed_before: datetime,
    grace: timedelta = DEFAULT_GRACE,
    quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
    now: datetime | None = None,
) -> list[CompactionResult]:
    """Compact both tables of every day that ended ``grace`` before ``closed_before``.

    First finishes or discards every interrupted swap and commit, of any day
    (days.recover_interrupted_swaps, commit.recover_pending_commits).
    """
    recover_interrupted_swaps(location)
    recover_pending_commits(location)
    results = []
    for day in closed_days(location, closed_before=closed_before - grace, quiet_period=quiet_period, now=now):
        with day_lock(location, day):
            for table in SCHEMAS:
                results.append(compact_day(location, table, day, lock=False))
    return results


def compaction_step(
    location: LakeLocation,
    *,
    closed_before: datetime,
    grace: timedelta = DEFAULT_GRACE,
    quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
    staging_max_age: timedelta = STAGING_MAX_AGE,
    cache_lookback: timedelta = timedelta(0),
) -> dict[str, Any]:
    """The compaction DAG's first task: for each tenant of the lake (or the one tenant of
    a tenant's location), compact the closed days (after recovering any interrupted swap);
    then, in every tenant folder under ``_staging/`` (lake.sweeps), sweep staging of failed
    runs older than ``staging_max_age`` and the fetch cache no run may still publish
    (``cache_lookback``: the hourly DAG's look-back); a summary for XCom and the log."""
    check_not_legacy(location)
    moment = datetime.fromtimestamp(closed_before.timestamp(), timezone.utc)
    days = []
    for tenant in tenant_locations(location):
        results = compact_closed_days(tenant, closed_before=moment, grace=grace, quiet_period=quiet_period)
        log.info(
            "lake %s tenant %s: %d table-days compacted (closed before %s)",
            location.url, tenant.tenant_id, sum(r.action == "compacted" for r in results), (moment - grace).isoformat(),
        )
        days += [
            {"tenant_id": tenant.tenant_id, "day": r.day, "table": r.table, "action": r.action, "rows": r.rows,
             "intervals": r.intervals, "source_files": r.source_files, "seconds": round(r.seconds, 3)}
            for r in results
        ]
    swept = sweep_every_tenant_staging(location, now=moment, staging_max_age=staging_max_age, cache_lookback=cache_lookback)
    return {**swept, "days": days}
