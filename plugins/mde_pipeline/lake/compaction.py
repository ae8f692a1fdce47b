"""Compaction: closed days of hourly files rewritten as one file sorted for queries.

Why: an analyst's IP lookup over 180 days of hourly files opens 4,320 files per table;
after compaction it opens 180, each sorted so min/max statistics and a Bloom filter on
the lookup column skip what does not match (bench/lake_queries.py has the figures).

Layout of a compacted day (same partition directory, same Hive key)::

    <root>/<table>/date=YYYY-MM-DD/compacted-<token>.parquet   rows of every interval
    <root>/<table>/date=YYYY-MM-DD/_compaction.json            manifest (readers skip "_")

Rows keep their ``interval_start``, so a day stays a set of per-interval row sets: a
rerun of one hour rewrites the day without that hour's old rows and with its new ones
(:func:`publish_interval_into_compacted_day`), which is exactly what a fresh load
followed by compaction gives. The manifest records every compacted interval, empty
ones included (an empty interval is still "loaded"), with its row count.

Sort order (``SORT_KEYS``): ``alert_ips`` by ip, then alert_last_update_time (the IP
hunt and its time filter); ``alerts`` by alert_id, then last_update_time (the join key).
The remaining key columns make the order total, so the same rows always give the same
file content whatever order they arrived in.

Atomic for readers: a reader globbing ``<table>/*/*.parquet`` sees either the hourly
files or the compacted file of a day, never both and never neither:

* local filesystem: the new day is built as a complete directory under
  ``<root>/_staging/compaction/`` and swapped with the live ``date=`` directory in one
  ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15; ext4, xfs, btrfs, tmpfs). Where the
  kernel or filesystem refuses the exchange (macOS, some network filesystems) it falls
  back to two renames with a window of microseconds in which the day is absent, and
  logs a warning. A reader that listed the old files just before the swap and opens
  them after gets "file not found" (a loud failure, never wrong rows); a retry reads
  the new day.
* abfs (ADLS Gen2 through adlfs, which speaks the Blob API: no directory rename): the
  new files are first staged complete under ``_staging/compaction/``, then the day's
  old files are deleted and the new ones uploaded. Readers never see duplicated rows,
  but for the second or so between the first delete and the last upload a reader can
  miss part of that day. Compaction runs once a day on days closed for hours, so this
  residual window is short and rare; it is documented in docs/ANALYSTS.md. A crash in
  between is finished by the next run from the staged copy (:func:`recover_day`).

Compacted days of ``alert_ips`` also get an IP-sorted copy per month under ``_ip_index/``
(:mod:`mde_pipeline.lake.ip_index`): an accelerator for the analyst views, never data.
Every change to a day the index covers drops that index first.

Concurrency with the hourly loads: every change to a day's files happens under the
day's lock (:func:`day_lock`, the lake's ``locks.lake_lock`` named ``date=YYYY-MM-DD``:
``flock`` on a local lake, a renewed blob lease on abfs).
The writer's commit takes the same lock through :func:`commit_interval_files`, so an
hourly rerun either lands before the compaction reads the day or after it swapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import lake_lock
from mde_pipeline.lake.schema import (
    ALERT_IPS,
    ALERTS,
    DICTIONARY_COLUMNS,
    ROW_KEYS,
    SCHEMAS,
    LakeSchemaError,
    conform,
)
from mde_pipeline.lake.writer import (
    COMPRESSION,
    COMPRESSION_LEVEL,
    PARQUET_SUFFIX,
    ROW_GROUP_ROWS,
    interval_file,
    interval_key,
    interval_start_of,
    parse_interval_file,
    partition_date,
    write_files_atomic,
)

COMPACTED_PREFIX = "compacted-"
MANIFEST_NAME = "_compaction.json"
MANIFEST_FORMAT = 1
STAGING_DIR = "_staging/compaction"

# Columns each table is sorted by; ROW_KEYS complete them into a total order.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    ALERT_IPS: ("ip", "alert_last_update_time"),
    ALERTS: ("alert_id", "last_update_time"),
}
# Bloom filters on the point-lookup columns: a day whose file lacks the IP is skipped
# after reading a few KB, even though its min/max range covers the whole IP space.
BLOOM_COLUMNS: dict[str, tuple[str, ...]] = {ALERT_IPS: ("ip",), ALERTS: ("alert_id",)}
BLOOM_FPP = 0.01
# Row groups of compacted day files. Measured on 180 days x ~19k rows a day (bench/
# lake_queries.py, docs/ANALYSTS.md): one row group per day is best for a rare IP
# (Bloom filter) and for time windows, 4-8 Ki rows best for an IP found in every day
# (min/max statistics then skip most of each day); 8 Ki balances the two. Files with
# many more rows (the month index) keep the writer's 128 Ki.
COMPACTED_ROW_GROUP_ROWS = 8 * 1024
# A compacted file holds at most this many rows; a bigger day gets several files, each
# a contiguous range of the sort order.
MAX_FILE_ROWS = 8 * ROW_GROUP_ROWS

# A day is compacted once it ended this long ago (late reruns of its last hours are
# likely within it) and no hourly file of it changed for QUIET_PERIOD (a backfill that
# is filling the day is left to finish first).
DEFAULT_GRACE = timedelta(hours=3)
DEFAULT_QUIET_PERIOD = timedelta(hours=1)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

log = logging.getLogger(__name__)


class CompactionError(RuntimeError):
    """A day could not be compacted or republished; the live day is as it was."""


# --------------------------------------------------------------------------- day files


@dataclass
class DayFiles:
    """What one table's ``date=`` directory holds right now."""

    table: str
    day: str  # YYYY-MM-DD
    interval_files: dict[str, str] = field(default_factory=dict)  # interval key -> path
    compacted_files: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    other_files: list[str] = field(default_factory=list)
    newest_mtime: float | None = None

    @property
    def is_compacted(self) -> bool:
        return bool(self.compacted_files) or self.manifest is not None

    @property
    def live_files(self) -> list[str]:
        """Every file the day's readers or a compaction care about."""
        files = [*self.interval_files.values(), *self.compacted_files]
        if self.manifest is not None:
            files.append(self.manifest["_path"])
        return files


