"""Every path and name rule of the lake, once, and the listings that read them back.

Layout under the root (docs/DESIGN.md, "Lake"), ``T`` = ``tenant_id=<tenant id>``::

    <table>/T/date=YYYY-MM-DD/interval=YYYYMMDDTHH.parquet    hourly files (commit.py)
    <table>/T/date=YYYY-MM-DD/compacted-<token>-NNN.parquet   a compacted day (compaction.py)
    <table>/T/date=YYYY-MM-DD/_compaction.json                its manifest (readers skip "_")
    _ip_index/T/month=YYYY-MM/alert_ips-<token>.parquet       the IP index (ip_index.py)
    _ip_index/T/month=YYYY-MM/_index.json                     its manifest
    _ip_index/T/month=recent/alert_ips-<token>.parquet        the recent IP index (recent_index.py)
    _ip_index/T/month=recent/_index.json                      its manifest
    _staging/T/<YYYYMMDDTHH>/<run id>/<name>.json             a run's hand-over (staging.py)
    _staging/T/compaction/<table>/date=YYYY-MM-DD/...         days being swapped in
    _staging/T/compaction_retired/<table>/date=YYYY-MM-DD/<UTC time>-<token>/  days swapped out (local; kept minutes)
    _staging/T/fetch_cache/<tenant>/<YYYYMMDDTHH>/<part>.jsonl fetch results per version (fetch_cache.py)
    _staging/T/commits/<YYYYMMDDTHH>/<token>/...              an hour's commit record (commit_log.py)
    _staging/T/retention/date=YYYY-MM-DD.json                 a day being removed (retention.py)
    _locks/T/<name>.lock                                      lake locks (locks.py)

The paths below are written without ``T``: a tenant's location (``for_tenant``) inserts
it, so writers work on one tenant's files. Readers take the root and see every tenant
(``tenant_id`` is a partition column and a column). Names come from the interval alone
(UTC): a rerun names the same files. Folders starting with ``_`` are outside every glob.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from mde_pipeline.lake.location import LakeLocation, base_name
from mde_pipeline.lake.schema import SCHEMAS, LakeSchemaError, parse_timestamp

INTERVAL = timedelta(hours=1)
PARQUET_SUFFIX = ".parquet"
JSON_SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
INTERVAL_PREFIX = "interval="
DATE_PREFIX = "date="
MONTH_PREFIX = "month="
COMPACTED_PREFIX = "compacted-"
MANIFEST_NAME = "_compaction.json"  # a compacted day's manifest
STAGING_DIR = "_staging"
COMPACTION_STAGING_DIR = f"{STAGING_DIR}/compaction"
# Swapped-out day directories (local lake), kept retired.RETIRED_GRACE for readers that
# were listing them: outside the tables and outside COMPACTION_STAGING_DIR (never an
# interrupted swap to recover).
COMPACTION_RETIRED_DIR = f"{STAGING_DIR}/compaction_retired"
FETCH_CACHE_DIR = f"{STAGING_DIR}/fetch_cache"
COMMITS_DIR = f"{STAGING_DIR}/commits"
COMMIT_RECORD = "_commit.json"  # written last: the commit point of an hour's two tables
RETENTION_DIR = f"{STAGING_DIR}/retention"  # a day's removal record (retention.py)
LOCKS_DIR = "_locks"
INDEX_DIR = "_ip_index"
INDEX_MANIFEST = "_index.json"
# A month= folder like the month indexes, so readers open both in one scan (one Hive key
# set); "recent" is not a YYYY-MM month: the month index's listings skip it.
RECENT_INDEX_DIR = f"{INDEX_DIR}/{MONTH_PREFIX}recent"

_INTERVAL_FILE = re.compile(r"interval=(\d{8}T\d{2})\.parquet")
_SAFE_RUN_ID_CHAR = re.compile(r"[A-Za-z0-9-]")
_MAX_SEGMENT = 120


# --------------------------------------------------------------------------- intervals


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


def check_table(table: str) -> str:
    if table not in SCHEMAS:
        raise LakeSchemaError(f"unknown lake table {table!r}")
    return table


def interval_file(table: str, interval_start: datetime | str) -> str:
    """``<table>/date=YYYY-MM-DD/interval=YYYYMMDDTHH.parquet``, relative to the root."""
    check_table(table)
    start = interval_start_of(interval_start)
    return f"{table}/{DATE_PREFIX}{partition_date(start)}/{INTERVAL_PREFIX}{interval_key(start)}{PARQUET_SUFFIX}"


def parse_interval_file(name: str) -> datetime:
    """The interval start of an interval file's name (or path); an error for other files."""
    match = _INTERVAL_FILE.fullmatch(base_name(name))
    if not match:
        raise LakeSchemaError(f"not an interval file name: {name!r}")
    return parse_interval_key(match.group(1))


