"""A day of one table as one unit: read it whole, build its compacted files, swap them in.

Layout of a compacted day (same partition directory, same Hive key)::

    <root>/<table>/date=YYYY-MM-DD/compacted-<token>-NNN.parquet   rows of every interval
    <root>/<table>/date=YYYY-MM-DD/_compaction.json                manifest (readers skip "_")

Rows keep their ``interval_start``, so a day stays a set of per-interval row sets: a
rerun of one hour rewrites the day without that hour's old rows and with its new ones
(:func:`publish_interval_into_compacted_day`), which is exactly what a fresh load
followed by compaction gives. The manifest records every compacted interval, empty
ones included (an empty interval is still "loaded"), with its row count.

Atomic for readers: a reader globbing ``<table>/*/*.parquet`` sees either the hourly
files or the compacted file of a day, never both and never neither:

* local filesystem: the new day is built as a complete directory under
  ``<root>/_staging/compaction/`` and exchanged with the live ``date=`` directory
  (storage.swap_local_directory). The swapped-out directory is renamed under
  ``<root>/_staging/compaction_retired/`` and removed after retired.RETIRED_GRACE, so a
  reader that opened the day directory just before the swap still lists the old files
  (removed at once, it would list nothing: the day silently missing). A reader that
  listed the old files and opens them after the swap gets "file not found" (a loud
  failure, never wrong rows); a retry reads the new day.
* abfs (ADLS Gen2 through adlfs, which speaks the Blob API: no directory rename): new
  before old. The new files are staged complete under ``_staging/compaction/`` with
  their manifest committed last (the commit point), copied into the day (manifest
  last), and only then the day's old files deleted (storage.finish_blob_swap). A reader
  never misses a row; for the second or so between the first copy and the last delete
  it can see part of that day twice (docs/ANALYSTS.md). A crash before the commit
  point leaves the day as it was; after it, the swap is finished from the staged copy
  by the next run (:func:`recover_day`): every compaction run first recovers every
  day with leftovers (:func:`recover_interrupted_swaps`), and every commit or
  republish of a day recovers that day first. A holder whose lease was lost stops
  before its next copy or delete (locks.check_held raises LakeLockLost).

Every change to a day of the indexed table first drops the IP index covering it
(ip_index.invalidate_covering). Callers hold the day's lock (locks.day_lock).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from mde_pipeline.lake import storage
from mde_pipeline.lake.ip_index import INDEXED_TABLE, invalidate_covering
from mde_pipeline.lake.layout import (
    MANIFEST_NAME,
    DayFiles,
    base_name,
    compacted_file_name,
    compaction_retired_directory,
    compaction_staging_directory,
    day_directory,
    day_of,
    interval_key,
    interval_start_of,
    list_day,
    partition_date,
    staged_compaction_days,
)
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import check_day_held, day_lock
from mde_pipeline.lake.parquet import ROW_GROUP_ROWS, SORT_KEYS, parquet_bytes, read_parquet, sort_for_queries
from mde_pipeline.lake.schema import ROW_KEYS, SCHEMAS, conform
from mde_pipeline.lake.storage import (
    discard_blob_staging,
    finish_blob_swap,
    recover_local_directory,
    swap_local_directory,
    write_files_atomic,
)

MANIFEST_FORMAT = 1
# Row groups of compacted day files. Measured on 180 days x ~19k rows a day (bench/
# lake_queries.py, docs/ANALYSTS.md): one row group per day is best for a rare IP
# (Bloom filter) and for time windows, 4-8 Ki rows best for an IP found in every day
# (min/max statistics then skip most of each day); 8 Ki balances the two. Files with
# many more rows (the month index) keep their own.
COMPACTED_ROW_GROUP_ROWS = 8 * 1024
# A compacted file holds at most this many rows; a bigger day gets several files, each
# a contiguous range of the sort order.
MAX_FILE_ROWS = 8 * ROW_GROUP_ROWS

log = logging.getLogger(__name__)


class CompactionError(RuntimeError):
    """A day could not be compacted or republished; the live day is as it was."""


def interval_keys(data: pa.Table) -> pa.Array:
    """The interval key (``YYYYMMDDTHH``) of every row."""
    return pc.strftime(data.column("interval_start"), format="%Y%m%dT%H", locale="C")


def read_day(location: LakeLocation, files: DayFiles) -> tuple[pa.Table, dict[str, int]]:
    """All rows of a day (compacted rows, then hourly files replacing their intervals).

    Returns the rows and ``interval key -> row count`` of every interval the day holds.
    An hourly file next to a compacted file (left by a writer that bypassed
    commit.commit_interval) is the newer load of its interval and wins.
    """
    table = files.table
    parts: list[pa.Table] = []
    intervals: dict[str, int] = {}
    if files.is_compacted:
        compacted = [conform(table, read_parquet(location, path)) for path in files.compacted_files]
        data = pa.concat_tables(compacted) if compacted else SCHEMAS[table].empty_table()
        replaced = sorted(files.interval_files)
        if replaced:
            keys = interval_keys(data)
            data = data.filter(pc.invert(pc.is_in(keys, value_set=pa.array(replaced))))
        parts.append(data)
        intervals.update((files.manifest or {}).get("intervals", {}) or intervals_of(data))
        for key in replaced:
            intervals.pop(key, None)
    for key, path in sorted(files.interval_files.items()):
        data = conform(table, read_parquet(location, path))
        check_owned(table, data, key)
        parts.append(data)
        intervals[key] = data.num_rows
    rows = pa.concat_tables(parts) if parts else SCHEMAS[table].empty_table()
    return rows, dict(sorted(intervals.items()))


def intervals_of(data: pa.Table) -> dict[str, int]:
    if data.num_rows == 0:
        return {}
    keys = interval_keys(data)
    counts = pc.value_counts(keys)
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def check_owned(table: str, data: pa.Table, key: str) -> None:
    if data.num_rows and intervals_of(data).keys() != {key}:
        raise CompactionError(f"{table}: the file of interval {key} holds rows of other intervals")


@dataclass(frozen=True)
class CompactedDay:
    table: str
    day: str
    files: dict[str, bytes]  # file name -> content (compacted files, then the manifest)
    rows: int
    intervals: dict[str, int]


def build_compacted_day(
    table: str,
    day: str,
    rows: pa.Table,
    intervals: Mapping[str, int],
    *,
    now: datetime | None = None,
    commits: Mapping[str, str] | None = None,
) -> CompactedDay:
    """The files of a compacted day for ``rows`` (any order), with its manifest.

    ``commits``: interval key -> token of the commit record (commit_log) that last
    republished it, so a recovery tells its own applied republish from another writer's."""
    day = day_of(day)
    rows = sort_for_queries(table, conform(table, rows))
    token = uuid.uuid4().hex[:12]
    files: dict[str, bytes] = {}
    file_rows: dict[str, int] = {}
    chunks = range(0, max(rows.num_rows, 1), MAX_FILE_ROWS)
    for index, offset in enumerate(chunks):
        name = compacted_file_name(token, index)
        part = rows.slice(offset, MAX_FILE_ROWS)
        files[name] = parquet_bytes(table, part, row_group_rows=COMPACTED_ROW_GROUP_ROWS, sorted_for_queries=True)
        file_rows[name] = part.num_rows
    manifest = {
        "format": MANIFEST_FORMAT,
        "table": table,
        "date": day,
        "rows": rows.num_rows,
        "files": file_rows,
        "intervals": dict(sorted(intervals.items())),
        "commits": dict(sorted((commits or {}).items())),
        "sort_keys": list(SORT_KEYS[table]),
        "row_group_rows": COMPACTED_ROW_GROUP_ROWS,
        "compacted_at": (now or datetime.now(timezone.utc)).isoformat(),
    }
    files[MANIFEST_NAME] = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    return CompactedDay(table=table, day=day, files=files, rows=rows.num_rows, intervals=dict(intervals))


