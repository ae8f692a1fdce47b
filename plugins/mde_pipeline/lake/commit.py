"""The only hourly write: one interval's two tables, committed together.

One file per (tenant, table, hourly interval),
``<table>/tenant_id=<id>/date=YYYY-MM-DD/interval=YYYYMMDDTHH.parquet`` (layout.interval_file
on a tenant's location; a root location is refused by the day lock). The name comes from the interval alone, so a rerun of an
interval writes the same name and replaces exactly what it owns; two runs of one
interval (a backfill and a scheduled run) leave one complete file, never two.

An interval's two tables are checked and serialised before anything is written, then
committed one right after the other (storage.write_files_atomic: two renames locally,
two Put Block List requests on blob storage) under the day's lock (locks.day_lock;
compaction takes the same one), so concurrent runs of one interval never leave one
run's ``alerts`` next to another run's ``alert_ips``. A reader can, for the moment
between the two commits, see one table's new file and the other's old one; a crash in
between is repaired by the task's retry, which rewrites both. An interval of a day
already compacted is published into the compacted file instead (days.py), so a rerun
of an old hour gives what a fresh load followed by compaction would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from mde_pipeline.lake.days import invalidate_index, publish_interval_into_compacted_day, read_compacted_interval, recover_day
from mde_pipeline.lake.layout import INTERVAL, interval_file, interval_key, interval_start_of, list_day, partition_date
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import check_day_held, day_lock
from mde_pipeline.lake.parquet import parquet_bytes, read_parquet
from mde_pipeline.lake.records import check_interval
from mde_pipeline.lake.schema import ALERTS, SCHEMAS, LakeSchemaError, conform
from mde_pipeline.lake.storage import write_files_atomic
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
    """Replace the files of one interval with ``tables`` (``alerts`` and ``alert_ips``).

    Both tables are checked (schema, interval ownership, no duplicates, ip counts that
    match) and serialised before anything is written; an empty table still gives a file,
    so an empty interval is told apart from a missing one. Rerunning with the same
    interval replaces both files whole.

    ``keep_versions``: the interval's committed rows of versions ``tables`` does not
    carry stay (versions.merge_versions), read and rewritten under the day's lock (a
    look-back adding late versions; a rerun that must not drop earlier versions).
    ``only_if_committed``: do nothing (None) when the interval was never committed.
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
    if keep_versions or only_if_committed:
        with day_lock(location, partition_date(start)):
            for name in SCHEMAS:
                recover_day(location, name, partition_date(start))  # read the day as it really is
            existing = {name: read_interval(location, name, start) for name in SCHEMAS}
            if only_if_committed and existing[ALERTS] is None:
                return None
            if keep_versions:
                conformed = {name: conform(name, data) for name, data in merge_versions(existing, conformed).items()}
            check_interval(conformed, start, INTERVAL)
            files = {interval_file(name, start): parquet_bytes(name, data) for name, data in conformed.items()}
            written = _commit_files(location, start, conformed, files, lock=False)
    else:
        check_interval(conformed, start, INTERVAL)
        files = {interval_file(name, start): parquet_bytes(name, data) for name, data in conformed.items()}
        written = _commit_files(location, start, conformed, files)
    result = CommittedInterval(
        interval_start=start,
        files={name: written[interval_file(name, start)] for name in conformed},
        rows={name: data.num_rows for name, data in conformed.items()},
    )
    log.info("committed interval %s: %s", interval_key(start), ", ".join(f"{n} {r} rows" for n, r in result.rows.items()))
    return result


def _commit_files(
    location: LakeLocation, start: datetime, tables: Mapping[str, pa.Table], files: Mapping[str, bytes], *, lock: bool = True
) -> dict[str, str]:
    """Under the day's lock: a table whose day is compacted gets the interval published
    into the compacted file; the others get their interval file written atomically.
    Returns relative path -> uri."""
    day = partition_date(start)
    written: dict[str, str] = {}
    with day_lock(location, day) if lock else nullcontext():
        for name in tables:
            recover_day(location, name, day)  # a swap that died must not finish over this commit
        plain = dict(files)
        for name, data in tables.items():
            relative = interval_file(name, start)
            if list_day(location, name, day).is_compacted:
                plain.pop(relative, None)
                written[relative] = publish_interval_into_compacted_day(location, name, start, data, lock=False)
        if plain:
            for name in tables:
                if interval_file(name, start) in plain:
                    invalidate_index(location, name, day)
            written.update(write_files_atomic(location, plain, lambda: check_day_held(location, day)))
    return {relative: written[relative] for relative in files}


def read_interval(location: LakeLocation, table: str, interval_start: datetime | str) -> pa.Table | None:
    """The committed rows of one interval (its hourly file, or its rows in a compacted
    day), or None when the interval was never committed."""
    try:
        return read_parquet(location, location.path(interval_file(table, interval_start)))
    except FileNotFoundError:
        return read_compacted_interval(location, table, interval_start)
