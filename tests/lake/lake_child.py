"""Writer processes for the crash and concurrency tests (run as ``python lake_child.py ...``).

* ``stall-local ROOT MARKER SEED``: commits a large interval to a local lake; the
  large staged ``alert_ips`` file (the first of the commit record's files) stops
  halfway: half its bytes are on disk, then the child writes MARKER and waits to be killed.
* ``stall-blob CONNECTION_STRING ROOT MARKER SEED``: commits a large interval to
  Azurite and stops just before the first Put Block List: every block of both files
  is on the server, uncommitted; then it writes MARKER and waits to be killed.
* ``compact-stall CONNECTION_STRING ROOT MARKER STEP``: compacts ``alert_ips`` of
  START's day on Azurite and stops at STEP (a ``storage.swap_checkpoint`` name, the
  first time it is reached, or ``staging``: after the first staged file is committed,
  before the staged manifest), writes MARKER and waits to be killed.
* ``commit-kill [CONNECTION_STRING] ROOT SCENARIO STEP MARKER``: makes the commit of
  commit_scenarios.SCENARIOS[SCENARIO] (its lake set up by the parent) and stops at STEP
  (a commit_log.commit_checkpoint name), writes MARKER and waits to be killed.
* ``commit-stall-after-check CONNECTION_STRING ROOT MARKER SEED``: commits its own version
  of START's hour on Azurite and stalls right before the first Put Block List into the
  hour's live files (its lock check passed), writes MARKER, waits for a line on stdin,
  then goes on; exits 5 with the error's type on stderr when the commit fails.
* ``retention-kill CONNECTION_STRING ROOT STEP MARKER``: removes START's day (retention,
  keeping 3 days before 2024-03-10) on Azurite and stops at STEP (a
  ``retention.retention_checkpoint`` name), writes MARKER and waits to be killed.
* ``recent-index-kill ROOT TENANT STEP MARKER``: builds TENANT's recent IP index on a local
  lake and stops at STEP (a ``recent_index.recent_index_checkpoint`` name), writes MARKER
  and waits to be killed.
* ``commit-loop ROOT SEED TIMES [CONNECTION_STRING]``: commits its own version of one
  interval TIMES times (local root, or an abfs root through CONNECTION_STRING).
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "plugins"), str(HERE)]

from lake_data import TENANT, WrappedFile, large_interval, sample_interval  # noqa: E402

from mde_pipeline.lake import storage  # noqa: E402
from mde_pipeline.lake.commit import commit_interval  # noqa: E402
from mde_pipeline.lake.location import LakeLocation, parse_blob_root, resolve_lake_location  # noqa: E402

START = datetime(2024, 2, 29, 23, tzinfo=timezone.utc)
BIG = {"alerts": 40_000, "ips_per_alert": 10}


def _wait_to_be_killed(marker: str, note: str) -> None:
    Path(marker + ".part").write_text(note)
    os.replace(marker + ".part", marker)
    sys.stdin.read()  # blocks until the parent kills us (or closes stdin)
    os._exit(3)  # never reached when killed: exiting would be a test failure


class _StallingFile(WrappedFile):
    """A real file that accepts half of the first write, then stalls."""

    def __init__(self, path: str, marker: str) -> None:
        super().__init__(path)
        self._marker = marker

    def write(self, data) -> int:
        half = len(data) // 2
        self._file.write(data[:half])
        self._file.flush()
        os.fsync(self._file.fileno())
        _wait_to_be_killed(self._marker, self._file.name)
        return half


def _blob_location(connection_string: str, root: str) -> LakeLocation:
    # Straight to adlfs: the child stays fast (no Airflow import); location resolution
    # through Airflow is tested in-process.
    from adlfs import AzureBlobFileSystem

    protocol, container, account, prefix = parse_blob_root(root)
    fs = AzureBlobFileSystem(connection_string=connection_string)
    return LakeLocation(url=root, protocol="abfs", root=f"{container}/{prefix}", fs=fs, conn_id=None, account_name=account)


def stall_local(root: str, marker: str, seed: str) -> None:
    storage._open_new_file = lambda path: _StallingFile(path, marker) if ".alert_ips.parquet." in path else open(path, "xb")
    commit_interval(resolve_lake_location(root).for_tenant(TENANT), START, large_interval(START, seed=int(seed), **BIG))
    os._exit(4)  # the commit must never complete


def stall_blob(connection_string: str, root: str, marker: str, seed: str) -> None:
    from azure.storage.blob.aio import BlobClient

    async def stall_before_commit(self, *args, **kwargs):
        _wait_to_be_killed(marker, "blocks staged")
        await asyncio.sleep(3600)

    BlobClient.commit_block_list = stall_before_commit
    location = _blob_location(connection_string, root).for_tenant(TENANT)
    commit_interval(location, START, large_interval(START, seed=int(seed), **BIG))
    os._exit(4)


def compact_stall(connection_string: str, root: str, marker: str, step: str) -> None:
    from azure.storage.blob.aio import BlobClient

    from mde_pipeline.lake.compaction import compact_day

    if step == "staging":
        original = BlobClient.commit_block_list
        calls = []

        async def stall_second_commit(self, *args, **kwargs):
            calls.append(self.blob_name)
            if len(calls) == 2:
                _wait_to_be_killed(marker, f"staging: committed {calls[0]}")
            return await original(self, *args, **kwargs)

        BlobClient.commit_block_list = stall_second_commit
    else:
        storage.swap_checkpoint = lambda name: _wait_to_be_killed(marker, name) if name == step else None
    compact_day(_blob_location(connection_string, root).for_tenant(TENANT), "alert_ips", START)
    os._exit(4)


def commit_loop(root: str, seed: str, times: str, connection_string: str | None = None) -> None:
    location = (_blob_location(connection_string, root) if connection_string else resolve_lake_location(root)).for_tenant(TENANT)
    tables = sample_interval(START, alerts=300, ips_per_alert=5, seed=int(seed))
    for _ in range(int(times)):
        commit_interval(location, START, tables)


def commit_kill(*arguments: str) -> None:
    from commit_scenarios import SCENARIOS

    from mde_pipeline.lake import commit_log

    *connection, root, name, step, marker = arguments
    location = (_blob_location(connection[0], root) if connection else resolve_lake_location(root)).for_tenant(TENANT)
    commit_log.commit_checkpoint = lambda reached: _wait_to_be_killed(marker, reached) if reached == step else None
    SCENARIOS[name].commit(location)
    os._exit(4)


def commit_stall_after_check(connection_string: str, root: str, marker: str, seed: str) -> None:
    import traceback

    from azure.storage.blob.aio import BlobClient

    original = BlobClient.commit_block_list

    async def stall_before_the_live_hour(self, *args, **kwargs):
        if "/alert_ips/" in self.blob_name and "/interval=" in self.blob_name:
            Path(marker).write_text("stalled")
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return await original(self, *args, **kwargs)

    BlobClient.commit_block_list = stall_before_the_live_hour
    location = _blob_location(connection_string, root).for_tenant(TENANT)
    try:
        commit_interval(location, START.replace(hour=22), sample_interval(START.replace(hour=22), seed=int(seed)))
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(5)
    os._exit(0)


def retention_kill(connection_string: str, root: str, step: str, marker: str) -> None:
    from mde_pipeline.lake import retention

    retention.retention_checkpoint = lambda reached: _wait_to_be_killed(marker, reached) if reached == step else None
    retention.apply_retention(_blob_location(connection_string, root).for_tenant(TENANT), 3, "2024-03-10")
    os._exit(4)


def recent_index_kill(root: str, tenant_id: str, step: str, marker: str) -> None:
    from mde_pipeline.lake import recent_index

    recent_index.recent_index_checkpoint = lambda reached: _wait_to_be_killed(marker, reached) if reached == step else None
    recent_index.build_recent_index(resolve_lake_location(root).for_tenant(tenant_id), force=True)
    os._exit(4)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"stall-local": stall_local, "stall-blob": stall_blob, "compact-stall": compact_stall, "commit-loop": commit_loop,
     "commit-kill": commit_kill, "commit-stall-after-check": commit_stall_after_check, "retention-kill": retention_kill,
     "recent-index-kill": recent_index_kill}[command](*arguments)  # fmt: skip
