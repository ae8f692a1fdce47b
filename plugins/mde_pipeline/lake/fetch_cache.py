"""Fetch results kept per alert version as they arrive, so no version's IPs are fetched twice.

``<root>/_staging/fetch_cache/<tenant>/<YYYYMMDDTHH>/<part>.jsonl`` (layout.fetch_cache_path):
the hour is the one of the version's ``lastUpdateTime`` (the hour the version belongs
to), one JSON line per :class:`~mde_pipeline.common.fetch_result.FetchResult`. Each
fetch attempt writes its own part files (``<label>-<random>.jsonl``, one per hour it
touches) and rewrites them whole, atomically (storage.write_files_atomic), every
``flush_every`` results and once more when it ends (also on failure), so a task killed
mid-batch leaves every result it flushed. Readers (a task retry, a rerun of the hour, a
look-back) read every part of the hours they need and call the API only for the rest.

Key: tenant + (alert_id, lastUpdateTime in 100 ns ticks). When two parts hold the same
version, the newest ``fetched_at`` wins (a ``refetch`` run's results replace older ones).
Only final answers are kept (status ok / empty / not_found): a version whose fetch
failed is not in the cache, so a later run or look-back tries it again.

Lifetime: the cache of an hour may go only once no run may still publish it. A run may
publish the versions of its own hour and, through its look-back, of the hours up to
``cache_retention(lookback)`` (look-back + 1 day) before it; every run that may still
publish has its folder in the tenant's staging (from its listing until its publish
succeeded; a failed run's until the staging sweep removes it, 7 days). So
:func:`sweep_fetch_cache` removes a cached hour only when all of these hold:

* it starts more than ``cache_retention(lookback)`` before the sweeping run's interval;
* no staged run's interval lies in ``[hour, hour + cache_retention(lookback)]`` (a
  backfill of an old hour keeps its hour and its look-back hours, also with the
  look-back off, as long as it runs or may be cleared and rerun);
* nothing was written to it for ``CACHE_MIN_IDLE`` (2 days, whatever the look-back).

The publish step sweeps its tenant; the compaction step sweeps every tenant folder
under ``_staging/`` (lake.sweeps). A rerun of an older hour after that fetches again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from mde_pipeline.common.fetch_result import IPS_EMPTY, IPS_NOT_FOUND, IPS_OK, FetchResult
from mde_pipeline.common.timestamps import parse_timestamp, ticks_to_datetime
from mde_pipeline.lake.layout import FETCH_CACHE_DIR, fetch_cache_path, list_names, parse_interval_key
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.staging import staged_intervals
from mde_pipeline.lake.storage import write_files_atomic

log = logging.getLogger(__name__)

PART_SUFFIX = ".jsonl"
CACHED_STATUSES = (IPS_OK, IPS_EMPTY, IPS_NOT_FOUND)  # answers; never 'error' (tried again)
VersionKey = tuple[str, int]  # (alert_id, lastUpdateTime ticks)
# A cached hour with a write this recent stays whatever the look-back (belt to the
# staged-run rule: see the module docstring).
CACHE_MIN_IDLE = timedelta(days=2)


def version_key(alert_id: str, last_update_time: str) -> VersionKey:
    return alert_id, parse_timestamp(last_update_time)


def version_hour(last_update_time: str) -> datetime:
    """The interval start (whole UTC hour) a version belongs to."""
    return ticks_to_datetime(parse_timestamp(last_update_time)).replace(minute=0, second=0, microsecond=0)


class FetchCache:
    """The cached fetch results of one tenant."""

    def __init__(self, location: LakeLocation, tenant_id: str) -> None:
        if not tenant_id:
            raise ValueError("the fetch cache needs the tenant id")
        self.location = location
        self.tenant_id = tenant_id

    def lookup(self, entries: Iterable[Mapping[str, str]]) -> dict[VersionKey, FetchResult]:
        """Cached results of the versions ``entries`` name (``alert_id``, ``last_update_time``)."""
        wanted: dict[datetime, set[VersionKey]] = {}
        for entry in entries:
            key = version_key(entry["alert_id"], entry["last_update_time"])
            wanted.setdefault(version_hour(entry["last_update_time"]), set()).add(key)
        found: dict[VersionKey, FetchResult] = {}
        if wanted:
            self.location.fs.invalidate_cache()
        for hour, keys in wanted.items():
            for result in self._read_hour(hour):
                key = version_key(result["alert_id"], result["last_update_time"])
                if key in keys and (key not in found or result["fetched_at"] > found[key]["fetched_at"]):
                    found[key] = result
        return found

    def _read_hour(self, hour: datetime) -> Iterable[FetchResult]:
        for name in list_names(self.location, fetch_cache_path(self.tenant_id, hour)) or ():
            if not name.endswith(PART_SUFFIX) or name.startswith("."):
                continue
            path = self.location.path(fetch_cache_path(self.tenant_id, hour, name))
            try:
                data = self.location.fs.cat_file(path)
            except FileNotFoundError:
                continue  # swept meanwhile
            for line in data.decode("utf-8").splitlines():
                try:
                    result = json.loads(line)
                except ValueError:
                    log.warning("fetch cache %s: unreadable line skipped", path)
                    continue
                if isinstance(result, dict) and result.get("status") in CACHED_STATUSES:
                    yield result

    def recorder(self, label: str, flush_every: int = 1) -> "CacheRecorder":
        return CacheRecorder(self, label, flush_every)


class CacheRecorder:
    """Collects one fetch attempt's results and writes them out every ``flush_every``."""

    def __init__(self, cache: FetchCache, label: str, flush_every: int = 1) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be positive, got {flush_every}")
        self.cache = cache
        self.part = f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in label)[:80]}-{uuid.uuid4().hex[:12]}"
        self.flush_every = flush_every
        self.by_hour: dict[datetime, list[FetchResult]] = {}
        self.unflushed = 0
        self.written = 0

    def add(self, result: FetchResult) -> None:
        if result.get("status") not in CACHED_STATUSES:
            return  # not a final answer: a later run tries again
        self.by_hour.setdefault(version_hour(result["last_update_time"]), []).append(result)
        self.unflushed += 1
        if self.unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.unflushed:
            return
        files = {
            fetch_cache_path(self.cache.tenant_id, hour, f"{self.part}{PART_SUFFIX}"): "".join(
                json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n" for result in results
            ).encode("utf-8")
            for hour, results in self.by_hour.items()
        }
        write_files_atomic(self.cache.location, files)
        self.written += self.unflushed
        self.unflushed = 0