def day_of(value: date | datetime | str) -> str:
    """``YYYY-MM-DD`` of a date, of a UTC datetime's date, or validated text."""
    if isinstance(value, datetime):
        return partition_date(value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0))
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise LakeSchemaError(f"not a date (YYYY-MM-DD): {value!r}") from None


def day_directory(table: str, day: str) -> str:
    """``<table>/date=YYYY-MM-DD`` relative to the lake root."""
    if table not in SCHEMAS:
        raise LakeSchemaError(f"unknown lake table {table!r}")
    return f"{table}/date={day_of(day)}"


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _mtime(info: Mapping[str, Any]) -> float | None:
    value = info.get("mtime", info.get("last_modified"))
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def list_day(location: LakeLocation, table: str, day: str) -> DayFiles:
    """The files of one table's day (empty when the directory does not exist)."""
    day = day_of(day)
    result = DayFiles(table=table, day=day)
    fs = location.fs
    fs.invalidate_cache()
    try:
        entries = fs.ls(location.path(day_directory(table, day)), detail=True)
    except FileNotFoundError:
        return result
    for info in entries:
        if info.get("type") == "directory":
            continue
        path, name = info["name"], _base(info["name"])
        mtime = _mtime(info)
        if name == MANIFEST_NAME:
            result.manifest = {**json.loads(fs.cat_file(path)), "_path": path}
        elif name.startswith(COMPACTED_PREFIX) and name.endswith(PARQUET_SUFFIX):
            result.compacted_files.append(path)
        elif name.startswith("interval=") and name.endswith(PARQUET_SUFFIX):
            try:
                result.interval_files[interval_key(parse_interval_file(name))] = path
            except LakeSchemaError:
                result.other_files.append(path)
        else:
            result.other_files.append(path)  # writers' temp files and the like
            continue
        if mtime is not None and (result.newest_mtime is None or mtime > result.newest_mtime):
            result.newest_mtime = mtime
    result.compacted_files.sort()
    return result


def is_compacted_day(location: LakeLocation, table: str, day: date | datetime | str) -> bool:
    return list_day(location, table, day_of(day)).is_compacted


def _read_file(location: LakeLocation, path: str) -> pa.Table:
    if location.is_local:
        return pq.read_table(path)
    return pq.read_table(pa.BufferReader(location.fs.cat_file(path)))


