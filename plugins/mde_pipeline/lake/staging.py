"""Staging area of the DAG: what one run of one interval hands from task to task.

``<root>/_staging/<YYYYMMDDTHH>/<run id, sanitised>/<name>.parquet`` (or ``.json``).
The leading underscore keeps it out of every reader (table globs start at
``<root>/<table>/``; Spark, Trino and Hive skip ``_`` folders anyway). Each run of an
interval has its own folder, so a backfill and a scheduled run of the same hour never
read each other's batches; files are written atomically like lake files, so a retried
task replaces its own output whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

import pyarrow as pa

from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.writer import interval_key, parquet_bytes, read_parquet, write_files_atomic

STAGING_DIR = "_staging"
PARQUET, JSON = ".parquet", ".json"

_SAFE = re.compile(r"[A-Za-z0-9-]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_SEGMENT = 120


class StagingNotFoundError(FileNotFoundError):
    """A staged file that the run expected is not there."""


def sanitize_run_id(run_id: str) -> str:
    """``run_id`` as one safe path segment, one-to-one for ids Airflow can produce.

    Letters, digits and ``-`` stay; every other byte (``:``, ``+``, ``.``, ``_``, ``/``,
    non-ASCII) becomes ``_XX`` (hex). Escaping ``_`` itself keeps the mapping
    injective: ``a:b`` and ``a_b`` never share a folder. Very long ids are cut and get
    a hash suffix (path segments are limited to 255 bytes on most filesystems).
    """
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    encoded = "".join(
        char if _SAFE.fullmatch(char) else "".join(f"_{byte:02X}" for byte in char.encode("utf-8")) for char in run_id
    )
    if len(encoded) > _MAX_SEGMENT:
        digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16]
        encoded = f"{encoded[: _MAX_SEGMENT - 17]}-{digest}"
    return encoded


def staging_path(interval_start: datetime | str, run_id: str | None = None, file_name: str | None = None) -> str:
    """Path relative to the lake root of an interval's (or a run's) staging folder or file."""
    parts = [STAGING_DIR, interval_key(interval_start)]
    if run_id is not None:
        parts.append(sanitize_run_id(run_id))
    if file_name is not None:
        parts.append(file_name)
    return "/".join(parts)


def _file_name(name: str, suffix: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"staging name must match {_NAME.pattern}, got {name!r}")
    return f"{name}{suffix}"


def write_staging(location: LakeLocation, interval_start: datetime | str, run_id: str, name: str, table: pa.Table) -> str:
    """Stage a table (any schema) for this run; replaces an earlier one of the same name."""
    relative = staging_path(interval_start, run_id, _file_name(name, PARQUET))
    return write_files_atomic(location, {relative: parquet_bytes(table)})[relative]


def read_staging(location: LakeLocation, interval_start: datetime | str, run_id: str, name: str) -> pa.Table:
    relative = staging_path(interval_start, run_id, _file_name(name, PARQUET))
    try:
        return read_parquet(location, relative)
    except FileNotFoundError:
        raise StagingNotFoundError(f"staged table {name!r} of run {run_id!r} not found at {location.uri(relative)}") from None


def write_staging_json(location: LakeLocation, interval_start: datetime | str, run_id: str, name: str, value: Any) -> str:
    """Stage a JSON document (e.g. the raw listed alerts) for this run."""
    relative = staging_path(interval_start, run_id, _file_name(name, JSON))
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return write_files_atomic(location, {relative: data})[relative]


def read_staging_json(location: LakeLocation, interval_start: datetime | str, run_id: str, name: str) -> Any:
    relative = staging_path(interval_start, run_id, _file_name(name, JSON))
    path = location.path(relative)
    location.fs.invalidate_cache()
    try:
        data = location.fs.cat_file(path)
    except FileNotFoundError:
        raise StagingNotFoundError(f"staged document {name!r} of run {run_id!r} not found at {location.uri(relative)}") from None
    return json.loads(data)


def list_staging(location: LakeLocation, interval_start: datetime | str, run_id: str, suffix: str = PARQUET) -> list[str]:
    """Names (without suffix) staged by this run with ``suffix``, sorted."""
    directory = location.path(staging_path(interval_start, run_id))
    fs = location.fs
    fs.invalidate_cache()
    try:
        entries = fs.ls(directory, detail=False)
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        base = entry.rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(suffix) and not base.startswith("."):
            names.append(base[: -len(suffix)])
    return sorted(names)


def clear_staging(location: LakeLocation, interval_start: datetime | str, run_id: str | None = None) -> None:
    """Remove a run's staging folder, or with ``run_id=None`` every run's of the interval."""
    directory = location.path(staging_path(interval_start, run_id))
    fs = location.fs
    fs.invalidate_cache()
    try:
        fs.rm(directory, recursive=True)
    except FileNotFoundError:
        pass
    if location.is_local:
        # Drop the interval folder once its last run is gone, so _staging stays small.
        parent = location.path(staging_path(interval_start))
        try:
            if not fs.ls(parent):
                fs.rmdir(parent)
        except (FileNotFoundError, OSError):
            pass
    fs.invalidate_cache()
