"""Swapped-out day directories of the local lake, kept for a grace period.

storage.swap_local_directory exchanges a day's directory with a new one and renames the
previous one to ``_staging/T/compaction_retired/<table>/date=D/<UTC time>-<token>``
(layout.compaction_retired_directory): outside the tables (every Parquet file under
``alerts/`` and ``alert_ips/`` is live) and outside ``_staging/T/compaction/`` (recovery
never takes it for an interrupted swap). The retire time is in the name, so a sweep
decides age without a stat. Removed after :data:`RETIRED_GRACE` by the next swap of the
day and by the compaction step's sweep (lake.sweeps); retention removes a day's
retired directories with the day.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from contextlib import suppress
from datetime import datetime, timedelta, timezone

from mde_pipeline.lake.layout import COMPACTION_RETIRED_DIR, compaction_retired_directory, retired_compaction_days
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.schema import SCHEMAS

# Swapped-out day directories stay this long before they are removed. A reader (a DuckDB
# or pyarrow glob) that opened the day directory just before the exchange reads its
# entries afterwards: a renamed directory still lists them (opening them by their old
# path then fails loudly: the new files have other names), a removed one lists nothing,
# and the day would be silently missing from that query. The gap between opendir and
# readdir is microseconds; minutes cover a reader stalled by a loaded machine, at the
# cost of one old copy of a day on disk for that long.
RETIRED_GRACE = timedelta(minutes=10)
_RETIRED_STAMP = "%Y%m%dT%H%M%SZ"
_RETIRED_NAME = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]+")

log = logging.getLogger(__name__)


def retired_name(token: str, now: float | None = None) -> str:
    """``<UTC retire time>-<token>``: a sweep reads the age from the name (no stat)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return f"{moment.strftime(_RETIRED_STAMP)}-{token}"


def retired_at(name: str) -> float | None:
    """Epoch seconds a retired directory's name records; None for any other name."""
    match = _RETIRED_NAME.fullmatch(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), _RETIRED_STAMP).replace(tzinfo=timezone.utc).timestamp()


def retire_directory(path: str, retired: str, token: str, now: float | None = None) -> str:
    """Rename ``path`` into the folder ``retired`` (same filesystem) under a retired name."""
    target = os.path.join(retired, retired_name(token, now))
    attempts = 3
    while True:
        os.makedirs(retired, exist_ok=True)
        try:
            os.rename(path, target)
            return target
        except FileNotFoundError:
            # A sweep removed the (empty) folder between makedirs and rename: make it again.
            attempts -= 1
            if not attempts or not os.path.exists(path):
                raise


def sweep_retired_directories(retired: str, grace: timedelta = RETIRED_GRACE, now: float | None = None) -> list[str]:
    """Remove the directories in ``retired`` retired longer than ``grace`` ago (by their
    names), then ``retired`` itself once empty; returns the paths removed."""
    cutoff = (time.time() if now is None else now) - grace.total_seconds()
    removed = []
    try:
        names = sorted(os.listdir(retired))
    except FileNotFoundError:
        return removed
    for name in names:
        stamp = retired_at(name)
        if stamp is not None and stamp < cutoff:
            shutil.rmtree(os.path.join(retired, name), ignore_errors=True)
            removed.append(os.path.join(retired, name))
    with suppress(OSError):
        os.rmdir(retired)  # only when empty; a swap retiring into it makes it again
    return removed


def sweep_retired_days(location: LakeLocation, now: float | None = None) -> list[str]:
    """Remove this tenant's swapped-out day directories retired longer than
    :data:`RETIRED_GRACE` ago (local lake; every later swap of a day sweeps that day's
    too). No lock: a swap retiring into a folder this empties makes it again. ``now``:
    epoch seconds (default: the time now; tests). Returns the paths removed."""
    if not location.is_local:
        return []
    location.fs.invalidate_cache()
    removed = []
    for table in SCHEMAS:
        for day in retired_compaction_days(location, table):
            removed += sweep_retired_directories(location.path(compaction_retired_directory(table, day)), now=now)
        with suppress(OSError):  # once empty (a swap retiring into it makes it again)
            os.rmdir(location.path(COMPACTION_RETIRED_DIR, table))
    with suppress(OSError):
        os.rmdir(location.path(COMPACTION_RETIRED_DIR))
    location.fs.invalidate_cache()
    if removed:
        log.info("removed %d swapped-out day directories past their grace", len(removed))
    return removed
