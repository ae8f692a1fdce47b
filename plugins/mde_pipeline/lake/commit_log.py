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
from mde_pipeline.lake.storage import LakeWriteFenced, blob_state, fsync_directory, write_files_atomic

RECORD_FORMAT = 1
# alert_ips before alerts: until a version's alerts row is in, nothing says it is done,
# so a reader (or a look-back comparing against alerts) never takes it for complete.
ORDER = (ALERT_IPS, ALERTS)
FILE, COMPACTED = "file", "compacted"  # where a table's rows of the hour go
TOKEN_METADATA = "mde_commit"  # blob metadata: the token of the record that wrote the file

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
    return _live(location, table, interval_start)[0]


def _live(location: LakeLocation, table: str, interval_start: datetime) -> tuple[Target, str | None]:
    """(target now, token of the commit record that last wrote it; blob lakes only): the
    hourly file's metadata, or the compacted day's manifest ("commits")."""
    day = partition_date(interval_start)
    files = list_day(location, table, day)
    kind = COMPACTED if files.is_compacted else FILE
    if location.is_local:
        return Target(kind, None), None
    if kind == FILE:
        etag, metadata = blob_state(location, interval_file(table, interval_start))
        return Target(kind, etag), metadata.get(TOKEN_METADATA)
    etag, _ = blob_state(location, f"{day_directory(table, day)}/{MANIFEST_NAME}")
    return Target(kind, etag), (files.manifest or {}).get("commits", {}).get(interval_key(interval_start))


@dataclass(frozen=True)
class Record:
    interval_start: datetime
    token: str
    targets: dict[str, Target]
    created_at: str = ""

    def path(self, file_name: str | None = None) -> str:
        return commit_path(self.interval_start, self.token, file_name)


def staged_name(table: str) -> str:
    return f"{table}.parquet"


