"""The IP index: an IP-sorted copy of each month's compacted ``alert_ips`` days.

Why: compacted days make window queries and joins fast, but an IP lookup over 180 days
still opens 180 files; DuckDB lists and opens each one even when statistics and Bloom
filters then skip all of it, several times the time of one IP-sorted file. The index
holds the same rows in one IP-sorted file per month, so the lookup opens about six
(bench/lake_queries.py has the figures).

Layout (the leading "_" keeps it out of every table glob: Spark, Trino, Synapse and the
plain DuckDB views never see it, so no row is counted twice)::

    <root>/_ip_index/month=YYYY-MM/alert_ips-<token>.parquet
    <root>/_ip_index/month=YYYY-MM/_index.json   {"file", "rows", "days": {day: [files]}}

Coverage: a month's index covers the days of the month that were compacted when it was
built, the current month included, so the 03:30 compaction run (which compacts
yesterday, then its index step calls :func:`index_months`) leaves only today's and yesterday's
hours outside it. Days it does not cover are read from their day files by the analyst
views (mde_pipeline.analytics.session).

Validity: the index is used only while every day it covers still holds exactly the
compacted files its manifest names (names carry a fresh token per rewrite) and no
hourly file. A writer about to change a covered day deletes the index first, under the
day's lock (:func:`invalidate_covering`), and readers check validity again whenever the
lake changes. It is a derived accelerator, never data: losing it costs speed only.

Row groups of 16 Ki rows: measured against 32, 64 and 128 Ki on the benchmark's 180
days, they let DuckDB skip most of each month for an IP found in every month, while a
rare IP is still settled by the Bloom filter of one row group per file.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import date, datetime

import pyarrow as pa

from mde_pipeline.lake.layout import (
    INDEX_DIR,
    INDEX_MANIFEST,
    MONTH_PREFIX,
    base_name,
    day_directory,
    day_of,
    fully_compacted_files,
    index_directory,
    index_file_name,
    month_of,
    table_days,
)
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.locks import day_lock
from mde_pipeline.lake.parquet import parquet_bytes, read_parquet, sort_for_queries
from mde_pipeline.lake.recent_index import refresh_recent_index
from mde_pipeline.lake.schema import ALERT_IPS, conform
from mde_pipeline.lake.storage import write_files_atomic
from mde_pipeline.lake.tenants import check_not_legacy, tenant_locations

INDEXED_TABLE = ALERT_IPS
INDEX_FORMAT = 2  # 1: closed months only (no partial months)
INDEX_ROW_GROUP_ROWS = 16 * 1024
_MONTH = re.compile(r"\d{4}-\d{2}")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonthIndex:
    month: str
    uri: str  # the index file, as readers open it
    days: tuple[str, ...]  # the days it covers
    rows: int


def _read_manifest(location: LakeLocation, month: str) -> dict | None:
    try:
        manifest = json.loads(location.fs.cat_file(location.path(index_directory(month), INDEX_MANIFEST)))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable: treated as covering everything, so it gets dropped
    return manifest if isinstance(manifest, dict) else {}


def _delete_index(location: LakeLocation, month: str) -> bool:
    """Delete a month's index, manifest first (readers then stop trusting the file)."""
    fs = location.fs
    directory = location.path(index_directory(month))
    fs.invalidate_cache()
    try:
        entries = fs.ls(directory, detail=False)
    except FileNotFoundError:
        return False
    manifest = [p for p in entries if base_name(p) == INDEX_MANIFEST]
    for path in manifest + [p for p in entries if p not in manifest]:
        with suppress(FileNotFoundError):
            fs.rm_file(path)
    if location.is_local:
        with suppress(OSError):
            fs.rmdir(directory)
    fs.invalidate_cache()
    log.info("dropped the IP index of %s", month)
    return bool(entries)


def invalidate_covering(location: LakeLocation, day: date | datetime | str) -> bool:
    """Drop the index of ``day``'s month if it covers ``day``; True if one was dropped.

    Called under the day's lock before any change to the day's ``alert_ips`` files. An
    index that does not cover the day (today's hours, a day compacted after the index
    was built) stays: its rows are unaffected.
    """
    day = day_of(day)
    manifest = _read_manifest(location, month_of(day))
    if manifest is None:
        # No manifest, but maybe an index file whose deletion failed after its manifest
        # went: open sessions could still be reading it.
        return _delete_index(location, month_of(day))
    days = manifest.get("days")
    if isinstance(days, dict) and day not in days:
        return False
    return _delete_index(location, month_of(day))


def _compacted_days(location: LakeLocation, month: str) -> dict[str, list[str]]:
    """``day -> compacted file names`` of every fully compacted day of the month."""
    location.fs.invalidate_cache()
    sources = {}
    for day in table_days(location, INDEXED_TABLE, month):
        names = fully_compacted_files(location, INDEXED_TABLE, day)
        if names is not None:
            sources[day] = names
    return sources