# --------------------------------------------------------------------------- days and months


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


def month_of(day: date | datetime | str) -> str:
    """``YYYY-MM`` of a day."""
    return day_of(day)[:7]


def day_directory(table: str, day: date | datetime | str) -> str:
    """``<table>/date=YYYY-MM-DD`` relative to the lake root."""
    return f"{check_table(table)}/{DATE_PREFIX}{day_of(day)}"


def day_lock_name(day: date | datetime | str) -> str:
    """The lake lock (locks.py) that guards one day's files, both tables."""
    return f"{DATE_PREFIX}{day_of(day)}"


def lock_file(name: str) -> str:
    """``_locks/<name>.lock`` relative to the root."""
    return f"{LOCKS_DIR}/{name}.lock"


def compacted_file_name(token: str, index: int) -> str:
    return f"{COMPACTED_PREFIX}{token}-{index:03d}{PARQUET_SUFFIX}"


def compaction_staging_directory(table: str, day: str) -> str:
    """Where a day being compacted is built before the swap, relative to the root."""
    return f"{COMPACTION_STAGING_DIR}/{day_directory(table, day)}"


def compaction_retired_directory(table: str, day: str) -> str:
    """Where a day's swapped-out directories wait out retired.RETIRED_GRACE (local lake),
    relative to the root."""
    return f"{COMPACTION_RETIRED_DIR}/{day_directory(table, day)}"


def index_directory(month: str) -> str:
    """``_ip_index/month=YYYY-MM`` relative to the root."""
    if len(month) != 7 or month[4] != "-":
        raise LakeSchemaError(f"not a month (YYYY-MM): {month!r}")
    return f"{INDEX_DIR}/{MONTH_PREFIX}{month}"


def index_file_name(table: str, token: str) -> str:
    return f"{table}-{token}{PARQUET_SUFFIX}"


def is_lake_parquet(name: str) -> bool:
    """A committed data file readers glob (never a temp file or a ``_`` file)."""
    return name.endswith(PARQUET_SUFFIX) and not name.startswith((".", "_"))


def is_day_data_file(name: str) -> bool:
    """An hourly or compacted file of a day (what a compaction replaces)."""
    return name.endswith(PARQUET_SUFFIX) and (bool(_INTERVAL_FILE.fullmatch(name)) or name.startswith(COMPACTED_PREFIX))


def staged_compaction_days(location: LakeLocation, table: str) -> list[str]:
    """Days of ``table`` with something under ``_staging/compaction/`` (a swap that may
    have been interrupted), sorted."""
    return _days_under(location, f"{COMPACTION_STAGING_DIR}/{check_table(table)}")


def retired_compaction_days(location: LakeLocation, table: str) -> list[str]:
    """Days of ``table`` with a folder under ``_staging/compaction_retired/``, sorted."""
    return _days_under(location, f"{COMPACTION_RETIRED_DIR}/{check_table(table)}")


def _days_under(location: LakeLocation, relative: str) -> list[str]:
    days = []
    for name in list_names(location, relative) or ():
        if name.startswith(DATE_PREFIX):
            try:
                days.append(day_of(name.removeprefix(DATE_PREFIX)))
            except LakeSchemaError:
                continue
    return days


# --------------------------------------------------------------------------- staging


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
        char if _SAFE_RUN_ID_CHAR.fullmatch(char) else "".join(f"_{byte:02X}" for byte in char.encode("utf-8"))
        for char in run_id
    )
    if len(encoded) > _MAX_SEGMENT:
        digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16]
        encoded = f"{encoded[: _MAX_SEGMENT - 17]}-{digest}"
    return encoded


