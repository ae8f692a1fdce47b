"""How much of the budget a backfill may take: the rest is kept for the hourly loads.

The pool's priority rule (airflow/priority.py) only decides who gets a free *slot*; the
budget ledger served calls first come, first served. Measured at the real windows
(``python -m bench soak``, 2026-12-03): a backfill spent the hour's 1,500 calls in its
first 15 minutes and the scheduled hour that ended next committed 44 minutes late,
waiting for the window to move, then racing the backfill for every call that left it.

So every reservation has a kind:

- **foreground**: scheduled, manual and asset-triggered runs (the hourly loads), the
  connection test, the tools. Never capped here: with no backfill running the whole
  budget is theirs.
- **background**: backfill runs. A background reservation must fit every window like
  any other, and in addition

  1. it never takes the last free call of a window (windows.leave_one_free, applied by
     the ledger): when a call leaves a full window, an hourly load waiting for it gets
     it, not the backfill that woke with it;
  2. the background reservations in each shorter window (the minute) stay below half
     its limit, so a backfill spends the hour's budget over at least 30 of its 60
     minutes and its calls leave the window as spread out as they came: a load that
     finds the hour full takes each of them as it leaves, at 50 a minute or more,
     whatever the phase of the hour it starts in;
  3. the background reservations in the longest window stay below
     ``limit - ceil(limit * scheduled_reserve_share)`` (connection extra, default 0):
     calls kept free for a load to start at full speed, paid for in fill.

What was tried and measured against it (tests/unit/test_backfill_reserve.py's run of
five hours at the real windows, loads of 151, 400 and 800 calls, first loads in five
phases of the hour): a reserve learned from the foreground's per-minute history (the
most calls the hourly loads used in an hour) filled 0.85-0.96 of the hour, because
loads spread differently from hour to hour are counted twice and because a load
arriving while the previous one's calls are still in the window waits for them anyway;
pacing the backfill to its hourly share per minute made loads slower (they take the
freed calls at the backfill's pace). These rules: worst lag of a load after the first
hour 7.7 / 12.8 / 21 minutes (5 of them the settle delay), fill 0.997.
"""

from __future__ import annotations

import math
from typing import Sequence

from mde_pipeline.api.windows import Window

DEFAULT_SCHEDULED_RESERVE_SHARE = 0.0
SHORT_WINDOW_BACKFILL_SHARE = 0.5


def background_windows(windows: Sequence[Window], *, floor_share: float) -> tuple[Window, ...]:
    """The limits background reservations must keep among themselves, window by window
    (``windows``: the effective ones, share applied and margin added)."""
    if not 0 <= floor_share < 1:
        raise ValueError(f"scheduled_reserve_share must be in [0, 1), got {floor_share!r}")
    longest = max(w.seconds for w in windows)
    limits = []
    for window in windows:
        if window.seconds >= longest:
            kept = math.ceil(window.limit * floor_share - 1e-9)
        else:
            kept = window.limit - math.floor(window.limit * SHORT_WINDOW_BACKFILL_SHARE + 1e-9)
        limits.append(Window(max(1, window.limit - kept), window.seconds))
    return tuple(limits)
