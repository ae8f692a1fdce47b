"""Staging area of the DAG: what one run of one interval hands from task to task.

``<root>/_staging/<YYYYMMDDTHH>/<run id, sanitised>/<name>.json`` (layout.staging_path).
The leading underscore keeps it out of every reader (table globs start at
``<root>/<table>/``; Spark, Trino and Hive skip ``_`` folders anyway). Each run of an
interval has its own folder, so a backfill and a scheduled run of the same hour never
read each other's documents; files are written atomically like lake files, so a retried
task replaces its own output whole.

A successful publish removes its run's folder. A run that failed for good leaves its
staged listing (user names, hosts, comments): :func:`sweep_staging`, run by every
compaction run, removes run folders whose newest file is older than
``STAGING_MAX_AGE`` (7 days; ``MDE_STAGING_MAX_AGE_DAYS``), so a failed run can still be
cleared and rerun within a week, and nothing personal lingers beyond it.
:func:`staged_intervals` tells the fetch-cache sweep which hours still have a run that
may publish (lake.fetch_cache). The compaction step sweeps every ``tenant_id=`` folder
under ``_staging/`` (lake.sweeps), also of tenants that never committed or were removed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timedelta
from typing import Any

from mde_pipeline.lake.layout import JSON_SUFFIX, STAGING_DIR, base_name, file_mtime, parse_interval_key, staging_path
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.storage import write_files_atomic

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
STAGING_MAX_AGE = timedelta(days=7)

log = logging.getLogger(__name__)


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


def clear_staging(
    location: LakeLocation, interval_start: datetime | str, run_id: str | None = None, *, keep: tuple[str, ...] = ()
) -> None:
    """Remove a run's staging folder, or with ``run_id=None`` every run's of the interval.

    ``keep`` (document names, with ``run_id`` only): remove the run's other documents
    and keep these, so the run folder never disappears meanwhile (the fetch-cache sweep
    keeps the hours of every staged run)."""
    directory = location.path(staging_path(interval_start, run_id))
    fs = location.fs
    fs.invalidate_cache()
    if keep:
        if run_id is None:
            raise ValueError("keep= needs a run_id")
        kept = {_file_name(name) for name in keep}
        try:
            names = [info["name"] for info in fs.ls(directory, detail=True)]
        except FileNotFoundError:
            names = []
        for name in names:
            if base_name(name) not in kept:
                try:
                    fs.rm(name, recursive=True)
                except FileNotFoundError:
                    pass
        fs.invalidate_cache()
        return
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


def sweep_staging(location: LakeLocation, older_than: timedelta = STAGING_MAX_AGE, now: float | None = None) -> list[str]:
    """Remove every run folder ``_staging/<interval>/<run>/`` whose newest file is older
    than ``older_than`` (left by failed runs); returns their uris. ``_staging/compaction``
    is not a run's: days.recover_interrupted_swaps owns it."""
    fs = location.fs
    fs.invalidate_cache()
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    removed = []
    for interval in _listing(fs, location.path(STAGING_DIR)):
        try:
            parse_interval_key(base_name(interval["name"]))
        except ValueError:
            continue  # compaction/ and anything else that is not an interval folder
        for run in _listing(fs, interval["name"]):
            times = [file_mtime(info) for info in fs.find(run["name"], detail=True).values()]
            newest = max((t for t in times if t is not None), default=None)
            if newest is None or newest < cutoff:
                try:
                    fs.rm(run["name"], recursive=True)
                except FileNotFoundError:
                    continue
                removed.append(location.uri(STAGING_DIR, base_name(interval["name"]), base_name(run["name"])))
        if location.is_local and not _listing(fs, interval["name"]):
            try:
                fs.rmdir(interval["name"])
            except OSError:
                pass
    fs.invalidate_cache()
    if removed:
        log.info("swept %d staging folders of failed runs older than %s", len(removed), older_than)
    return removed


def staged_intervals(location: LakeLocation) -> list[datetime]:
    """The intervals (hour starts, sorted) with at least one run folder in the location's
    staging: runs still going, and failed ones that may be cleared and rerun until
    :func:`sweep_staging` removes them."""
    fs = location.fs
    fs.invalidate_cache()
    found = []
    for interval in _listing(fs, location.path(STAGING_DIR)):
        try:
            start = parse_interval_key(base_name(interval["name"]))
        except ValueError:
            continue
        if _listing(fs, interval["name"]):
            found.append(start)
    return sorted(found)


def _listing(fs: Any, path: str) -> list[dict[str, Any]]:
    try:
        return [info for info in fs.ls(path, detail=True) if info.get("type") == "directory"]
    except FileNotFoundError:
        return []
