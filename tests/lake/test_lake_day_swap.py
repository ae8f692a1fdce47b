"""The local day swap (storage.swap_local_directory): the swapped-out directory is retired
(lake.retired: renamed under ``_staging/compaction_retired/``) and removed only after
RETIRED_GRACE, so a reader that opened the day directory before the swap still lists
every old file."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mde_pipeline.lake import storage
from mde_pipeline.lake.retired import RETIRED_GRACE, retired_at, retired_name, sweep_retired_directories
from mde_pipeline.lake.storage import recover_local_directory, swap_local_directory

T0 = datetime(2025, 3, 2, 4, 0, tzinfo=timezone.utc).timestamp()
GRACE = RETIRED_GRACE.total_seconds()
OLD = {"interval=20250301T00.parquet": b"old-0", "interval=20250301T01.parquet": b"old-1", "_compaction.json": b"{}"}
NEW = {"compacted-abc-000.parquet": b"new", "_compaction.json": b"{}"}


@pytest.fixture(params=["exchange", "two renames"])
def day(request, tmp_path, monkeypatch):
    """(live, staging, retired) of one day, ``live`` holding OLD; both ways of swapping."""
    if request.param == "two renames":
        monkeypatch.setattr(storage, "renameat2_exchange", lambda source, target: False)
    live = tmp_path / "alert_ips" / "date=2025-03-01"
    staging = tmp_path / "_staging" / "compaction" / "alert_ips" / "date=2025-03-01"
    retired = tmp_path / "_staging" / "compaction_retired" / "alert_ips" / "date=2025-03-01"
    swap_local_directory(str(live), OLD, str(staging), str(retired), now=T0)
    return live, staging, retired


def _contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_a_reader_that_opened_the_day_before_the_swap_lists_and_reads_every_old_file(day):
    live, staging, retired = day
    listing = os.scandir(live)  # opendir now; its entries are read below, after the swap
    handle = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        swap_local_directory(str(live), NEW, str(staging), str(retired), now=T0 + 60)
        assert {entry.name for entry in listing} == set(OLD)
        for name, content in OLD.items():
            fd = os.open(name, os.O_RDONLY, dir_fd=handle)
            with os.fdopen(fd, "rb") as file:
                assert file.read() == content
    finally:
        listing.close()
        os.close(handle)
    assert _contents(live) == NEW
    [kept] = retired.iterdir()
    assert _contents(kept) == OLD and retired_at(kept.name) == T0 + 60
    assert not staging.exists()


def test_a_removed_directory_lists_nothing_to_a_reader_that_opened_it(tmp_path):
    """Why the swap retires instead of removing: the race the test above guards against."""
    live = tmp_path / "day"
    live.mkdir()
    for name, content in OLD.items():
        (live / name).write_bytes(content)
    listing = os.scandir(live)
    os.rename(live, tmp_path / "aside")
    shutil.rmtree(tmp_path / "aside")
    assert [entry.name for entry in listing] == []  # the whole day silently missing
    listing.close()


def test_later_swaps_remove_only_directories_retired_longer_than_the_grace(day):
    live, staging, retired = day
    swap_local_directory(str(live), NEW, str(staging), str(retired), now=T0)
    first = {p.name for p in retired.iterdir()}
    swap_local_directory(str(live), OLD, str(staging), str(retired), now=T0 + GRACE - 60)
    assert first < {p.name for p in retired.iterdir()}  # still within its grace: kept
    swap_local_directory(str(live), NEW, str(staging), str(retired), now=T0 + GRACE + 1)
    names = {p.name for p in retired.iterdir()}
    assert not names & first and len(names) == 2
    assert _contents(live) == NEW


def test_the_sweep_decides_by_the_retired_name_and_leaves_other_names(tmp_path):
    retired = tmp_path / "retired"
    old, young = retired / retired_name("aaaa", T0 - GRACE - 1), retired / retired_name("bbbb", T0 - GRACE + 1)
    other = retired / "not-a-retired-dir"
    for directory in (old, young, other):
        directory.mkdir(parents=True)
        (directory / "f.parquet").write_bytes(b"x")
        os.utime(directory / "f.parquet", (0, 0))  # mtimes say nothing: the name does
    assert sweep_retired_directories(str(retired), now=T0) == [str(old)]
    assert sorted(p.name for p in retired.iterdir()) == sorted([young.name, other.name])
    shutil.rmtree(other)
    assert sweep_retired_directories(str(retired), now=T0 + GRACE) == [str(young)]
    assert not retired.exists()  # the emptied folder goes too
    assert sweep_retired_directories(str(retired), now=T0) == []


def test_recovery_ignores_retired_directories_and_retires_leftovers(day):
    live, staging, retired = day
    swap_local_directory(str(live), NEW, str(staging), str(retired), now=T0)
    [kept] = retired.iterdir()
    recover_local_directory(str(live), str(staging), "_compaction.json", str(retired), now=T0)
    assert _contents(live) == NEW and [p.name for p in retired.iterdir()] == [kept.name]

    # A leftover of a swap killed right after the exchange (the previous day, still in
    # staging) is retired, not removed: a reader may be listing it.
    (staging / "0123456789ab.new").mkdir(parents=True)
    (staging / "0123456789ab.new" / "interval=20250301T00.parquet").write_bytes(b"old-0")
    recover_local_directory(str(live), str(staging), "_compaction.json", str(retired), now=T0 + 5)
    assert not staging.exists() and _contents(live) == NEW
    assert sorted(retired_at(p.name) for p in retired.iterdir()) == [T0, T0 + 5]
