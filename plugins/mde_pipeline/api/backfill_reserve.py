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
     the ledger): when a call leaves a full window, an hourly load asking for it gets
     it, not the backfill that woke with it;
  2. while the backfill *grows* into the hour, its reservations in each shorter window
     (the minute) spread its room in the hour evenly over the time until its own
     oldest call there leaves (an empty hour: 1,500 / 60 = 26 a minute), so every
     minute of its first hour gets calls and a call leaves the hour in every minute
     after it; once the hour is full it *replaces* calls as they leave: its cap in the
     minute is raised to the calls (of either kind) that left the hour in the last
     minute, and to the whole minute when its room in the hour is within the even pace
     (replacing_windows), so a burst that leaves at 100 a minute comes back at that
     pace, a backfill that paused takes the few calls it missed back at once, and the
     hour stays full in the same pattern;
  3. the background reservations in the longest window stay below
     ``limit - ceil(limit * scheduled_reserve_share)`` (connection extra, default 0):
     calls kept free for a load to start at full speed, paid for in fill;
  4. while an hourly load waits for the budget, no background reservation is granted
     (load_waiting_until: a foreground reservation told to wait marks the budget wanted
     until its wait ends plus a grace; each call it then gets renews the mark). Rule 1
     alone hands a load one call of each bunch that leaves together: with four backfill
     tasks waking on the same freed calls, a load got a quarter of them.

A load whose hour is full takes the calls that leave it, and calls leave an hour after
they came: the pattern the backfill grew in repeats every hour. Growing at half the
minute (the rule before the even pace) it filled the hour in 30 minutes and nothing left
for the other 30; a load ready in that gap waited for it, every hour (soak 2026-12-03
15:16: 20.7 minutes; 32 in the simulation). At the even pace a load meets calls leaving
at >= ~25 a minute wherever its hour starts.

