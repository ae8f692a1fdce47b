"""Named locks of the lake, so that two writers of the same files never interleave.

Each file commit is atomic on its own; an interval has two files (``alerts`` and
``alert_ips``). Without a lock, a backfill and a scheduled run committing the same hour
at the same moment could leave one run's ``alerts`` next to the other run's
``alert_ips``. Under the lock the last committer's pair wins whole. The hourly commit
and compaction both take the day's lock, ``date=YYYY-MM-DD`` (:func:`day_lock`).

* local lake: ``fcntl.flock`` on ``<root>/_locks/<name>.lock`` (released by the OS when
  the holder dies);
* blob lake: a lease on the blob ``<root>/_locks/<name>.lock``, renewed while held;
  it expires ``LEASE_SECONDS`` after a holder dies, so a killed commit blocks the next
  one for at most that long. A holder whose renewals fail until its lease may have
  expired has lost the lock: :func:`check_held` (called by the writers before every
  destructive step) then raises :class:`LakeLockLost`, so it stops writing before
  another holder can start.

The lock only guards the commit step (two renames or two uploads of small files), not
the work before it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mde_pipeline.lake.layout import day_lock_name, lock_file
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.tenants import require_tenant

LEASE_SECONDS = 15  # Azure's shortest: a dead holder's lease is gone soonest
DEFAULT_TIMEOUT_SECONDS = 300.0
# A lease not renewed for this long may be gone by the time a write lands: lost.
LEASE_SAFE_SECONDS = LEASE_SECONDS - 4
_RENEW_EVERY = LEASE_SECONDS / 3
_RETRY_RENEW_EVERY = 1.0

log = logging.getLogger(__name__)


class LakeLockTimeout(RuntimeError):
    """Another writer held the lock for longer than the timeout (local flock or blob lease).

    Not a ``TimeoutError``: fsspec's sync() would turn that into its own FSTimeoutError.
    """


class LakeLockLost(RuntimeError):
    """The blob lease of a held lock could not be renewed: another writer may hold it now.

    Raised by :func:`check_held` before a destructive step; what was written so far is
    recoverable (the next holder finishes or discards it).
    """


@dataclass
class _LeaseState:
    path: str
    renewed_at: float = field(default_factory=time.monotonic)
    lost: threading.Event = field(default_factory=threading.Event)
    reason: str = ""


_held: dict[str, _LeaseState] = {}  # lock path -> state, for the leases this process holds


def check_held(location: LakeLocation, name: str) -> None:
    """Raise :class:`LakeLockLost` when this process's lease on lock ``name`` is lost.

    A no-op for a local lake (flock cannot be lost while the process lives) and for a
    lock this process does not hold.
    """
    state = _held.get(location.path(lock_file(name)))
    if state is None:
        return
    age = time.monotonic() - state.renewed_at
    if state.lost.is_set() or age > LEASE_SAFE_SECONDS:
        reason = state.reason or f"not renewed for {age:.0f} s"
        raise LakeLockLost(f"lost lock {state.path} ({reason}): stopped before changing the lake; the next run recovers")


def check_day_held(location: LakeLocation, day: date | datetime | str) -> None:
    """:func:`check_held` for the day's lock."""
    check_held(location, day_lock_name(day))


@contextmanager
def lake_lock(location: LakeLocation, name: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the lock ``name`` (e.g. ``date=2024-01-01``) of this lake. Not reentrant."""
    relative = lock_file(name)
    if location.is_local:
        with _file_lock(location.path(relative), timeout):
            yield
    else:
        with _blob_lease(location, location.path(relative), timeout):
            yield


@contextmanager
def day_lock(location: LakeLocation, day: date | datetime | str) -> Iterator[None]:
    """Exclusive right to change one day's files (both tables), across processes and hosts.

    :func:`lake_lock` named ``date=YYYY-MM-DD``. Not reentrant: take it once per change.
    Every change to a day goes through it, so it is where a root location (no tenant) is
    refused: each tenant's days are locked and written apart.
    """
    require_tenant(location)
    with lake_lock(location, day_lock_name(day)):
        yield


@contextmanager
def _file_lock(path: str, timeout: float) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LakeLockTimeout(f"lock {path} stayed held by another writer for {timeout:g} s") from None
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _blob_lease(location: LakeLocation, path: str, timeout: float) -> Iterator[None]:
    from fsspec.asyn import sync

    fs: Any = location.fs
    container, blob = path.split("/", 1)
    lease = sync(fs.loop, _acquire_lease, fs, container, blob, timeout)
    if lease is None:
        raise LakeLockTimeout(f"lock {path} stayed leased by another commit for {timeout:.0f} s")
    state = _LeaseState(path)
    _held[path] = state
    renewing = asyncio.run_coroutine_threadsafe(_keep_renewing(lease, state), fs.loop)
    try:
        yield
    finally:
        _held.pop(path, None)
        renewing.cancel()
        try:
            sync(fs.loop, lease.release)
        except Exception as exc:  # the lease expires on its own; the commit itself succeeded
            log.warning("could not release lock %s (%s); it expires in %d s", path, type(exc).__name__, LEASE_SECONDS)


async def _keep_renewing(lease: Any, state: _LeaseState) -> None:
    """Renew every few seconds; retry a failed renewal until the lease may have expired,
    then mark it lost (the writer's next :func:`check_held` raises)."""
    delay = _RENEW_EVERY
    while True:
        await asyncio.sleep(delay)
        try:
            await lease.renew()
        except Exception as exc:
            age = time.monotonic() - state.renewed_at
            taken = getattr(exc, "status_code", None) in (409, 412)  # broken, or another lease id
            if taken or age + _RETRY_RENEW_EVERY > LEASE_SAFE_SECONDS:
                state.reason = f"renewal failed: {type(exc).__name__}"
                state.lost.set()
                log.error("lost lock %s (%s): its holder stops writing", state.path, state.reason)
                return
            log.warning("could not renew lock %s (%s); retrying", state.path, type(exc).__name__)
            delay = _RETRY_RENEW_EVERY
        else:
            state.renewed_at = time.monotonic()
            delay = _RENEW_EVERY


async def _acquire_lease(fs: Any, container: str, blob: str, timeout: float) -> Any:
    """The lease, or None when it stayed taken for ``timeout`` seconds."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    client = fs.service_client.get_blob_client(container, blob)
    try:
        await client.upload_blob(b"", overwrite=False)
    except ResourceExistsError:
        pass  # created by an earlier commit (possibly leased right now)
    except HttpResponseError as exc:
        if exc.status_code not in (409, 412):  # exists and leased
            raise
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return await client.acquire_lease(lease_duration=LEASE_SECONDS)
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) not in ("LeaseAlreadyPresent", "LeaseIdMismatchWithLeaseOperation") and exc.status_code != 409:
                raise
        if time.monotonic() + delay > deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
