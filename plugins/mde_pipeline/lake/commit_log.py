"""The commit record of an hour: both tables staged, the record last, then applied.

An hour's two files live in two folders (``alerts/``, ``alert_ips/``) and no filesystem
or blob store replaces two files at once. So every hourly commit (commit.py: a run's own
hour, a rerun, a look-back adding late versions, an hour of a compacted day) is written
ahead, and the record is its commit point:

1. **stage**: both tables' new files are written complete under
   ``_staging/commits/<YYYYMMDDTHH>/<token>/`` (layout.commit_path), then the record
   ``_commit.json`` (layout.COMMIT_RECORD). Before the record exists nothing has changed.
2. **apply**, in ORDER (``alert_ips`` first, then ``alerts``): each table's staged file
   replaces its live hourly file (local: a rename; blob: a Put Block List conditional on
   the live file's ETag read under the lock), or is republished into its compacted day.
3. **clear**: the record goes first, then the staged files.

A record names the ETags the live files had when the writer read them (``base``): on a
blob lake a table is applied only while its live file still has that ETag, so a record
whose writer's lease lapsed before its record landed (a stale record: another writer
has changed the hour since) is discarded instead of rolled over the newer commit.

Recovery (:func:`recover_commits`, under the day's lock; commit.py runs it for its day
before every commit, the DAG's publish and the compaction step for every pending hour of
the tenant): a complete record is applied to the end (what is already applied is
skipped), an incomplete staging (no record) is discarded. docs/DESIGN.md, "Commit
record", states what a reader and the next run see after a kill at each step.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from mde_pipeline.lake.days import invalidate_index, publish_interval_into_compacted_day
from mde_pipeline.lake.layout import (
    COMMIT_RECORD,
    COMMITS_DIR,
    MANIFEST_NAME,
    STAGING_DIR,
    commit_path,
    day_directory,
    interval_file,
    interval_key,
    list_day,
    list_names,
    parse_interval_key,
    partition_date,
)
from mde_pipeline.lake.location import TENANT_PREFIX, LakeLocation
from mde_pipeline.lake.locks import check_day_held
from mde_pipeline.lake.parquet import read_parquet
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS
from mde_pipeline.lake.storage import blob_etag, fsync_directory, write_files_atomic

RECORD_FORMAT = 1
# alert_ips before alerts: until a version's alerts row is in, nothing says it is done,
# so a reader (or a look-back comparing against alerts) never takes it for complete.
ORDER = (ALERT_IPS, ALERTS)
FILE, COMPACTED = "file", "compacted"  # where a table's rows of the hour go

log = logging.getLogger(__name__)


class LakeCommitPending(RuntimeError):
    """An hour's commit passed its commit point but is not applied yet: the lake shows a
    half-written hour until the next run (or this task's retry) finishes it from the record."""


def commit_checkpoint(step: str) -> None:
    """Called between the steps of a commit: the seam of the crash and failure tests."""
    return None


@dataclass(frozen=True)
class Target:
    """Where one table's rows of an hour live now, as the writer read it under the lock."""

    kind: str  # FILE or COMPACTED
    base: str | None  # blob lakes: ETag of the hourly file (or the day's manifest); ABSENT: none


def current_target(location: LakeLocation, table: str, interval_start: datetime) -> Target:
    """The target of ``table``'s hour now: its hourly file, or its compacted day."""
    day = partition_date(interval_start)
    kind = COMPACTED if list_day(location, table, day).is_compacted else FILE
    if location.is_local:
        return Target(kind, None)
    relative = interval_file(table, interval_start) if kind == FILE else f"{day_directory(table, day)}/{MANIFEST_NAME}"
    return Target(kind, blob_etag(location, relative))


@dataclass(frozen=True)
class Record:
    interval_start: datetime
    token: str
    targets: dict[str, Target]

    def path(self, file_name: str | None = None) -> str:
        return commit_path(self.interval_start, self.token, file_name)


def staged_name(table: str) -> str:
    return f"{table}.parquet"


def stage(location: LakeLocation, interval_start: datetime, files: Mapping[str, bytes], targets: Mapping[str, Target]) -> Record:
    """Step 2: the staged files, then the record (the commit point). Caller holds the day's lock."""
    record = Record(interval_start, uuid.uuid4().hex[:16], dict(targets))
    write_files_atomic(location, {record.path(staged_name(t)): files[t] for t in ORDER})
    commit_checkpoint("staged")
    body = {
        "format": RECORD_FORMAT,
        "interval": interval_key(interval_start),
        "token": record.token,
        "targets": {t: {"kind": target.kind, "base": target.base} for t, target in record.targets.items()},
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    held = lambda: check_day_held(location, partition_date(interval_start))  # noqa: E731
    write_files_atomic(location, {record.path(COMMIT_RECORD): json.dumps(body, sort_keys=True).encode()}, held)
    return record


def apply(
    location: LakeLocation,
    record: Record,
    tables: Mapping[str, pa.Table] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, str]:
    """Steps 3 and 4 (also the recovery of a record): every table not applied yet, in ORDER,
    then the record cleared. ``tables`` / ``files``: the staged rows and bytes when the
    caller has them (else read back from the staging). Returns table -> uri of what now
    holds the hour."""
    commit_checkpoint("recorded")
    day = partition_date(record.interval_start)
    held = lambda: check_day_held(location, day)  # noqa: E731
    written: dict[str, str] = {}
    for table in ORDER:
        target = record.targets[table]
        staged = location.path(record.path(staged_name(table)))
        live = interval_file(table, record.interval_start)
        if not _pending(location, table, record, staged):
            written[table] = location.uri(live)
            continue
        # A local record is never stale (a flock dies with its holder), but the day may
        # have been compacted since: the hour goes where the day keeps it now.
        kind = current_target(location, table, record.interval_start).kind if location.is_local else target.kind
        if kind == COMPACTED:
            data = tables[table] if tables is not None else read_parquet(location, staged)
            written[table] = publish_interval_into_compacted_day(location, table, record.interval_start, data, lock=False)
            with suppress(FileNotFoundError):
                location.fs.rm_file(staged)  # applied (a republish again would be the same)
        elif location.is_local:
            invalidate_index(location, table, day)
            held()
            os.makedirs(os.path.dirname(location.path(live)), exist_ok=True)
            os.replace(staged, location.path(live))  # the staged file is gone once applied
            fsync_directory(os.path.dirname(location.path(live)))
            written[table] = location.uri(live)
        else:
            invalidate_index(location, table, day)
            content = files[table] if files is not None else location.fs.cat_file(staged)
            written.update(write_files_atomic(location, {live: content}, held, if_match={live: target.base}))
            written[table] = written.pop(live)
        commit_checkpoint(f"applied {table}")
    clear(location, record)
    return written


def _pending(location: LakeLocation, table: str, record: Record, staged: str) -> bool:
    """Whether ``table`` of ``record`` is still to apply.

    Local: its staged file is still there (applying removes it). Blob: also the live
    target still has the ETag the record was written against; any other ETag means this
    record applied it already, or another writer changed the hour since (a stale record):
    either way it must not be written (again)."""
    if not location.fs.exists(staged):
        return False
    if location.is_local:
        return True
    now = current_target(location, table, record.interval_start)
    target = record.targets[table]
    if now != target:
        log.warning("commit record %s: %s of %s changed since it was written; not applied again",
                    record.token, table, interval_key(record.interval_start))  # fmt: skip
        return False
    return True


def clear(location: LakeLocation, record: Record) -> None:
    """Remove a record (the record first, so a half-removed one is never taken for complete)."""
    fs = location.fs
    with suppress(FileNotFoundError):
        fs.rm_file(location.path(record.path(COMMIT_RECORD)))
    commit_checkpoint("unrecorded")
    with suppress(FileNotFoundError):
        fs.rm(location.path(record.path()), recursive=True)
    hour = location.path(commit_path(record.interval_start))
    with suppress(FileNotFoundError, OSError):
        if not fs.ls(hour, detail=False):
            fs.rmdir(hour) if location.is_local else fs.rm(hour, recursive=True)
    fs.invalidate_cache()


def _read_record(location: LakeLocation, interval_start: datetime, token: str) -> Record | None:
    try:
        body = json.loads(location.fs.cat_file(location.path(commit_path(interval_start, token, COMMIT_RECORD))))
    except FileNotFoundError:
        return None
    targets = {t: Target(v["kind"], v["base"]) for t, v in body["targets"].items()}
    return Record(interval_start, token, targets)


def pending_hours(location: LakeLocation) -> list[datetime]:
    """Hours of this tenant's lake with something under ``_staging/commits/`` (sorted)."""
    location.fs.invalidate_cache()
    hours = []
    for name in list_names(location, COMMITS_DIR) or ():
        with suppress(Exception):
            hours.append(parse_interval_key(name))
    return sorted(hours)


def recorded_hours(location: LakeLocation) -> set[tuple[str, datetime]]:
    """``(tenant id, hour)`` of every hour with a commit record not yet cleared (written,
    not wholly applied), of one tenant or, given the root, of every tenant: one glob.
    Readers leave these hours out (their two tables may disagree); the next writer of the
    tenant finishes them."""
    fs = location.fs
    fs.invalidate_cache()
    if location.tenant_id is None:  # the root: path() inserts no tenant, so name every one
        pattern = location.path(STAGING_DIR, f"{TENANT_PREFIX}*", COMMITS_DIR.removeprefix(f"{STAGING_DIR}/"), "*", "*", COMMIT_RECORD)
    else:
        pattern = location.path(COMMITS_DIR, "*", "*", COMMIT_RECORD)
    found = set()
    for path in fs.glob(pattern):
        parts = path.split("/")  # .../tenant_id=T/commits/<hour>/<token>/_commit.json
        with suppress(Exception):
            found.add((parts[-5].removeprefix(TENANT_PREFIX), parse_interval_key(parts[-3])))
    return found


def recover_commits(location: LakeLocation, day: str) -> list[str]:
    """Finish every complete record of ``day`` and discard incomplete stagings (caller
    holds the day's lock). Returns the interval keys recovered."""
    recovered = []
    for hour in pending_hours(location):
        if partition_date(hour) != day:
            continue
        for token in list_names(location, commit_path(hour)) or ():
            record = _read_record(location, hour, token)
            if record is None:
                log.warning("discarding the incomplete commit staging %s", location.uri(commit_path(hour, token)))
                with suppress(FileNotFoundError):
                    location.fs.rm(location.path(commit_path(hour, token)), recursive=True)
                continue
            log.warning("finishing the interrupted commit of %s from record %s", interval_key(hour), token)
            apply(location, record)
            recovered.append(interval_key(hour))
        with suppress(FileNotFoundError, OSError):
            if not list_names(location, commit_path(hour)):
                location.fs.rm(location.path(commit_path(hour)), recursive=True)
    location.fs.invalidate_cache()
    return recovered