def _staging(location: LakeLocation, table: str, day: str, *parts: str) -> str:
    return location.path(compaction_staging_directory(table, day), *parts)


def _retired(location: LakeLocation, table: str, day: str) -> str:
    return location.path(compaction_retired_directory(table, day))


def invalidate_index(location: LakeLocation, table: str, day: str) -> None:
    """Drop the IP index covering ``day`` before ``table``'s files of the day change."""
    if table == INDEXED_TABLE:
        invalidate_covering(location, day)


def replace_day(location: LakeLocation, built: CompactedDay) -> None:
    """Swap ``built`` in for the day's current files (under the day's lock)."""
    invalidate_index(location, built.table, built.day)
    live = location.path(day_directory(built.table, built.day))
    if location.is_local:
        swap_local_directory(live, built.files, _staging(location, built.table, built.day), _retired(location, built.table, built.day))
        return
    token = uuid.uuid4().hex[:12]
    # Stage every file, the manifest last: a complete staged manifest is the commit
    # point recover_day trusts to finish an interrupted swap.
    staged = compaction_staging_directory(built.table, built.day)
    check_day_held(location, built.day)
    write_files_atomic(location, {f"{staged}/{token}/{n}": c for n, c in built.files.items()})
    storage.swap_checkpoint("staged")
    finish_blob_swap(location, live, _staging(location, built.table, built.day, token), MANIFEST_NAME, lambda: check_day_held(location, built.day))