def stage(location: LakeLocation, interval_start: datetime, files: Mapping[str, bytes], targets: Mapping[str, Target]) -> Record:
    """Step 2: the staged files, then the record (the commit point). Caller holds the day's lock."""
    record = Record(interval_start, uuid.uuid4().hex[:16], dict(targets), datetime.now(timezone.utc).isoformat())
    write_files_atomic(location, {record.path(staged_name(t)): files[t] for t in ORDER})
    commit_checkpoint("staged")
    body = {
        "format": RECORD_FORMAT,
        "interval": interval_key(interval_start),
        "token": record.token,
        "targets": {t: {"kind": target.kind, "base": target.base} for t, target in record.targets.items()},
        "created_at": record.created_at,
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
    writer applies its own fresh record (else read back from the staging). Returns table
    -> uri of what now holds the hour.

    A stale record (another writer changed the hour since its base) is applied nowhere:
    its writer gets :class:`LakeWriteFenced`, a recovery discards it whole."""
    commit_checkpoint("recorded")
    day = partition_date(record.interval_start)
    held = lambda: check_day_held(location, day)  # noqa: E731
    own = files is not None
    status = {table: _status(location, record, table) for table in ORDER}
    if own and set(status.values()) != {PENDING}:  # its staging or its base is gone: another writer acted
        raise LakeWriteFenced(
            f"the hour {interval_key(record.interval_start)} or this writer's staging changed after its commit record "
            "was written (its lock lapsed and another writer took the day): nothing of it was applied"
        )
    if STALE in status.values():
        log.warning("commit record %s of %s is stale (the hour changed since it was written): discarded",
                    record.token, interval_key(record.interval_start))  # fmt: skip
        clear(location, record)
        return {}
    written: dict[str, str] = {}
    for table in ORDER:
        target = record.targets[table]
        staged = location.path(record.path(staged_name(table)))
        live = interval_file(table, record.interval_start)
        if status[table] == APPLIED:
            written[table] = location.uri(live)
            continue
        # A local record is never stale (a flock dies with its holder), but the day may
        # have been compacted since: the hour goes where the day keeps it now.
        kind = current_target(location, table, record.interval_start).kind if location.is_local else target.kind
        if kind == COMPACTED:
            data = tables[table] if tables is not None else read_parquet(location, staged)
            written[table] = publish_interval_into_compacted_day(
                location, table, record.interval_start, data, lock=False, commit_token=record.token
            )
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
            content = files[table] if own else location.fs.cat_file(staged)
            written.update(write_files_atomic(location, {live: content}, held, if_match={live: target.base},
                                              metadata={TOKEN_METADATA: record.token}))  # fmt: skip
            written[table] = written.pop(live)
        commit_checkpoint(f"applied {table}")
    clear(location, record)
    return written


PENDING, APPLIED, STALE = "pending", "applied", "stale"


def _status(location: LakeLocation, record: Record, table: str) -> str:
    """Whether ``table`` of ``record`` is still to apply.

    Local: PENDING while its staged file is there (applying removes it; a local record is
    never stale). Blob: APPLIED when the live target names this record's token, PENDING
    while it still has the record's base (and the staged file is there), else STALE:
    another writer changed the hour since the record's writer read it."""
    staged = location.path(record.path(staged_name(table)))
    if location.is_local:
        return PENDING if os.path.exists(staged) else APPLIED
    target, token = _live(location, table, record.interval_start)
    if token == record.token:
        return APPLIED
    if target == record.targets[table] and location.fs.exists(staged):
        return PENDING
    return STALE


def clear(location: LakeLocation, record: Record) -> None:
    """Remove a record (the record first, so a half-removed one is never taken for complete)."""
    fs = location.fs
    with suppress(FileNotFoundError):
        fs.rm_file(location.path(record.path(COMMIT_RECORD)))
    commit_checkpoint("unrecorded")
    with suppress(FileNotFoundError):
        fs.rm(location.path(record.path()), recursive=True)
    _drop_if_empty(location, record.interval_start)


def _drop_if_empty(location: LakeLocation, hour: datetime) -> None:
    """Remove an hour's folder under ``_staging/commits`` once it holds nothing."""
    fs = location.fs
    fs.invalidate_cache()
    with suppress(FileNotFoundError, OSError):
        if not list_names(location, commit_path(hour)):
            fs.rm(location.path(commit_path(hour)), recursive=True)
    fs.invalidate_cache()


def _read_record(location: LakeLocation, interval_start: datetime, token: str) -> Record | None:
    try:
        body = json.loads(location.fs.cat_file(location.path(commit_path(interval_start, token, COMMIT_RECORD))))
    except FileNotFoundError:
        return None
    targets = {t: Target(v["kind"], v["base"]) for t, v in body["targets"].items()}
    return Record(interval_start, token, targets, body.get("created_at", ""))


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
    not wholly applied), of one tenant or, given the root, of every tenant (a listing of
    ``_staging/``, then a glob below each tenant's ``commits/``: never the fetch cache).
    Readers leave these hours out (their two tables may disagree); the next writer of the
    tenant finishes them."""
    fs = location.fs
    fs.invalidate_cache()
    commits = COMMITS_DIR.removeprefix(f"{STAGING_DIR}/")
    if location.tenant_id is None:  # the root: one listing of _staging, then each tenant's commits/ only
        tenants = [n for n in list_names(location, STAGING_DIR) or () if n.startswith(TENANT_PREFIX)]
        patterns = [location.path(STAGING_DIR, tenant, commits, "*", "*", COMMIT_RECORD) for tenant in tenants]
    else:
        patterns = [location.path(COMMITS_DIR, "*", "*", COMMIT_RECORD)]
    found = set()
    for path in (p for pattern in patterns for p in fs.glob(pattern)):
        parts = path.split("/")  # .../tenant_id=T/commits/<hour>/<token>/_commit.json
        with suppress(Exception):
            found.add((parts[-5].removeprefix(TENANT_PREFIX), parse_interval_key(parts[-3])))
    return found


def recover_commits(location: LakeLocation, day: str) -> list[str]:
    """Finish every complete record of ``day`` (oldest first) and discard incomplete
    stagings (caller holds the day's lock). Returns the interval keys recovered."""
    recovered = []
    for hour in pending_hours(location):
        if partition_date(hour) != day:
            continue
        records = []
        for token in list_names(location, commit_path(hour)) or ():
            record = _read_record(location, hour, token)
            if record is None:
                log.warning("discarding the incomplete commit staging %s", location.uri(commit_path(hour, token)))
                with suppress(FileNotFoundError):
                    location.fs.rm(location.path(commit_path(hour, token)), recursive=True)
            else:
                records.append(record)
        for record in sorted(records, key=lambda r: r.created_at):
            log.warning("finishing the interrupted commit of %s from record %s", interval_key(hour), record.token)
            if apply(location, record):
                recovered.append(interval_key(hour))
        _drop_if_empty(location, hour)
    return recovered
