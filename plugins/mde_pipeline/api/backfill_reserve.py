"""How much of the budget a backfill may take: the rest is kept for the hourly loads.

The pool's priority rule (airflow/priority.py) only decides who gets a free *slot*; the
budget ledger served calls first come, first served. Measured at the real windows
(``python -m bench soak``, 2026-12-03): a backfill spent the hour's 1,500 calls in its
first 15 minutes and the scheduled hour that ended next committed 44 minutes late,
waiting for the window to move, then racing the backfill for every call that left it.

So every reservation has a kind:

- **foreground**: scheduled, manual and asset-triggered runs (the hourly loads), the
  connection test, the tools. Never capped by the reserve: with no backfill running
  the whole budget is theirs.
- **background**: backfill runs. A background reservation must fit every window like
  any other, and in addition the *background* reservations inside each window must stay
  below ``limit - reserve``:

  * the longest window (the hour): ``reserve`` = the most foreground calls the ledger
    saw in any span of that length during its 24-hour per-minute history, at least
    ``ceil(limit * scheduled_reserve_share)`` (default 2 %, 30 calls an hour: free budget
    for the first hourly load after a backfill starts on a ledger with no history), at
    most ``limit - 1`` (a backfill always moves, however slowly). Only the background's own count is capped,
    not the total: the previous hour's foreground calls leave the window while the next
    hour's arrive, so a cap on the total would keep the reserve empty in every window
    and waste it (the fill target is 0.97 of the budget).
  * every shorter window (the minute): half the limit, so a scheduled run keeps at least
    half the per-minute rate while a backfill runs. A backfill alone still spends the
    hour's budget (50 a minute spends 1,500 in 30 minutes).

The history is per minute, so the peak is taken over ``floor(seconds / 60)`` whole
minutes (60 for the widened 3,601 s window): a load that repeats every hour with the
same shape then counts once, where 61 minutes would count the start of the next hour's
load too (measured in tests/unit/test_backfill_reserve.py: 0.94 of the hour filled
instead of 0.97+). A longest window under 10 minutes (the tests' shortened windows)
keeps the floor only.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from mde_pipeline.api.windows import Window

DEFAULT_SCHEDULED_RESERVE_SHARE = 0.02
SHORT_WINDOW_RESERVE_SHARE = 0.5
# The learned reserve needs a longest window of at least this many whole minutes.
MIN_LEARNING_SPAN_MINUTES = 10
# How long a limiter reuses the reserve it computed (the history moves by minutes).
RESERVE_REFRESH_SECONDS = 60.0


def peak_in_span(per_minute: Mapping[int, int], span_minutes: int) -> int:
    """The most calls in any ``span_minutes`` consecutive minutes of ``per_minute``."""
    minutes = sorted(m for m, calls in per_minute.items() if calls > 0)
    best = total = 0
    first = 0
    for minute in minutes:
        total += per_minute[minute]
        while minutes[first] <= minute - span_minutes:
            total -= per_minute[minutes[first]]
            first += 1
        best = max(best, total)
    return best


def background_windows(
    windows: Sequence[Window], foreground_per_minute: Mapping[int, int], *, floor_share: float
) -> tuple[Window, ...]:
    """The limits background reservations must keep among themselves, window by window.

    ``windows`` are the effective ones (share applied, margin added);
    ``foreground_per_minute`` is the ledger's history of foreground calls per minute."""
    if not 0 <= floor_share < 1:
        raise ValueError(f"scheduled_reserve_share must be in [0, 1), got {floor_share!r}")
    longest = max(w.seconds for w in windows)
    limits = []
    for window in windows:
        if window.seconds >= longest:
            # Minute buckets say nothing about a window of a few minutes (test windows).
            span = int(window.seconds // 60)
            learned = peak_in_span(foreground_per_minute, span) if span >= MIN_LEARNING_SPAN_MINUTES else 0
            reserve = max(math.ceil(window.limit * floor_share - 1e-9), learned)
        else:
            reserve = math.ceil(window.limit * SHORT_WINDOW_RESERVE_SHARE - 1e-9)
        limits.append(Window(max(1, window.limit - reserve), window.seconds))
    return tuple(limits)