def recover_day(location: LakeLocation, table: str, day: str) -> bool:
    """Finish or discard an interrupted swap of one day (call under the day's lock).

    Local: the live directory is always complete (the swap is one exchange); leftovers
    are retired (retired.RETIRED_GRACE: one may be the previous day a reader is
    listing), and a day left absent by the two-rename fallback is put back. abfs: a
    staged day with its manifest is finished (copied in, then the old files deleted);
    an incomplete one is discarded. Returns whether there was anything to recover.
    """
    day = day_of(day)
    fs = location.fs
    fs.invalidate_cache()
    root = _staging(location, table, day)
    try:
        entries = sorted(fs.ls(root, detail=False))
    except FileNotFoundError:
        return False
    # The day may change below; an index built from its half-swapped state must go.
    invalidate_index(location, table, day)
    live = location.path(day_directory(table, day))
    if location.is_local:
        recover_local_directory(live, root, MANIFEST_NAME, _retired(location, table, day))
        return True
    check_held = lambda: check_day_held(location, day)  # noqa: E731
    for staged in entries:
        check_held()
        names = [base_name(p) for p in fs.ls(staged, detail=False)]
        if MANIFEST_NAME in names:
            log.warning("finishing the interrupted compaction of %s from %s", live, staged)
            finish_blob_swap(location, live, staged, MANIFEST_NAME, check_held)
        else:
            log.warning("discarding the incomplete staged compaction %s", staged)
            discard_blob_staging(location, staged, MANIFEST_NAME)
    with suppress(FileNotFoundError):
        fs.rm(root, recursive=True)
    fs.invalidate_cache()
    return True


def recover_interrupted_swaps(location: LakeLocation) -> list[tuple[str, str]]:
    """Recover every day of either table with leftovers of a swap, each under its lock.

    Run first by every compaction run, so a day whose swap died is restored even when
    nothing else would touch it again. Returns the (table, day) pairs recovered.
    """
    location.fs.invalidate_cache()
    recovered = []
    for table in SCHEMAS:
        for day in staged_compaction_days(location, table):
            with day_lock(location, day):
                if recover_day(location, table, day):
                    recovered.append((table, day))
    if recovered:
        log.warning("recovered %d interrupted day swaps: %s", len(recovered), recovered)
    return recovered


def check_day(table: str, day: str, rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    days = pc.unique(pc.strftime(rows.column("interval_start"), format="%Y-%m-%d", locale="C")).to_pylist()
    if days != [day]:
        raise CompactionError(f"{table} {day}: rows of intervals on other days {days[:3]}")
    keys = list(ROW_KEYS[table])
    if rows.group_by(keys).aggregate([]).num_rows != rows.num_rows:
        raise CompactionError(f"{table} {day}: duplicate rows for key {keys}")


def publish_interval_into_compacted_day(
    location: LakeLocation,
    table: str,
    interval_start: datetime | str,
    data: pa.Table,
    *,
    lock: bool = True,
    commit_token: str | None = None,
) -> str:
    """Replace one interval's rows inside a compacted day with ``data``.

    The day's rows of other intervals stay; this interval's old rows go; ``data`` (which
    must all belong to the interval, and may be empty) comes in; the day is rewritten in
    the compacted order and swapped in atomically, so the result is exactly what a
    fresh hourly load of the interval followed by compaction would be. Returns the uri
    of the day's (first) compacted file.
    """
    start = interval_start_of(interval_start)
    key, day = interval_key(start), partition_date(start)
    if lock:
        with day_lock(location, day):
            return publish_interval_into_compacted_day(location, table, start, data, lock=False, commit_token=commit_token)
    data = conform(table, data)
    check_owned(table, data, key)
    recover_day(location, table, day)
    current = list_day(location, table, day)
    if not current.is_compacted:
        raise CompactionError(f"{table} {day} is not compacted: commit the interval file instead")
    current.interval_files.pop(key, None)  # a stray file of this interval is replaced too
    rows, intervals = read_day(location, current)
    if rows.num_rows:
        rows = rows.filter(pc.not_equal(interval_keys(rows), key))
    rows = pa.concat_tables([rows, data])
    intervals[key] = data.num_rows
    check_day(table, day, rows)
    commits = {**(current.manifest or {}).get("commits", {}), **({key: commit_token} if commit_token else {})}
    built = build_compacted_day(table, day, rows, intervals, commits=commits)
    replace_day(location, built)
    log.info("republished interval %s into compacted %s %s (%d rows)", key, table, day, data.num_rows)
    first = next(iter(built.files))
    return location.uri(day_directory(table, day), first)


def read_compacted_interval(location: LakeLocation, table: str, interval_start: datetime | str) -> pa.Table | None:
    """One interval's rows from a compacted day; None when the day or interval is absent.

    The counterpart of ``commit.read_interval`` for compacted days.
    """
    start = interval_start_of(interval_start)
    current = list_day(location, table, partition_date(start))
    if not current.is_compacted:
        return None
    key = interval_key(start)
    if key not in (current.manifest or {}).get("intervals", {}):
        return None
    rows, _ = read_day(location, current)
    return rows.filter(pc.equal(interval_keys(rows), key))
