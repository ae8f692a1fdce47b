"""Interval files and atomic writes: how data lands in the lake.

Layout (docs/DESIGN.md, "Lake")::

    <root>/<table>/date=YYYY-MM-DD/interval=YYYYMMDDTHH.parquet

One file per (table, hourly interval). The name comes from the interval alone, so a
rerun of an interval writes the same name and replaces exactly what it owns; two runs of
one interval (a backfill and a scheduled run) leave one complete file, never two.

Atomic for readers:

* local filesystem: the bytes go to a hidden temp file in the target directory
  (``.<name>.<random>.tmp``: a leading dot hides it from Spark/Trino/Hive and the
  ``.tmp`` suffix from ``*.parquet`` globs, which DuckDB applies to dot files too), are
  fsynced, and ``os.replace`` swaps it in. A crash leaves the old file (or none) plus
  at most a stray temp file, removed by a later commit once it is old.
* blob storage (abfs): every file is serialised in memory, its blocks are uploaded
  with Put Block (stored, invisible), and only then does one Put Block List per file
  make the new version visible, whole. A failed or killed upload leaves the previous
  blob. adlfs' ``open(path, "wb")`` is NOT used: closing it (which ``with`` does even
  on an exception) commits whatever was written, half a file included.

An interval's two tables are serialised, checked and fully uploaded before anything is
committed, then committed one right after the other (local: two renames; blob: two
Put Block List requests) under the day's lock (locks.py; compaction.py takes the same
one), so concurrent runs of one interval never leave one run's ``alerts`` next to
another run's ``alert_ips``. A reader can, for the moment between
the two commits, see one table's new file and the other's old one; a crash in between
is repaired by the task's retry, which rewrites both.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.schema import DICTIONARY_COLUMNS, SCHEMAS, LakeSchemaError, check_interval, conform, parse_timestamp

INTERVAL = timedelta(hours=1)
PARQUET_SUFFIX = ".parquet"
TEMP_SUFFIX = ".tmp"
# Hourly files hold one row group; compacted files many. Rows, not bytes (pyarrow's unit).
ROW_GROUP_ROWS = 128 * 1024
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
# A temp file this old belongs to a writer that died; younger ones may be in use.
STALE_TEMP_AGE = timedelta(hours=1)
_WRITE_CHUNK = 8 * 1024 * 1024
_BLOB_BLOCK = 8 * 1024 * 1024

_INTERVAL_FILE = re.compile(r"interval=(\d{8}T\d{2})\.parquet")

log = logging.getLogger(__name__)


class LakeWriteError(RuntimeError):
    """Writing to the lake failed; what was committed before stays as it was."""


@dataclass(frozen=True)
class CommittedInterval:
    interval_start: datetime
    files: dict[str, str]  # table -> uri of the committed file
    rows: dict[str, int]  # table -> row count


# --------------------------------------------------------------------------- naming


def interval_start_of(value: datetime | str) -> datetime:
    """``value`` as a UTC datetime on a whole hour (an interval start), or an error."""
    moment = parse_timestamp(value, field="interval_start")
    if moment is None:
        raise LakeSchemaError("interval_start is required")
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
        raise LakeSchemaError(f"interval_start {moment.isoformat()} is not on a whole hour")
    return moment


def interval_key(interval_start: datetime | str) -> str:
    """``YYYYMMDDTHH`` (UTC) of an interval: its file name stem and staging folder."""
    return interval_start_of(interval_start).strftime("%Y%m%dT%H")


def parse_interval_key(key: str) -> datetime:
    """The interval start of a ``YYYYMMDDTHH`` key."""
    try:
        return datetime.strptime(key, "%Y%m%dT%H").replace(tzinfo=timezone.utc)
    except ValueError:
        raise LakeSchemaError(f"not an interval key (YYYYMMDDTHH): {key!r}") from None


def partition_date(interval_start: datetime | str) -> str:
    """The Hive partition value: the UTC date of the interval start."""
    return interval_start_of(interval_start).strftime("%Y-%m-%d")


def interval_file(table: str, interval_start: datetime | str) -> str:
    """``<table>/date=YYYY-MM-DD/interval=YYYYMMDDTHH.parquet``, relative to the root."""
    if table not in SCHEMAS:
        raise LakeSchemaError(f"unknown lake table {table!r}")
    start = interval_start_of(interval_start)
    return f"{table}/date={partition_date(start)}/interval={interval_key(start)}{PARQUET_SUFFIX}"


def parse_interval_file(name: str) -> datetime:
    """The interval start of an interval file's name (or path); an error for other files."""
    match = _INTERVAL_FILE.fullmatch(name.rsplit("/", 1)[-1])
    if not match:
        raise LakeSchemaError(f"not an interval file name: {name!r}")
    return parse_interval_key(match.group(1))


