"""The recent IP index: one IP-sorted file of the ``alert_ips`` days still in hourly files.

Why: the month index (ip_index.py) covers compacted days only, so between two compaction
runs today's and yesterday's hours (up to ~51 hourly files per table) are read file by
file, and an IP lookup over 180 days is 2-3x the floor instead of 1.3-1.7x
(bench/lake_queries.py). This index holds the same rows as those hourly days in one
IP-sorted file, so a lookup opens the month files, this file, and nothing else.

Layout (under ``_ip_index``: no table glob sees it; a ``month=`` folder, so the analyst
session reads it in the same scan as the month files)::

    <root>/_ip_index/T/month=recent/alert_ips-<token>.parquet
    <root>/_ip_index/T/month=recent/_index.json  {"format", "file", "rows", "days": {day: {name: version}}}

Coverage: the newest ``RECENT_DAYS`` day directories of the tenant's ``alert_ips`` that
hold an hourly file (a day with an hourly file is never covered by a valid month index,
so the two never overlap). Each covered day is named with *every* ``*.parquet`` file in
it and that file's version (:func:`file_version`: the ETag on a blob lake; size, mtime
and inode on a local one, so a file replaced under the same name is told apart).

Validity (:func:`valid_recent_index`): used only while every covered day holds exactly
the files, at exactly the versions, the manifest names, and the index file exists. Any
hourly commit into a covered day (a new hour, a rerun, a look-back) or a compaction of
it makes it invalid at once, with no writer having to drop it; readers then read those
days from their files until the next build. So a stale, old or half-written recent
index is never wrong, only not used.

Builds (:func:`build_recent_index`) run after each hourly publish and in the compaction
DAG's index step, one at a time per tenant (a lake lock), and take no day lock: a commit
that lands while the build reads gives a manifest that no longer matches (not used), and
that commit's own publish builds again. The cost is bounded by ``RECENT_DAYS`` days of
rows read and one file written; skipped when the manifest already matches the lake.

Write order (a multi-step write, docs/DESIGN.md "The recent IP index"): the new index
file, then the manifest naming it (the switch), then the old files removed. A kill
before the manifest leaves an unnamed file (removed by the next build); after it,
leftovers of the old index (removed by the next build).
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass

import pyarrow as pa

from mde_pipeline.lake.layout import (
    INDEX_MANIFEST,
    INTERVAL_PREFIX,
    PARQUET_SUFFIX,
    RECENT_INDEX_DIR,
    base_name,
    day_directory,
    index_file_name,
    table_days,
)
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import lake_lock
from mde_pipeline.lake.parquet import parquet_bytes, read_parquet, sort_for_queries
from mde_pipeline.lake.schema import ALERT_IPS, conform
from mde_pipeline.lake.storage import write_files_atomic

INDEXED_TABLE = ALERT_IPS
RECENT_FORMAT = 1
# Day directories looked at, newest first: today and yesterday, plus the day before for
# the hours between midnight and the compaction run. A lake whose compaction stopped
# keeps older hourly days out (read from their files): the cost per build stays bounded.
RECENT_DAYS = 3
ROW_GROUP_ROWS = 16 * 1024  # as the month index: min/max skip most of it for a busy IP
LOCK_NAME = "recent_ip_index"
LOCK_TIMEOUT_SECONDS = 120.0

log = logging.getLogger(__name__)


def recent_index_checkpoint(step: str) -> None:
    """Called between the steps of a build: the seam of the kill tests."""
    return None


@dataclass(frozen=True)
class RecentIndex:
    uri: str  # the index file, as readers open it
    days: tuple[str, ...]
    rows: int


def file_version(info: dict) -> str:
    """What tells two writes of one file name apart: the ETag (blob), else size, mtime, inode."""
    etag = info.get("etag")
    if etag:
        return str(etag)
    return f"{info.get('size')}:{info.get('mtime')}:{info.get('ino')}"


def day_file_versions(location: LakeLocation, day: str) -> dict[str, str] | None:
    """``name -> version`` of every file a reader's ``date=<day>/*.parquet`` glob sees
    (one listing); None when the day has no directory."""
    entries = location.list_dir(day_directory(INDEXED_TABLE, day), detail=True)
    if entries is None:
        return None
    return {
        e["name"]: file_version(e)
        for e in entries
        if e.get("type") != "directory" and e["name"].endswith(PARQUET_SUFFIX)
    }


def recent_days(location: LakeLocation) -> dict[str, dict[str, str]]:
    """``day -> {name: version}`` of the days the recent index should cover now: of the
    newest ``RECENT_DAYS`` day directories, those holding an hourly file."""
    location.fs.invalidate_cache()
    days = {}
    for day in table_days(location, INDEXED_TABLE)[-RECENT_DAYS:]:
        files = day_file_versions(location, day)
        if files and any(name.startswith(INTERVAL_PREFIX) for name in files):
            days[day] = files
    return days


def read_manifest(location: LakeLocation) -> dict | None:
    try:
        manifest = json.loads(location.fs.cat_file(location.path(RECENT_INDEX_DIR, INDEX_MANIFEST)))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable (never half-written, but hand-edited): never used
    return manifest if isinstance(manifest, dict) else {}


def _index_entries(location: LakeLocation) -> list[str]:
    location.fs.invalidate_cache()
    try:
        return location.fs.ls(location.path(RECENT_INDEX_DIR), detail=False)
    except FileNotFoundError:
        return []


def _is_current(location: LakeLocation, manifest: dict | None, days: dict[str, dict[str, str]]) -> bool:
    return (
        bool(manifest)
        and manifest.get("format") == RECENT_FORMAT
        and manifest.get("days") == days
        and location.fs.exists(location.path(RECENT_INDEX_DIR, str(manifest.get("file"))))
    )


def drop_recent_index(location: LakeLocation) -> bool:
    """Remove the recent index, manifest first (readers stop trusting the file)."""
    entries = _index_entries(location)
    manifest = [p for p in entries if base_name(p) == INDEX_MANIFEST]
    for path in manifest + [p for p in entries if p not in manifest]:
        with suppress(FileNotFoundError):
            location.fs.rm_file(path)
    if location.is_local:
        with suppress(OSError):
            location.fs.rmdir(location.path(RECENT_INDEX_DIR))
    location.fs.invalidate_cache()
    return bool(entries)


def _remove_leftovers(location: LakeLocation, current: str) -> None:
    """Every file of the index folder but the manifest and the file it names."""
    for path in _index_entries(location):
        if base_name(path) not in (current, INDEX_MANIFEST):
            with suppress(FileNotFoundError):
                location.fs.rm_file(path)
    location.fs.invalidate_cache()


def build_recent_index(location: LakeLocation, *, force: bool = False) -> RecentIndex | None:
    """Bring the tenant's recent index in line with its recent hourly days; the index
    (None when no recent day has an hourly file). Nothing is written when the manifest
    already matches the lake (unless ``force``)."""
    with lake_lock(location, LOCK_NAME, timeout=LOCK_TIMEOUT_SECONDS):
        days = recent_days(location)
        manifest = read_manifest(location)
        if not days:
            if manifest is not None or _index_entries(location):
                drop_recent_index(location)
            return None
        if not force and _is_current(location, manifest, days):
            _remove_leftovers(location, manifest["file"])  # of a build killed after its manifest
            return RecentIndex(location.uri(RECENT_INDEX_DIR, manifest["file"]), tuple(sorted(days)), int(manifest.get("rows", 0)))
        # Versions listed before the read: a file replaced meanwhile makes the manifest
        # name a version the lake no longer holds, so readers never use this index.
        parts = [
            conform(INDEXED_TABLE, read_parquet(location, location.path(day_directory(INDEXED_TABLE, day), name)))
            for day, files in sorted(days.items())
            for name in sorted(files)
        ]
        rows = sort_for_queries(INDEXED_TABLE, pa.concat_tables(parts))
        content = parquet_bytes(INDEXED_TABLE, rows, row_group_rows=ROW_GROUP_ROWS, sorted_for_queries=True)
        name = index_file_name(INDEXED_TABLE, uuid.uuid4().hex[:12])
        write_files_atomic(location, {f"{RECENT_INDEX_DIR}/{name}": content})
        recent_index_checkpoint("index written")
        body = {"format": RECENT_FORMAT, "file": name, "rows": rows.num_rows, "bytes": len(content), "days": days}
        write_files_atomic(location, {f"{RECENT_INDEX_DIR}/{INDEX_MANIFEST}": json.dumps(body, indent=1, sort_keys=True).encode()})
        recent_index_checkpoint("manifest written")
        _remove_leftovers(location, name)
    log.info("built the recent IP index: %s, %d rows, %d bytes", sorted(days), rows.num_rows, len(content))
    return RecentIndex(location.uri(RECENT_INDEX_DIR, name), tuple(sorted(days)), rows.num_rows)


def refresh_recent_index(location: LakeLocation) -> RecentIndex | None:
    """:func:`build_recent_index` as a publish step runs it: a derived accelerator, so a
    failure is logged and never fails (or undoes) the commit it follows."""
    try:
        return build_recent_index(location)
    except Exception as exc:  # noqa: BLE001 - readers fall back to the day files
        log.warning("the recent IP index of %s was not rebuilt (%s: %s); readers use the day files",
                    location.url, type(exc).__name__, exc)  # fmt: skip
        return None


def valid_recent_index(location: LakeLocation) -> RecentIndex | None:
    """The tenant's recent index if it matches the lake right now, else None."""
    manifest = read_manifest(location)
    days = (manifest or {}).get("days")
    if not manifest or manifest.get("format") != RECENT_FORMAT or not isinstance(days, dict) or not days:
        return None
    location.fs.invalidate_cache()
    for day, files in days.items():
        if day_file_versions(location, day) != files:
            log.info("the recent IP index of %s is stale (%s changed): not used", location.url, day)
            return None
    if not location.fs.exists(location.path(RECENT_INDEX_DIR, str(manifest.get("file")))):
        return None
    return RecentIndex(location.uri(RECENT_INDEX_DIR, manifest["file"]), tuple(sorted(days)), int(manifest.get("rows", 0)))


def recent_state(location: LakeLocation) -> tuple:
    """What a reader's recent-index view depends on: the manifest's file and the current
    versions of the days it names (a manifest read and one listing per day)."""
    manifest = read_manifest(location)
    if not manifest or not isinstance(manifest.get("days"), dict):
        return (None,)
    location.fs.invalidate_cache()
    versions = tuple((day, tuple(sorted((day_file_versions(location, day) or {}).items()))) for day in sorted(manifest["days"]))
    return (manifest.get("file"), versions)