def build_month_index(location: LakeLocation, month: str) -> MonthIndex | None:
    """Write the IP-sorted copy of the month's compacted days; None if none is compacted.

    Holds the lock of every day it reads (taken in date order, so it cannot deadlock with
    a writer, which holds one day lock at a time) until the new index is in place. Days
    compacted meanwhile are simply not covered.
    """
    candidates = _compacted_days(location, month)
    with ExitStack() as stack:
        for day in candidates:
            stack.enter_context(day_lock(location, day))
        location.fs.invalidate_cache()
        sources = {day: names for day in candidates if (names := fully_compacted_files(location, INDEXED_TABLE, day)) is not None}
        if not sources:
            return None
        parts = [
            conform(INDEXED_TABLE, read_parquet(location, location.path(day_directory(INDEXED_TABLE, day), name)))
            for day, names in sources.items()
            for name in names
        ]
        rows = sort_for_queries(INDEXED_TABLE, pa.concat_tables(parts))
        directory = index_directory(month)
        name = index_file_name(INDEXED_TABLE, uuid.uuid4().hex[:12])
        fs = location.fs
        fs.invalidate_cache()
        try:
            old = [p for p in fs.ls(location.path(directory), detail=False) if base_name(p) != INDEX_MANIFEST]
        except FileNotFoundError:
            old = []
        content = parquet_bytes(INDEXED_TABLE, rows, row_group_rows=INDEX_ROW_GROUP_ROWS, sorted_for_queries=True)
        write_files_atomic(location, {f"{directory}/{name}": content})
        manifest = {"format": INDEX_FORMAT, "month": month, "file": name, "rows": rows.num_rows, "days": sources}
        write_files_atomic(location, {f"{directory}/{INDEX_MANIFEST}": json.dumps(manifest, indent=1, sort_keys=True).encode()})
        for path in old:
            with suppress(FileNotFoundError):
                fs.rm_file(path)
    log.info("built the IP index of %s: %d days, %d rows", month, len(sources), rows.num_rows)
    return MonthIndex(month, location.uri(directory, name), tuple(sources), rows.num_rows)


def _manifests(location: LakeLocation) -> dict[str, dict]:
    fs = location.fs
    fs.invalidate_cache()
    manifests = {}
    for path in sorted(fs.glob(location.path(INDEX_DIR, f"{MONTH_PREFIX}*", INDEX_MANIFEST))):
        month = base_name(path.rsplit("/", 1)[0]).removeprefix(MONTH_PREFIX)
        if not _MONTH.fullmatch(month):
            continue  # month=recent: the recent index (recent_index.py), not a month's
        manifest = _read_manifest(location, month)
        if manifest:
            manifests[month] = manifest
    return manifests


def _is_valid(location: LakeLocation, month: str, manifest: dict, compacted: dict[str, list[str]] | None = None) -> bool:
    """Whether the index matches the lake; ``compacted``: the month's compacted days, if
    the caller listed them already (else each covered day is listed)."""
    days = manifest.get("days")
    if manifest.get("format") != INDEX_FORMAT or manifest.get("month") != month or not isinstance(days, dict) or not days:
        return False
    if compacted is None:
        matches = all(fully_compacted_files(location, INDEXED_TABLE, day) == names for day, names in days.items())
    else:
        matches = all(compacted.get(day) == names for day, names in days.items())
    return matches and location.fs.exists(location.path(index_directory(month), manifest["file"]))


def valid_month_indexes(location: LakeLocation) -> list[MonthIndex]:
    """The month indexes that match the lake right now (stale ones are ignored)."""
    indexes = []
    manifests = _manifests(location)
    location.fs.invalidate_cache()
    for month, manifest in manifests.items():
        if not _is_valid(location, month, manifest):
            log.info("the IP index of %s is stale: not used", month)
            continue
        uri = location.uri(index_directory(month), manifest["file"])
        indexes.append(MonthIndex(month, uri, tuple(sorted(manifest["days"])), int(manifest.get("rows", 0))))
    return indexes


def months_to_index(location: LakeLocation) -> list[str]:
    """Months whose compacted days are not exactly what a valid index covers."""
    location.fs.invalidate_cache()
    months = {month_of(day) for day in table_days(location, INDEXED_TABLE)}
    manifests = _manifests(location)
    ready = []
    for month in sorted(months):
        compacted = _compacted_days(location, month)
        manifest = manifests.get(month)
        # Up to date: a valid index covering every compacted day of the month.
        current = manifest is not None and manifest.get("days") == compacted and _is_valid(location, month, manifest, compacted)
        if compacted and not current:
            ready.append(month)
    return ready


def index_months(location: LakeLocation) -> list[MonthIndex]:
    """(Re)build every month index that is missing, stale or behind its compacted days."""
    return [index for month in months_to_index(location) if (index := build_month_index(location, month))]


def index_step(location: LakeLocation) -> list[str]:
    """The compaction DAG's index task: bring each tenant's IP index (and its recent IP
    index, lake/recent_index.py) up to date; the months (re)built, as ``<tenant id>/<YYYY-MM>``."""
    check_not_legacy(location)
    built = []
    for tenant in tenant_locations(location):
        months = [index.month for index in index_months(tenant)]
        refresh_recent_index(tenant)  # the day just compacted left it: it covers today's hours only
        log.info("lake %s tenant %s: IP index built for %s", location.url, tenant.tenant_id, months or "no month")
        built += [f"{tenant.tenant_id}/{month}" for month in months]
    return built
