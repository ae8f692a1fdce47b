"""Staging area of the DAG: what one run of one interval hands from task to task.

``<root>/_staging/<YYYYMMDDTHH>/<run id, sanitised>/<name>.json`` (layout.staging_path).
The leading underscore keeps it out of every reader (table globs start at
``<root>/<table>/``; Spark, Trino and Hive skip ``_`` folders anyway). Each run of an
interval has its own folder, so a backfill and a scheduled run of the same hour never
read each other's documents; files are written atomically like lake files, so a retried
task replaces its own output whole.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from mde_pipeline.lake.layout import JSON_SUFFIX, staging_path
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.storage import write_files_atomic

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StagingNotFoundError(FileNotFoundError):
    """A staged file that the run expected is not there."""


def _file_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"staging name must match {_NAME.pattern}, got {name!r}")
    return f"{name}{JSON_SUFFIX}"


def write_staging_json(location: LakeLocation, interval_start: datetime | str, run_id: str, name: str, value: Any) -> str:
    """Stage a JSON document (e.g. the raw listed alerts) for this run."""
    relative = staging_path(interval_start, run_id, _file_name(name))
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return write_files_atomic(location, {relative: data})[relative]


def read_staging_json(location: LakeLocation, interval_start: datetime | str, run_id: str, name: str) -> Any:
    relative = staging_path(interval_start, run_id, _file_name(name))
    path = location.path(relative)
    location.fs.invalidate_cache()
    try:
        data = location.fs.cat_file(path)
    except FileNotFoundError:
        raise StagingNotFoundError(f"staged document {name!r} of run {run_id!r} not found at {location.uri(relative)}") from None
    return json.loads(data)


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