def read_day(location: LakeLocation, files: DayFiles) -> tuple[pa.Table, dict[str, int]]:
    """All rows of a day (compacted rows, then hourly files replacing their intervals).

    Returns the rows and ``interval key -> row count`` of every interval the day holds.
    An hourly file next to a compacted file (left by a writer that bypassed
    :func:`commit_interval_files`) is the newer load of its interval and wins.
    """
    table = files.table
    parts: list[pa.Table] = []
    intervals: dict[str, int] = {}
    if files.is_compacted:
        compacted = [conform(table, _read_file(location, path)) for path in files.compacted_files]
        data = pa.concat_tables(compacted) if compacted else SCHEMAS[table].empty_table()
        replaced = sorted(files.interval_files)
        if replaced:
            keys = pc.strftime(data.column("interval_start"), format="%Y%m%dT%H", locale="C")
            data = data.filter(pc.invert(pc.is_in(keys, value_set=pa.array(replaced))))
        parts.append(data)
        intervals.update((files.manifest or {}).get("intervals", {}) or _intervals_of(data))
        for key in replaced:
            intervals.pop(key, None)
    for key, path in sorted(files.interval_files.items()):
        data = conform(table, _read_file(location, path))
        _check_owned(table, data, key)
        parts.append(data)
        intervals[key] = data.num_rows
    rows = pa.concat_tables(parts) if parts else SCHEMAS[table].empty_table()
    return rows, dict(sorted(intervals.items()))


def _intervals_of(data: pa.Table) -> dict[str, int]:
    if data.num_rows == 0:
        return {}
    keys = pc.strftime(data.column("interval_start"), format="%Y%m%dT%H", locale="C")
    counts = pc.value_counts(keys)
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def _check_owned(table: str, data: pa.Table, key: str) -> None:
    if data.num_rows and _intervals_of(data).keys() != {key}:
        raise CompactionError(f"{table}: the file of interval {key} holds rows of other intervals")


def sort_for_queries(table: str, data: pa.Table) -> pa.Table:
    """``data`` in the compacted order of ``table`` (total, so deterministic)."""
    keys = list(SORT_KEYS[table]) + [k for k in ROW_KEYS[table] if k not in SORT_KEYS[table]]
    return data.sort_by([(key, "ascending") for key in keys])


def compacted_parquet_bytes(table: str, data: pa.Table, *, row_group_rows: int | None = None) -> bytes:
    """One compacted file: sorted rows, row groups of COMPACTED_ROW_GROUP_ROWS, Bloom filters."""
    sink = pa.BufferOutputStream()
    keys = list(SORT_KEYS[table])
    pq.write_table(
        data,
        sink,
        row_group_size=row_group_rows or COMPACTED_ROW_GROUP_ROWS,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        use_dictionary=list(DICTIONARY_COLUMNS[table]),
        write_statistics=True,
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
        sorting_columns=[pq.SortingColumn(data.schema.get_field_index(k)) for k in keys],
        write_page_index=True,
        bloom_filter_options={
            column: {"ndv": max(1024, data.num_rows), "fpp": BLOOM_FPP} for column in BLOOM_COLUMNS[table]
        },
    )
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class CompactedDay:
    table: str
    day: str
    files: dict[str, bytes]  # file name -> content (compacted files, then the manifest)
    rows: int
    intervals: dict[str, int]


def build_compacted_day(table: str, day: str, rows: pa.Table, intervals: Mapping[str, int], *, now: datetime | None = None) -> CompactedDay:
    """The files of a compacted day for ``rows`` (any order), with its manifest."""
    day = day_of(day)
    rows = sort_for_queries(table, conform(table, rows))
    token = uuid.uuid4().hex[:12]
    files: dict[str, bytes] = {}
    file_rows: dict[str, int] = {}
    chunks = range(0, max(rows.num_rows, 1), MAX_FILE_ROWS)
    for index, offset in enumerate(chunks):
        name = f"{COMPACTED_PREFIX}{token}-{index:03d}{PARQUET_SUFFIX}"
        part = rows.slice(offset, MAX_FILE_ROWS)
        files[name] = compacted_parquet_bytes(table, part)
        file_rows[name] = part.num_rows
    manifest = {
        "format": MANIFEST_FORMAT,
        "table": table,
        "date": day,
        "rows": rows.num_rows,
        "files": file_rows,
        "intervals": dict(sorted(intervals.items())),
        "sort_keys": list(SORT_KEYS[table]),
        "row_group_rows": COMPACTED_ROW_GROUP_ROWS,
        "compacted_at": (now or datetime.now(timezone.utc)).isoformat(),
    }
    files[MANIFEST_NAME] = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    return CompactedDay(table=table, day=day, files=files, rows=rows.num_rows, intervals=dict(intervals))


