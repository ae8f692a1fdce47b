"""Atomic writes and directory swaps: how bytes land in the lake, local or blob.

Files (:func:`write_files_atomic`), atomic for readers:

* local filesystem: the bytes go to a hidden temp file in the target directory
  (``.<name>.<random>.tmp``: a leading dot hides it from Spark/Trino/Hive and the
  ``.tmp`` suffix from ``*.parquet`` globs, which DuckDB applies to dot files too), are
  fsynced, and ``os.replace`` swaps it in. A crash leaves the old file (or none) plus
  at most a stray temp file, removed by a later commit once it is old.
* blob storage (abfs): every file is serialised in memory, its blocks are uploaded
  with Put Block (stored, invisible), and only then does one Put Block List per file
  make the new version visible, whole. A failed or killed upload leaves the previous
  blob. adlfs' ``open(path, "wb")`` is NOT used: closing it (which ``with`` does even
  on an exception) commits whatever was written, half a file included.

Several files are prepared (local) or fully uploaded (blob) before any is committed,
then committed back to back.

Directories (:func:`swap_local_directory`, :func:`finish_blob_swap`): how compaction
replaces a whole day. Local: the new directory is built complete next to the live one
and exchanged with it in one ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15; ext4, xfs,
btrfs, tmpfs), falling back to two renames (a window of microseconds in which the day is
absent, logged) where the kernel or filesystem refuses; the previous directory is then
retired (lake.retired), not removed at once. Blob (no directory rename): the new files
are staged complete (their manifest last: the commit point), then copied in (manifest
last) and only then the old ones deleted; a crash is finished from the staged copy by
the next run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import timedelta
from typing import IO, Any

from mde_pipeline.lake.layout import TEMP_SUFFIX, base_name, is_day_data_file
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.retired import RETIRED_GRACE, retire_directory, sweep_retired_directories

# A temp file this old belongs to a writer that died; younger ones may be in use.
STALE_TEMP_AGE = timedelta(hours=1)
_WRITE_CHUNK = 8 * 1024 * 1024
_BLOB_BLOCK = 8 * 1024 * 1024
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

log = logging.getLogger(__name__)


class LakeWriteError(RuntimeError):
    """Writing to the lake failed; what was committed before stays as it was."""


# --------------------------------------------------------------------------- files


class LakeWriteFenced(LakeWriteError):
    """A conditional blob write found the file changed since its writer read it: another
    writer holds the day now (this one's lease lapsed). Nothing of this write landed."""


# The ETag a conditional write expects (``if_match`` of write_files_atomic): the blob's
# ETag, or ABSENT for "the blob must not exist yet" (If-None-Match: *).
ABSENT = None


def write_files_atomic(
    location: LakeLocation,
    files: Mapping[str, bytes],
    check_held: Callable[[], None] = lambda: None,
    *,
    if_match: Mapping[str, str | None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write each ``relative path -> bytes`` so that readers see the old file or the new one.

    All files are prepared first (local) or uploaded (blob) and committed back to back;
    ``check_held`` runs just before the first commit (it raises when the caller's lock
    was lost). ``if_match`` (blob only; a local flock cannot be lost by a live writer):
    relative path -> the ETag the blob must still have (:func:`blob_etag`, or ``ABSENT``)
    for its Put Block List to land, the fence of a writer whose lease lapsed while it
    stalled after ``check_held`` (:class:`LakeWriteFenced`). ``metadata`` (blob only): set on
    every file written (a commit record's token). Returns ``relative path -> uri``.
    """
    if location.is_local:
        return _write_local(location, files, check_held)
    return _write_blob(location, files, check_held, dict(if_match or {}), dict(metadata or {}))


def blob_state(location: LakeLocation, relative: str) -> tuple[str | None, dict[str, str]]:
    """(ETag, metadata) of a blob of the lake now; (``ABSENT``, {}) when there is none.
    Blob lakes only."""
    from azure.core.exceptions import ResourceNotFoundError
    from fsspec.asyn import sync

    container, blob = location.path(relative).split("/", 1)
    client = location.fs.service_client.get_blob_client(container, blob)
    try:
        properties = sync(location.fs.loop, client.get_blob_properties)
    except ResourceNotFoundError:
        return ABSENT, {}
    return properties.etag, dict(properties.metadata or {})


def _open_new_file(path: str) -> IO[bytes]:
    # Seam for the crash tests: they swap it for a file that dies halfway.
    return open(path, "xb")


def _write_local(location: LakeLocation, files: Mapping[str, bytes], check_held: Callable[[], None]) -> dict[str, str]:
    prepared: list[tuple[str, str]] = []  # (temp path, final path)
    try:
        for relative, data in files.items():
            final = location.path(relative)
            directory, name = os.path.split(final)
            os.makedirs(directory, exist_ok=True)
            temp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
            prepared.append((temp, final))
            with _open_new_file(temp) as handle:
                view = memoryview(data)
                for offset in range(0, len(view), _WRITE_CHUNK):
                    handle.write(view[offset : offset + _WRITE_CHUNK])
                handle.flush()
                os.fsync(handle.fileno())
        check_held()
        for temp, final in prepared:
            os.replace(temp, final)
    except BaseException:
        for temp, _ in prepared:
            with suppress(FileNotFoundError):
                os.unlink(temp)
        raise
    # The renames are durable once their directories are synced.
    for directory in {os.path.dirname(final) for _, final in prepared}:
        fsync_directory(directory)
        remove_stale_temp_files(directory)
    return {relative: location.uri(relative) for relative in files}


def fsync_directory(directory: str) -> None:
    with suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temp_files(directory: str, older_than: timedelta = STALE_TEMP_AGE, now: float | None = None) -> list[str]:
    """Remove temp files of dead writers (local lake) from one directory."""
    removed = []
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    with suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                with suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.path)
    if removed:
        log.info("removed %d stale temp files in %s", len(removed), directory)
    return removed


def _write_blob(
    location: LakeLocation,
    files: Mapping[str, bytes],
    check_held: Callable[[], None],
    if_match: dict[str, str | None],
    metadata: dict[str, str],
) -> dict[str, str]:
    from fsspec.asyn import sync

    fs: Any = location.fs
    items = [
        (location.uri(relative), location.path(relative), data, _match_conditions(relative, if_match))
        for relative, data in files.items()
    ]
    try:
        sync(fs.loop, _stage_then_commit_blobs, fs, items, check_held, metadata)
    finally:
        fs.invalidate_cache()
    return {relative: location.uri(relative) for relative in files}


def _match_conditions(relative: str, if_match: Mapping[str, str | None]) -> dict[str, Any]:
    """The azure-core conditional-request keywords of one file's Put Block List."""
    from azure.core import MatchConditions

    if relative not in if_match:
        return {}
    etag = if_match[relative]
    if etag is ABSENT:
        return {"match_condition": MatchConditions.IfMissing}
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


async def _stage_then_commit_blobs(
    fs: Any, items: list[tuple[str, str, bytes, dict[str, Any]]], check_held: Callable[[], None], metadata: dict[str, str]
) -> None:
    """Put Block for every block of every file, then one Put Block List per file.

    Staged blocks are invisible to readers; each Put Block List swaps its blob whole.
    A failure while staging (the long part) changes nothing.
    """
    import base64

    from azure.storage.blob import BlobBlock

    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    staged = []
    for uri, path, data, conditions in items:
        container, blob = path.split("/", 1)
        client = fs.service_client.get_blob_client(container, blob)
        block_ids = []
        try:
            for offset in range(0, len(data), _BLOB_BLOCK):
                # Same-length ids for every block of a blob, as the service requires.
                block_id = base64.b64encode(uuid.uuid4().bytes).decode("ascii")
                await client.stage_block(block_id, data[offset : offset + _BLOB_BLOCK])
                block_ids.append(BlobBlock(block_id=block_id))
        except Exception as exc:
            raise LakeWriteError(f"upload of {uri} failed ({type(exc).__name__}); nothing was committed") from exc
        staged.append((uri, client, block_ids, conditions))
    check_held()
    for uri, client, block_ids, conditions in staged:
        try:
            # metadata as adlfs' own writes set it, so adlfs lists these as files.
            await client.commit_block_list(block_ids, metadata={**metadata, "is_directory": "false"}, **conditions)
        except (ResourceModifiedError, ResourceExistsError) as exc:
            if not conditions:
                raise LakeWriteError(f"commit of {uri} failed ({type(exc).__name__}); that file is unchanged") from exc
            raise LakeWriteFenced(
                f"{uri} changed since this writer read it: another writer holds its day (this writer's lock lapsed); "
                "nothing was written"
            ) from exc
        except Exception as exc:
            raise LakeWriteError(f"commit of {uri} failed ({type(exc).__name__}); that file is unchanged") from exc


# --------------------------------------------------------------------------- directories


def renameat2_exchange(source: str, target: str) -> bool:
    """Swap two paths atomically; False where the platform cannot (caller falls back)."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), source)


def _fsync_tree(directory: str) -> None:
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as handle:
            os.fsync(handle.fileno())
    fsync_directory(directory)


def swap_checkpoint(step: str) -> None:
    """Called between the steps of a swap: the seam of the crash tests."""
    return None


def swap_local_directory(live: str, files: Mapping[str, bytes], staging: str, retired: str, now: float | None = None) -> None:
    """Make the local directory ``live`` hold exactly ``files`` (name -> bytes), atomically.

    The new directory is built complete as ``<staging>/<token>.new`` and exchanged with
    ``live``; the previous one is renamed into ``retired``, not removed (a reader that
    opened ``live`` just before still lists it), and the ones there past RETIRED_GRACE
    go (lake.retired; ``now``: epoch seconds, tests). A crash leaves ``live`` complete
    (old or new) plus leftovers that :func:`recover_local_directory` clears.
    """
    token = uuid.uuid4().hex[:12]
    new, old = os.path.join(staging, f"{token}.new"), os.path.join(staging, f"{token}.old")
    os.makedirs(new)
    try:
        for name, content in files.items():
            with open(os.path.join(new, name), "xb") as handle:
                handle.write(content)
        _fsync_tree(new)
        swap_checkpoint("staged")
        if not os.path.exists(live):
            os.makedirs(os.path.dirname(live), exist_ok=True)
            os.rename(new, live)
            previous = None
        elif renameat2_exchange(new, live):
            previous = new  # `new` now names the previous directory
        else:
            log.warning("renameat2(RENAME_EXCHANGE) is not available here: swapping %s with two renames", live)
            os.rename(live, old)
            swap_checkpoint("live moved aside")
            os.rename(new, live)
            previous = old
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)  # still the staged copy: nothing was exchanged
        raise
    swap_checkpoint("exchanged")
    if previous is not None:
        retire_directory(previous, retired, token, now)
    swap_checkpoint("retired")
    sweep_retired_directories(retired, RETIRED_GRACE, now=now)
    with suppress(OSError):
        os.rmdir(staging)


def recover_local_directory(live: str, staging: str, complete_marker: str, retired: str, now: float | None = None) -> None:
    """Clear what an interrupted :func:`swap_local_directory` left in ``staging``.

    ``live`` is always complete unless the two-rename fallback died between its renames;
    then it is put back from the new directory (if it holds ``complete_marker``) or the
    previous one. The other leftovers are retired (renamed into ``retired``), not
    removed: after an exchange, the ``.new`` one is the previous day a reader may be
    listing.
    """
    try:
        entries = sorted(os.path.join(staging, name) for name in os.listdir(staging))
    except FileNotFoundError:
        return
    if not os.path.exists(live):
        complete = [p for p in entries if p.endswith(".new") and os.path.exists(os.path.join(p, complete_marker))]
        previous = [p for p in entries if p.endswith(".old")]
        if complete or previous:
            source = complete[-1] if complete else previous[-1]
            log.warning("restoring %s from %s after an interrupted swap", live, source)
            os.rename(source, live)
            entries.remove(source)
    for path in entries:
        retire_directory(path, retired, uuid.uuid4().hex[:12], now)
    with suppress(OSError):
        os.rmdir(staging)


def finish_blob_swap(
    location: LakeLocation, directory: str, staged: str, last: str, check_held: Callable[[], None] = lambda: None
) -> None:
    """Make the blob ``directory`` hold exactly the complete copy at ``staged`` (fs paths).

    ``staged`` is complete when it holds ``last`` (the manifest, committed after every
    other staged file): that is the commit point. New before old: every staged file is
    copied in (``last`` last), then each live file the copy does not name is deleted,
    then the staged marker, then the rest of the staging. Until the deletes finish a
    reader can see part of the day twice (never a row missing). Rerunnable: a crash
    anywhere is finished by calling it again with the same ``staged`` (``staged`` loses
    ``last`` first, so it is never mistaken for complete while half removed).
    ``check_held`` runs before every destructive step (the caller's lock still held).
    """
    fs = location.fs
    fs.invalidate_cache()
    staged_names = sorted((base_name(p) for p in fs.ls(staged, detail=False)), key=lambda n: (n == last, n))
    if last not in staged_names:
        raise LakeWriteError(f"{staged} is not a complete staged copy (no {last})")
    for name in staged_names:
        check_held()
        fs.pipe_file(f"{directory}/{name}", fs.cat_file(f"{staged}/{name}"), overwrite=True)
        swap_checkpoint("copying")
    swap_checkpoint("copied")
    fs.invalidate_cache()
    for path in fs.ls(directory, detail=False):
        if base_name(path) not in staged_names and is_day_data_file(base_name(path)):
            check_held()
            with suppress(FileNotFoundError):
                fs.rm_file(path)
            swap_checkpoint("deleting")
    swap_checkpoint("swapped")
    check_held()
    discard_blob_staging(location, staged, last)


def discard_blob_staging(location: LakeLocation, staged: str, last: str) -> None:
    """Remove a staged copy, its marker ``last`` first."""
    fs = location.fs
    with suppress(FileNotFoundError):
        fs.rm_file(f"{staged}/{last}")
    swap_checkpoint("unmarked")
    with suppress(FileNotFoundError):
        fs.rm(staged, recursive=True)
    fs.invalidate_cache()