def staging_path(interval_start: datetime | str, run_id: str | None = None, file_name: str | None = None) -> str:
    """Path relative to the lake root of an interval's (or a run's) staging folder or file."""
    run = None if run_id is None else sanitize_run_id(run_id)
    return _joined(STAGING_DIR, interval_key(interval_start), run, file_name)


def fetch_cache_path(tenant_id: str, interval_start: datetime | str | None = None, file_name: str | None = None) -> str:
    """``_staging/fetch_cache/<tenant>[/<YYYYMMDDTHH>[/<file>]]`` (the hour of the versions'
    lastUpdateTime), relative to the root."""
    hour = None if interval_start is None else interval_key(interval_start)
    return _joined(FETCH_CACHE_DIR, sanitize_run_id(tenant_id), hour, file_name)


def commit_path(interval_start: datetime | str | None = None, token: str | None = None, file_name: str | None = None) -> str:
    """``_staging/commits[/<YYYYMMDDTHH>[/<token>[/<file>]]]`` relative to the root."""
    hour = None if interval_start is None else interval_key(interval_start)
    return _joined(COMMITS_DIR, hour, token, file_name)


def _joined(*parts: str | None) -> str:
    """The parts up to the first None, joined with ``/``."""
    present = []
    for part in parts:
        if part is None:
            break
        present.append(part)
    return "/".join(present)


# --------------------------------------------------------------------------- listings


def list_names(location: LakeLocation, relative: str) -> list[str] | None:
    """Names in one directory of the lake (sorted), or None when it does not exist. On
    ADLS the listing cache is used: callers that need the lake now invalidate it first."""
    names = location.list_dir(relative)
    return None if names is None else sorted(names)


def table_days(location: LakeLocation, table: str, month: str | None = None) -> list[str]:
    """``YYYY-MM-DD`` of every ``date=`` directory of a table (of one month), sorted."""
    days = []
    for name in list_names(location, check_table(table)) or ():
        if not name.startswith(DATE_PREFIX):
            continue
        try:
            day = day_of(name.removeprefix(DATE_PREFIX))
        except LakeSchemaError:
            continue
        if month is None or day.startswith(f"{month}-"):
            days.append(day)
    return days


def day_has_data(location: LakeLocation, table: str, day: str) -> bool:
    """Whether a day directory holds a file readers glob (``*.parquet``, not hidden)."""
    return any(is_lake_parquet(n) for n in list_names(location, day_directory(table, day)) or ())


def fully_compacted_files(location: LakeLocation, table: str, day: str) -> list[str] | None:
    """The compacted file names of a day, or None unless it is compacted and has no hourly file.

    One listing, no file read. A day with both (a swap interrupted half-way) is None.
    """
    names = list_names(location, day_directory(table, day))
    if names is None or MANIFEST_NAME not in names:
        return None
    if any(n.startswith(INTERVAL_PREFIX) and n.endswith(PARQUET_SUFFIX) for n in names):
        return None
    return [n for n in names if n.startswith(COMPACTED_PREFIX) and n.endswith(PARQUET_SUFFIX)] or None


def days_with_interval_files(location: LakeLocation, table: str) -> list[str]:
    """Days of ``table`` that still have hourly files, sorted."""
    fs = location.fs
    fs.invalidate_cache()
    days = set()
    for path in fs.glob(location.path(table, f"{DATE_PREFIX}*", f"{INTERVAL_PREFIX}*{PARQUET_SUFFIX}")):
        try:
            days.add(partition_date(parse_interval_file(path)))
        except LakeSchemaError:
            continue
    return sorted(days)


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


def file_mtime(info: dict[str, Any]) -> float | None:
    """Modification time (epoch seconds) of an ``fs.ls(detail=True)`` entry, local or blob."""
    value = info.get("mtime", info.get("last_modified"))
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def list_day(location: LakeLocation, table: str, day: date | datetime | str) -> DayFiles:
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
        path, name = info["name"], base_name(info["name"])
        mtime = file_mtime(info)
        if name == MANIFEST_NAME:
            result.manifest = {**json.loads(fs.cat_file(path)), "_path": path}
        elif name.startswith(COMPACTED_PREFIX) and name.endswith(PARQUET_SUFFIX):
            result.compacted_files.append(path)
        elif name.startswith(INTERVAL_PREFIX) and name.endswith(PARQUET_SUFFIX):
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