Measured on tests/unit/test_backfill_reserve.py's runs of five hours at the real windows
(fake clock; a backfill of four tasks, loads of four; loads of 151, 400 and 800 calls;
the backfill starting in four phases of the hour, alone or with a load as the run
created at unpause does, and the first load in four phases): worst lag of a load after
the first hours 11.6 / 25.8 / 47.3 minutes (5 of them the settle delay; 6.2 / 8.3 /
12.8 where the load's first hour had room), fill >= 0.987 at every second after the
first hour, but for seconds of 0.967 an hour after a load and the backfill started
together (their 16 calls a second leave as fast). With half the minute: 32 / 46 / 57
minutes. What the other rules replaced, on the same runs: with rule 2 capping the
backfill even in a full hour, a load's burst leaving the hour was refilled at 50 a
minute (fill 0.83-0.90, the soak's 0.87); without rule 4, four backfill tasks kept a
400-call load waiting for over an hour. At the real windows (``python -m bench soak``,
README): before the catch-up of rule 2, fill min 0.954 / mean 0.998, scheduled hours
committed 432 s and 547 s after their end; with the even pace (118 minutes), fill min
0.971 / mean 0.999, hours committed 585 s and 456 s after their end, 0 429s.

Tried and dropped (same simulation): a reserve learned from the foreground's per-minute
history (the most calls the hourly loads used in an hour) filled 0.85-0.96 of the hour,
because loads spread differently from hour to hour are counted twice and because a load
arriving while the previous one's calls are still in the window waits for them anyway;
pacing the backfill to its hourly share in a *full* hour too made loads slower (they
take the freed calls at the backfill's pace; growth alone is paced now); a standing
reserve of 25 free calls (fill 0.975) lets a load whose calls leave at the even pace
start 25 calls earlier each hour: a 400-call load ended a minute earlier per hour.
"""

from __future__ import annotations

import math
from typing import Sequence

from mde_pipeline.api.windows import Window, first_inside, seconds_until_free

DEFAULT_SCHEDULED_RESERVE_SHARE = 0.0
# How long a waiting hourly load's mark outlives its last ask: covers one call's round
# trip and the step to the next ask, so the mark holds for a load calling back to back
# and ends this long after its last call (the backfill then takes what it left).
LOAD_WAITING_GRACE_SECONDS = 5.0


def background_windows(windows: Sequence[Window], *, floor_share: float) -> tuple[Window, ...]:
    """The limits background reservations must keep among themselves, window by window
    (``windows``: the effective ones, share applied and margin added): the longest less
    rule 3's reserve; each shorter one at the longest's even pace (1,500 an hour: 26 a
    61 s minute), what a backfill grows at into an empty window (replacing_windows
    paces it from what it holds)."""
    if not 0 <= floor_share < 1:
        raise ValueError(f"scheduled_reserve_share must be in [0, 1), got {floor_share!r}")
    longest = max(windows, key=lambda w: w.seconds)
    hour_limit = max(1, longest.limit - math.ceil(longest.limit * floor_share - 1e-9))
    limits = []
    for window in windows:
        if window.seconds >= longest.seconds:
            limit = hour_limit
        else:
            limit = min(window.limit, even_pace(hour_limit, window.seconds, longest.seconds))
        limits.append(Window(max(1, limit), window.seconds))
    return tuple(limits)


def even_pace(room: int, window_seconds: float, horizon_seconds: float) -> int:
    """Calls per ``window_seconds`` that spend ``room`` evenly over ``horizon_seconds``
    (never less than one, and all of it once the horizon is within the window)."""
    return max(1, math.ceil(room * window_seconds / max(window_seconds, horizon_seconds) - 1e-9))


def replacing_windows(
    windows: Sequence[Window],
    background: Sequence[Window],
    now: float,
    timestamps: Sequence[float],
    background_timestamps: Sequence[float],
) -> tuple[Window, ...]:
    """The background limits that apply ``now`` (``windows``: one call short already).
    Rule 2's cap on each shorter window is

    - the backfill's room in the longest window spread evenly over the time until its
      own oldest call there leaves (the whole longest window while it holds none): it
      grows into an empty hour at 1,500 / 60 = 26 a minute, into one a load already
      half filled at what is left over an hour, and every minute of its first hour gets
      calls, so a call leaves the hour at every minute after it. Growing at half the
      minute it filled the hour in 30 minutes and nothing left for the other 30: a load
      ready in that gap waited for it, every hour (soak 2026-12-03 15:16, 20.7 minutes);
    - raised to the calls (of either kind) that left the longest window during the last
      shorter window: a backfill replaces calls at the pace they leave (a load's burst
      leaving at 100 a minute, refilled at half of it, left the hour 5-15 % empty);
    - raised to the whole shorter window once its room is within the even pace of an
      empty hour (``background``'s cap, 26): the hour is full but for a few calls,
      which it takes back at once (a backfill that paused
      while its tasks changed over never made up what left meanwhile: soak fill 0.954).

    Rule 4 still hands every freed call to a waiting load. ``timestamps`` must reach
    back ``retention_seconds(windows)``."""
    longest_index = max(range(len(windows)), key=lambda i: windows[i].seconds)
    longest = windows[longest_index].seconds
    newest = first_inside(timestamps, now, longest)
    own_oldest = first_inside(background_timestamps, now, longest)
    room = min(
        windows[longest_index].limit - (len(timestamps) - newest),
        background[longest_index].limit - (len(background_timestamps) - own_oldest),
    )
    held = own_oldest < len(background_timestamps)
    horizon = background_timestamps[own_oldest] + longest - now if held else longest
    out = []
    for window, limit in zip(windows, background):
        if window.seconds < longest:
            cap = min(window.limit, even_pace(room, window.seconds, horizon))
            left = newest - first_inside(timestamps, now, longest + window.seconds)
            raised = window.limit if room <= limit.limit else min(left, window.limit)
            limit = Window(max(cap, raised), limit.seconds)
        out.append(limit)
    return tuple(out)


def background_wait(
    windows: Sequence[Window],
    background: Sequence[Window],
    now: float,
    timestamps: Sequence[float],
    background_timestamps: Sequence[float],
) -> float:
    """How long a background reservation waits for the backfills' own limits (rules 2
    and 3, replacement applied). Never past the next call leaving the longest window:
    that raises the replacement cap, and a backfill asleep until its own calls age out
    of the minute would leave the hour's freed calls unused."""
    caps = replacing_windows(windows, background, now, timestamps, background_timestamps)
    wait = seconds_until_free(background_timestamps, now, caps)
    if wait > 0:
        longest = max(w.seconds for w in windows)
        inside = first_inside(timestamps, now, longest)
        if inside < len(timestamps):
            wait = min(wait, max(0.0, timestamps[inside] + longest - now))
    return wait


def retention_seconds(windows: Sequence[Window]) -> float:
    """How far back a ledger keeps reservations: the longest window, and the longest
    shorter one before it (replacing_windows counts the calls that left)."""
    longest = max(w.seconds for w in windows)
    return longest + max((w.seconds for w in windows if w.seconds < longest), default=0.0)


def load_waiting_until(marked_until: float, now: float, wait_seconds: float) -> float:
    """The "an hourly load is waiting" mark after a foreground reservation at ``now``
    (``wait_seconds`` > 0: refused for that long). Rule 4: while the mark holds, no
    background reservation is granted, so every call that comes free goes to the load,
    however many backfill tasks wake with it (rule 1 alone hands a load one call of each
    bunch that leaves together: with 4 backfill tasks a load got a quarter of them and
    waited over an hour, in the simulation). A granted call renews a live mark (the
    load keeps calling), an uncontended load never sets one: the backfill is not paused
    for loads that the window serves anyway."""
    if wait_seconds > 0:
        return max(marked_until, now + wait_seconds + LOAD_WAITING_GRACE_SECONDS)
    if marked_until > now:
        return max(marked_until, now + LOAD_WAITING_GRACE_SECONDS)
    return marked_until