# --------------------------------------------------------------------------- locks


def day_lock_name(day: date | datetime | str) -> str:
    """The lake lock (mde_pipeline.lake.locks) that guards one day's files, both tables."""
    return f"date={day_of(day)}"


@contextmanager
def day_lock(location: LakeLocation, day: date | datetime | str) -> Iterator[None]:
    """Exclusive right to change one day's files (both tables), across processes and hosts.

    The lake's own lock (``locks.lake_lock``: flock on a local lake, a renewed blob lease
    on abfs) under the name ``date=YYYY-MM-DD``. Not reentrant: take it once per change.
    """
    with lake_lock(location, day_lock_name(day)):
        yield


# --------------------------------------------------------------------------- swapping


def _staging_path(location: LakeLocation, table: str, day: str, *parts: str) -> str:
    return location.path(STAGING_DIR, table, f"date={day}", *parts)


def _renameat2_exchange(source: str, target: str) -> bool:
    """Swap two paths atomically; False where the platform cannot (caller falls back)."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), source)


def _fsync_tree(directory: str) -> None:
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as handle:
            os.fsync(handle.fileno())
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Seam for the crash tests: called between the steps of a swap.
def _swap_checkpoint(step: str) -> None:
    return None


def _swap_local(location: LakeLocation, built: CompactedDay) -> None:
    live = location.path(day_directory(built.table, built.day))
    token = uuid.uuid4().hex[:12]
    new = _staging_path(location, built.table, built.day, f"{token}.new")
    old = _staging_path(location, built.table, built.day, f"{token}.old")
    os.makedirs(new)
    try:
        for name, content in built.files.items():
            with open(os.path.join(new, name), "xb") as handle:
                handle.write(content)
        _fsync_tree(new)
        _swap_checkpoint("staged")
        if not os.path.exists(live):
            os.makedirs(os.path.dirname(live), exist_ok=True)
            os.rename(new, live)
        elif _renameat2_exchange(new, live):
            os.rename(new, old)  # `new` now names the previous day; keep it out of the way
        else:
            log.warning("renameat2(RENAME_EXCHANGE) is not available here: swapping %s with two renames", live)
            os.rename(live, old)
            _swap_checkpoint("live moved aside")
            os.rename(new, live)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    _swap_checkpoint("swapped")
    shutil.rmtree(old, ignore_errors=True)
    _remove_empty_staging(location, built.table, built.day)


def _remove_empty_staging(location: LakeLocation, table: str, day: str) -> None:
    path = _staging_path(location, table, day)
    if location.is_local:
        with suppress(OSError):
            os.rmdir(path)


def _swap_blob(location: LakeLocation, built: CompactedDay, current: DayFiles) -> None:
    token = uuid.uuid4().hex[:12]
    staged = _staging_path(location, built.table, built.day, token)
    # Stage every file, the manifest last: a complete staged manifest is the marker
    # recover_day trusts to finish an interrupted swap.
    write_files_atomic(location, {f"{STAGING_DIR}/{built.table}/date={built.day}/{token}/{n}": c for n, c in built.files.items()})
    _swap_checkpoint("staged")
    _finish_blob_swap(location, built.table, built.day, staged, current)


def _finish_blob_swap(location: LakeLocation, table: str, day: str, staged: str, current: DayFiles) -> None:
    fs = location.fs
    staged_names = [_base(p) for p in fs.ls(staged, detail=False)]
    # Old files go first so no reader sees old and new rows together; the manifest goes
    # last so the day never looks compacted without its data.
    for path in current.live_files:
        if _base(path) not in staged_names:
            with suppress(FileNotFoundError):
                fs.rm_file(path)
        _swap_checkpoint("deleting")
    ordered = sorted(staged_names, key=lambda n: n == MANIFEST_NAME)
    directory = location.path(day_directory(table, day))
    for name in ordered:
        fs.pipe_file(f"{directory}/{name}", fs.cat_file(f"{staged}/{name}"), overwrite=True)
    _swap_checkpoint("swapped")
    fs.rm(staged, recursive=True)
    fs.invalidate_cache()


def recover_day(location: LakeLocation, table: str, day: str) -> None:
    """Finish or discard an interrupted swap of one day (call under the day's lock).

    Local: the live directory is always complete (the swap is one exchange); leftovers
    are removed, and a day left absent by the two-rename fallback is put back. abfs: a
    staged day with its manifest is finished; an incomplete one is discarded.
    """
    day = day_of(day)
    fs = location.fs
    fs.invalidate_cache()
    root = _staging_path(location, table, day)
    try:
        entries = sorted(fs.ls(root, detail=False))
    except FileNotFoundError:
        return
    # The day may change below; an index built from its half-swapped state must go.
    _invalidate_ip_index(location, table, day)
    live = location.path(day_directory(table, day))
    if location.is_local:
        if not os.path.exists(live):
            complete = [p for p in entries if p.endswith(".new") and os.path.exists(os.path.join(p, MANIFEST_NAME))]
            previous = [p for p in entries if p.endswith(".old")]
            if complete or previous:
                source = complete[-1] if complete else previous[-1]
                log.warning("restoring %s from %s after an interrupted swap", live, source)
                os.rename(source, live)
        for path in entries:
            shutil.rmtree(path, ignore_errors=True)
        _remove_empty_staging(location, table, day)
        return
    for staged in entries:
        names = [_base(p) for p in fs.ls(staged, detail=False)]
        if MANIFEST_NAME in names:
            log.warning("finishing the interrupted compaction of %s from %s", live, staged)
            _finish_blob_swap(location, table, day, staged, list_day(location, table, day))
        else:
            fs.rm(staged, recursive=True)
    fs.invalidate_cache()


def _invalidate_ip_index(location: LakeLocation, table: str, day: str) -> None:
    # Imported here: ip_index builds on this module's day files and locks.
    from mde_pipeline.lake.ip_index import INDEXED_TABLE, invalidate_covering

    if table == INDEXED_TABLE:
        invalidate_covering(location, day)


def _replace_day(location: LakeLocation, built: CompactedDay, current: DayFiles) -> None:
    _invalidate_ip_index(location, built.table, built.day)
    if location.is_local:
        _swap_local(location, built)
    else:
        _swap_blob(location, built, current)


# --------------------------------------------------------------------------- operations


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
    if table not in SCHEMAS:
        raise LakeSchemaError(f"unknown lake table {table!r}")
    if lock:
        with day_lock(location, day):
            return compact_day(location, table, day, lock=False)
    started = time.perf_counter()
    recover_day(location, table, day)
    current = list_day(location, table, day)
    if not current.interval_files:
        action = "unchanged" if current.is_compacted else "empty"
        return CompactionResult(table, day, action)
    rows, intervals = read_day(location, current)
    _check_day(table, day, rows)
    built = build_compacted_day(table, day, rows, intervals)
    _replace_day(location, built, current)
    result = CompactionResult(
        table, day, "compacted", rows=built.rows, intervals=len(intervals),
        source_files=len(current.interval_files) + len(current.compacted_files), seconds=time.perf_counter() - started,
    )
    log.info("compacted %s %s: %d files -> %d, %d rows, %.2f s", table, day, result.source_files,
             len(built.files) - 1, result.rows, result.seconds)
    return result


def _check_day(table: str, day: str, rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    days = pc.unique(pc.strftime(rows.column("interval_start"), format="%Y-%m-%d", locale="C")).to_pylist()
    if days != [day]:
        raise CompactionError(f"{table} {day}: rows of intervals on other days {days[:3]}")
    keys = list(ROW_KEYS[table])
    if rows.group_by(keys).aggregate([]).num_rows != rows.num_rows:
        raise CompactionError(f"{table} {day}: duplicate rows for key {keys}")


def publish_interval_into_compacted_day(
    location: LakeLocation, table: str, interval_start: datetime | str, data: pa.Table, *, lock: bool = True
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
            return publish_interval_into_compacted_day(location, table, start, data, lock=False)
    data = conform(table, data)
    _check_owned(table, data, key)
    recover_day(location, table, day)
    current = list_day(location, table, day)
    if not current.is_compacted:
        raise CompactionError(f"{table} {day} is not compacted: commit the interval file instead")
    current.interval_files.pop(key, None)  # a stray file of this interval is replaced too
    rows, intervals = read_day(location, current)
    if rows.num_rows:
        keys = pc.strftime(rows.column("interval_start"), format="%Y%m%dT%H", locale="C")
        rows = rows.filter(pc.not_equal(keys, key))
    rows = pa.concat_tables([rows, data])
    intervals[key] = data.num_rows
    _check_day(table, day, rows)
    built = build_compacted_day(table, day, rows, intervals)
    current_with_stray = list_day(location, table, day)
    _replace_day(location, built, current_with_stray)
    log.info("republished interval %s into compacted %s %s (%d rows)", key, table, day, data.num_rows)
    first = next(iter(built.files))
    return location.uri(day_directory(table, day), first)


def commit_interval_files(
    location: LakeLocation, interval_start: datetime | str, tables: Mapping[str, pa.Table], files: Mapping[str, bytes]
) -> dict[str, str]:
    """The writer's commit step, aware of compacted days (called by writer.commit_interval).

    Under the day's lock: a table whose day is compacted gets the interval published
    into the compacted file; the others get their interval file written atomically as
    before. ``tables`` are the checked tables by name, ``files`` their serialised interval
    files by relative path (``writer.interval_file``). Returns relative path -> uri.
    """
    start = interval_start_of(interval_start)
    written: dict[str, str] = {}
    with day_lock(location, partition_date(start)):
        plain = dict(files)
        for name, data in tables.items():
            relative = interval_file(name, start)
            if is_compacted_day(location, name, start):
                plain.pop(relative, None)
                written[relative] = publish_interval_into_compacted_day(location, name, start, data, lock=False)
        if plain:
            for name in tables:
                if interval_file(name, start) in plain:
                    _invalidate_ip_index(location, name, partition_date(start))
            written.update(write_files_atomic(location, plain))
    return {relative: written[relative] for relative in files}


def read_compacted_interval(location: LakeLocation, table: str, interval_start: datetime | str) -> pa.Table | None:
    """One interval's rows from a compacted day; None when the day or interval is absent.

    The counterpart of ``writer.read_interval`` for compacted days.
    """
    start = interval_start_of(interval_start)
    current = list_day(location, table, partition_date(start))
    if not current.is_compacted:
        return None
    key = interval_key(start)
    if key not in (current.manifest or {}).get("intervals", {}):
        return None
    rows, _ = read_day(location, current)
    keys = pc.strftime(rows.column("interval_start"), format="%Y%m%dT%H", locale="C")
    return rows.filter(pc.equal(keys, key))


# --------------------------------------------------------------------------- closed days


def days_with_interval_files(location: LakeLocation, table: str) -> list[str]:
    """Days of ``table`` that still have hourly files, sorted."""
    fs = location.fs
    fs.invalidate_cache()
    days = set()
    for path in fs.glob(location.path(table, "date=*", f"interval=*{PARQUET_SUFFIX}")):
        with suppress(LakeSchemaError):
            days.add(partition_date(parse_interval_file(path)))
    return sorted(days)


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
    """Compact both tables of every day that ended ``grace`` before ``closed_before``."""
    results = []
    for day in closed_days(location, closed_before=closed_before - grace, quiet_period=quiet_period, now=now):
        with day_lock(location, day):
            for table in SCHEMAS:
                results.append(compact_day(location, table, day, lock=False))
    return results


def run_compaction(
    *,
    closed_before: datetime,
    root: str | None = None,
    conn_id: str | None = None,
    grace: timedelta = DEFAULT_GRACE,
    quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
) -> dict[str, Any]:
    """What the compaction DAG's task does: compact closed days, then bring the IP index up to date.

    Returns a summary for the task's XCom and log: one entry per (day, table) looked at
    and the months whose IP index was (re)built.
    """
    from mde_pipeline.lake.ip_index import index_months
    from mde_pipeline.lake.location import resolve_lake_location

    location = resolve_lake_location(root, conn_id)
    moment = datetime.fromtimestamp(closed_before.timestamp(), timezone.utc)
    results = compact_closed_days(location, closed_before=moment, grace=grace, quiet_period=quiet_period)
    indexed = [index.month for index in index_months(location)]
    log.info(
        "lake %s: %d table-days compacted (closed before %s), IP index built for %s",
        location.url, sum(r.action == "compacted" for r in results), (moment - grace).isoformat(), indexed or "no month",
    )
    return {
        "days": [
            {"day": r.day, "table": r.table, "action": r.action, "rows": r.rows, "intervals": r.intervals,
             "source_files": r.source_files, "seconds": round(r.seconds, 3)}
            for r in results
        ],
        "indexed_months": indexed,
    }