def sweep_fetch_cache(
    location: LakeLocation,
    tenant_id: str,
    older_than: datetime,
    *,
    lookback: timedelta,
    now: float | None = None,
) -> list[str]:
    """Remove the cached hours of a tenant that no run may still publish (see the module
    docstring): before ``older_than``, outside every staged run's look-back reach, and
    idle for ``CACHE_MIN_IDLE``; returns their keys. ``now``: epoch seconds (tests)."""
    return _sweep_folder(location, fetch_cache_path(tenant_id), older_than, lookback=lookback, now=now)


def sweep_every_fetch_cache(
    location: LakeLocation, older_than: datetime, *, lookback: timedelta, now: float | None = None
) -> list[str]:
    """:func:`sweep_fetch_cache` over every cache folder of the location's staging (also
    ones whose name no current tenant id gives); returns ``<folder>/<hour>`` keys."""
    removed = []
    for name in list_names(location, FETCH_CACHE_DIR) or ():
        if name.startswith("."):
            continue
        folder = f"{FETCH_CACHE_DIR}/{name}"
        removed += [f"{name}/{hour}" for hour in _sweep_folder(location, folder, older_than, lookback=lookback, now=now)]
    return removed


def _sweep_folder(
    location: LakeLocation, folder: str, older_than: datetime, *, lookback: timedelta, now: float | None
) -> list[str]:
    retention = cache_retention(lookback)
    since = (time.time() if now is None else now) - CACHE_MIN_IDLE.total_seconds()
    # Read before the cache listing: a run staged after this has not fetched anything yet.
    live = staged_intervals(location)
    removed = []
    location.fs.invalidate_cache()
    for name in list_names(location, folder) or ():
        try:
            hour = parse_interval_key(name)
        except ValueError:
            continue
        if hour >= older_than or any(hour <= start <= hour + retention for start in live):
            continue
        if _written_since(location, f"{folder}/{name}", since):
            continue
        try:
            location.fs.rm(location.path(folder, name), recursive=True)
        except FileNotFoundError:
            pass
        removed.append(name)
    location.fs.invalidate_cache()
    if removed:
        log.info("fetch cache %s: swept %d hours no run may still publish", folder, len(removed))
    return removed


def _written_since(location: LakeLocation, relative: str, since: float) -> bool:
    try:
        entries = location.fs.ls(location.path(relative), detail=True)
    except FileNotFoundError:
        return False
    for info in entries:
        value = info.get("mtime", info.get("last_modified"))
        stamp = value.timestamp() if isinstance(value, datetime) else value
        if isinstance(stamp, (int, float)) and stamp >= since:
            return True
    return False


def cache_retention(lookback: timedelta) -> timedelta:
    """How far back of a run's interval its cached results stay: the look-back window
    plus a day."""
    return lookback + timedelta(days=1)
