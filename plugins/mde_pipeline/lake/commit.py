"""The only hourly write: one interval's two tables, committed together.

One file per (tenant, table, hourly interval),
``<table>/tenant_id=<id>/date=YYYY-MM-DD/interval=YYYYMMDDTHH.parquet`` (layout.interval_file
on a tenant's location; a root location is refused by the day lock). The name comes from the interval alone, so a rerun of an
interval writes the same name and replaces exactly what it owns; two runs of one
interval (a backfill and a scheduled run) leave one complete file, never two.

Every commit runs under the day's lock (locks.day_lock; compaction takes the same one):
it first finishes what an interrupted writer left in the day (commit records,
commit_log.recover_commits; day swaps, days.recover_day), reads the hour as held,
merges the new rows in (versions.merge_versions: other versions kept with
``keep_versions``, never a downgrade), checks the result (records.check_interval) and
writes it through a commit record (commit_log: both files staged, the record as the
commit point, then ``alert_ips`` and ``alerts`` applied), so the two tables of an hour
never disagree for longer than the apply step, and a crash there is finished by the
next writer. An interval of a day already compacted is published into the compacted
file instead (days.py), so a rerun of an old hour gives what a fresh load followed by
compaction would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from mde_pipeline.lake.commit_log import LakeCommitPending, apply, current_target, pending_hours, recover_commits, stage
from mde_pipeline.lake.days import read_compacted_interval, recover_day
from mde_pipeline.lake.layout import INTERVAL, interval_file, interval_key, interval_start_of, partition_date
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import day_lock
from mde_pipeline.lake.parquet import parquet_bytes, read_parquet
from mde_pipeline.lake.records import check_interval
from mde_pipeline.lake.schema import ALERTS, SCHEMAS, LakeSchemaError, conform
from mde_pipeline.lake.storage import LakeWriteFenced
from mde_pipeline.lake.tenants import check_not_legacy
from mde_pipeline.lake.versions import merge_versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommittedInterval:
    interval_start: datetime
    files: dict[str, str]  # table -> uri of the committed file
    rows: dict[str, int]  # table -> row count


def commit_interval(
    location: LakeLocation,
    interval_start: datetime | str,
    tables: Mapping[str, pa.Table],
    *,
    keep_versions: bool = False,
    only_if_committed: bool = False,
) -> CommittedInterval | None:
    """Replace the rows of one interval with ``tables`` (``alerts`` and ``alert_ips``).

    Both tables are checked (schema, interval ownership, no duplicates, ip counts that
    match) and serialised before anything is written; an empty table still gives a file,
    so an empty interval is told apart from a missing one.

    ``keep_versions``: the interval's committed rows of versions ``tables`` does not
    carry stay (a look-back adding late versions; a rerun that must not drop earlier
    versions); without it the hour holds only ``tables``' versions. Either way a version
    whose new answer is worse than the held one keeps the held rows (never a downgrade).
    ``only_if_committed``: do nothing (None) when the interval was never committed.
    Raises commit_log.LakeCommitPending when it failed after its commit point (the next
    writer of the day finishes it).
    """
    start = interval_start_of(interval_start)
    check_not_legacy(location)  # never write the new layout beside the old one
    conformed = {}
    for name in SCHEMAS:
        if name not in tables:
            raise LakeSchemaError(f"commit of interval {interval_key(start)} without table {name!r}")
        conformed[name] = conform(name, tables[name])
    extra = set(tables) - set(SCHEMAS)
    if extra:
        raise LakeSchemaError(f"unknown lake tables {sorted(extra)}")
    day = partition_date(start)
    with day_lock(location, day):
        recover_day_writes(location, day)  # read the day as it really is
        targets = {name: current_target(location, name, start) for name in SCHEMAS}  # before the read: the fence's base
        existing = {name: read_interval(location, name, start) for name in SCHEMAS}
        if only_if_committed and existing[ALERTS] is None:
            return None
        merged = {name: conform(name, data) for name, data in merge_versions(existing, conformed, keep_other_versions=keep_versions).items()}
        check_interval(merged, start, INTERVAL)
        files = {name: parquet_bytes(name, data) for name, data in merged.items()}
        record = stage(location, start, files, targets)
        try:
            written = apply(location, record, merged, files)
        except LakeWriteFenced:
            raise  # another writer changed the hour: this record is void, recovery discards it
        except Exception as exc:  # a lost lease included: the record stands, the next writer applies it
            raise LakeCommitPending(
                f"interval {interval_key(start)} is committed but not yet applied ({type(exc).__name__}); "
                "the next run (or this task's retry) finishes it from its commit record"
            ) from exc
    result = CommittedInterval(interval_start=start, files=written, rows={name: data.num_rows for name, data in merged.items()})
    log.info("committed interval %s: %s", interval_key(start), ", ".join(f"{n} {r} rows" for n, r in result.rows.items()))
    return result


def recover_day_writes(location: LakeLocation, day: str) -> list[str]:
    """Finish what interrupted writers left in ``day`` (caller holds the day's lock): day
    swaps of either table, then commit records. Returns the interval keys recovered."""
    for name in SCHEMAS:
        recover_day(location, name, day)
    return recover_commits(location, day)


def recover_pending_commits(location: LakeLocation) -> list[str]:
    """Finish every hour of this tenant's lake left with a commit record, each under its
    day's lock (the DAG's publish and the compaction step run it first)."""
    recovered = []
    for day in sorted({partition_date(hour) for hour in pending_hours(location)}):
        with day_lock(location, day):
            recovered += recover_day_writes(location, day)
    return recovered


def read_interval(location: LakeLocation, table: str, interval_start: datetime | str) -> pa.Table | None:
    """The committed rows of one interval (its hourly file, or its rows in a compacted
    day), or None when the interval was never committed."""
    try:
        return read_parquet(location, location.path(interval_file(table, interval_start)))
    except FileNotFoundError:
        return read_compacted_interval(location, table, interval_start)