# --------------------------------------------------------------------------- parquet


def parquet_bytes(
    table: pa.Table,
    *,
    dictionary_columns: tuple[str, ...] | bool = (),
    row_group_rows: int = ROW_GROUP_ROWS,
    sorting_columns: list[pq.SortingColumn] | None = None,
) -> bytes:
    """The whole Parquet file for ``table``, with the lake's settings, in memory."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_rows,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        use_dictionary=list(dictionary_columns) if not isinstance(dictionary_columns, bool) else dictionary_columns,
        write_statistics=True,
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
        sorting_columns=sorting_columns,
    )
    return sink.getvalue().to_pybytes()


def lake_parquet_bytes(table_name: str, table: pa.Table, **options: Any) -> bytes:
    """``parquet_bytes`` of a table checked against its lake schema."""
    return parquet_bytes(conform(table_name, table), dictionary_columns=DICTIONARY_COLUMNS[table_name], **options)


# --------------------------------------------------------------------------- atomic writes


def write_files_atomic(location: LakeLocation, files: Mapping[str, bytes]) -> dict[str, str]:
    """Write each ``relative path -> bytes`` so that readers see the old file or the new one.

    All files are prepared first (local) and committed back to back. Returns
    ``relative path -> uri``.
    """
    if location.is_local:
        return _write_local(location, files)
    return _write_blob(location, files)


def _open_new_file(path: str) -> IO[bytes]:
    # Seam for the crash tests: they swap it for a file that dies halfway.
    return open(path, "xb")


def _write_local(location: LakeLocation, files: Mapping[str, bytes]) -> dict[str, str]:
    prepared: list[tuple[str, str]] = []  # (temp path, final path)
    try:
        for relative, data in files.items():
            final = location.path(relative)
            directory, name = os.path.split(final)
            os.makedirs(directory, exist_ok=True)
            temp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
            prepared.append((temp, final))
            with _open_new_file(temp) as handle:
                view = memoryview(data)
                for offset in range(0, len(view), _WRITE_CHUNK):
                    handle.write(view[offset : offset + _WRITE_CHUNK])
                handle.flush()
                os.fsync(handle.fileno())
        for temp, final in prepared:
            os.replace(temp, final)
    except BaseException:
        for temp, _ in prepared:
            with suppress(FileNotFoundError):
                os.unlink(temp)
        raise
    # The renames are durable once their directories are synced.
    for directory in {os.path.dirname(final) for _, final in prepared}:
        _fsync_directory(directory)
        remove_stale_temp_files(directory)
    return {relative: location.uri(relative) for relative in files}


def _fsync_directory(directory: str) -> None:
    with suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temp_files(directory: str, older_than: timedelta = STALE_TEMP_AGE, now: float | None = None) -> list[str]:
    """Remove temp files of dead writers (local lake) from one directory."""
    removed = []
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    with suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                with suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.path)
    if removed:
        log.info("removed %d stale temp files in %s", len(removed), directory)
    return removed


def _write_blob(location: LakeLocation, files: Mapping[str, bytes]) -> dict[str, str]:
    from fsspec.asyn import sync

    fs: Any = location.fs
    items = [(location.uri(relative), location.path(relative), data) for relative, data in files.items()]
    try:
        sync(fs.loop, _stage_then_commit_blobs, fs, items)
    finally:
        fs.invalidate_cache()
    return {relative: location.uri(relative) for relative in files}


async def _stage_then_commit_blobs(fs: Any, items: list[tuple[str, str, bytes]]) -> None:
    """Put Block for every block of every file, then one Put Block List per file.

    Staged blocks are invisible to readers; each Put Block List swaps its blob whole.
    A failure while staging (the long part) changes nothing.
    """
    import base64

    from azure.storage.blob import BlobBlock

    staged = []
    for uri, path, data in items:
        container, blob = path.split("/", 1)
        client = fs.service_client.get_blob_client(container, blob)
        block_ids = []
        try:
            for offset in range(0, len(data), _BLOB_BLOCK):
                # Same-length ids for every block of a blob, as the service requires.
                block_id = base64.b64encode(uuid.uuid4().bytes).decode("ascii")
                await client.stage_block(block_id, data[offset : offset + _BLOB_BLOCK])
                block_ids.append(BlobBlock(block_id=block_id))
        except Exception as exc:
            raise LakeWriteError(f"upload of {uri} failed ({type(exc).__name__}); nothing was committed") from exc
        staged.append((uri, client, block_ids))
    for uri, client, block_ids in staged:
        try:
            # metadata as adlfs' own writes set it, so adlfs lists these as files.
            await client.commit_block_list(block_ids, metadata={"is_directory": "false"})
        except Exception as exc:
            raise LakeWriteError(f"commit of {uri} failed ({type(exc).__name__}); that file is unchanged") from exc


def write_table_atomic(location: LakeLocation, relative_path: str, table: pa.Table, **parquet_options: Any) -> str:
    """Write one Parquet file atomically (any schema); returns its uri."""
    return write_files_atomic(location, {relative_path: parquet_bytes(table, **parquet_options)})[relative_path]


# --------------------------------------------------------------------------- intervals


def commit_interval(location: LakeLocation, interval_start: datetime | str, tables: Mapping[str, pa.Table]) -> CommittedInterval:
    """Replace the files of one interval with ``tables`` (``alerts`` and ``alert_ips``).

    Both tables are checked (schema, interval ownership, no duplicates, ip counts that
    match) and serialised before anything is written; an empty table still gives a file,
    so an empty interval is told apart from a missing one. Rerunning with the same
    interval replaces both files whole.
    """
    start = interval_start_of(interval_start)
    conformed = {}
    for name in SCHEMAS:
        if name not in tables:
            raise LakeSchemaError(f"commit of interval {interval_key(start)} without table {name!r}")
        conformed[name] = conform(name, tables[name])
    extra = set(tables) - set(SCHEMAS)
    if extra:
        raise LakeSchemaError(f"unknown lake tables {sorted(extra)}")
    check_interval(conformed, start, INTERVAL)
    files = {interval_file(name, start): lake_parquet_bytes(name, data) for name, data in conformed.items()}
    # Under the day's lock (locks.py, "date=YYYY-MM-DD"): two runs of one interval commit
    # one after the other, never interleaved, and never while compaction rewrites the
    # day; an interval of an already compacted day is published into the compacted file.
    from mde_pipeline.lake.compaction import commit_interval_files  # compaction imports this module

    written = commit_interval_files(location, start, conformed, files)
    result = CommittedInterval(
        interval_start=start,
        files={name: written[interval_file(name, start)] for name in conformed},
        rows={name: data.num_rows for name, data in conformed.items()},
    )
    log.info("committed interval %s: %s", interval_key(start), ", ".join(f"{n} {r} rows" for n, r in result.rows.items()))
    return result


def read_parquet(location: LakeLocation, relative_path: str) -> pa.Table:
    """One lake file as a table; ``FileNotFoundError`` when it does not exist."""
    path = location.path(relative_path)
    if location.is_local:
        # One open file, one version: given a path, pyarrow opens it twice (footer, then
        # pages), which could pair two versions if a commit lands in between.
        with open(path, "rb") as handle:
            return pq.read_table(handle)
    location.fs.invalidate_cache()
    try:
        data = location.fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(location.uri(relative_path)) from None
    return pq.read_table(pa.BufferReader(data))


def read_interval(location: LakeLocation, table: str, interval_start: datetime | str) -> pa.Table | None:
    """The committed rows of one interval (its hourly file, or its rows in a compacted
    day), or None when the interval was never committed."""
    try:
        return read_parquet(location, interval_file(table, interval_start))
    except FileNotFoundError:
        from mde_pipeline.lake.compaction import read_compacted_interval

        return read_compacted_interval(location, table, interval_start)


def committed_intervals(location: LakeLocation, table: str) -> list[datetime]:
    """Interval starts with an hourly file of ``table``, sorted (compacted days: compaction.py)."""
    if table not in SCHEMAS:
        raise LakeSchemaError(f"unknown lake table {table!r}")
    fs = location.fs
    fs.invalidate_cache()
    pattern = location.path(table, "*", f"interval=*{PARQUET_SUFFIX}")
    starts = []
    for path in fs.glob(pattern):
        with suppress(LakeSchemaError):
            starts.append(parse_interval_file(path))
    return sorted(starts)
