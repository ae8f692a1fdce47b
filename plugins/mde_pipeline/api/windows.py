"""Rate-limit windows: ``[[calls, seconds], ...]`` and the sliding-window arithmetic.

Pure functions shared by the ledgers (which decide under their lock) and the limiter.
See :mod:`mde_pipeline.api.rate_limiter` for why the windows are widened by a margin.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

DEFAULT_RATE_LIMITS: tuple[tuple[int, float], ...] = ((100, 60.0), (1500, 3600.0))
# Float slack when comparing "has this reservation left the window": a reservation
# exactly W' old has left it; rounding must not turn that into a 1e-13 s extra wait.
EPSILON = 1e-6
# The longest throttle we believe is the longest window plus this slack: no Retry-After
# beyond it is honoured and no block in the ledger reaches further (max_block_seconds).
BLOCK_SLACK_SECONDS = 60.0


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: float


def parse_rate_limits(value: object) -> tuple[Window, ...]:
    """``[[calls, seconds], ...]`` -> windows; clear errors for anything else."""
    if value is None:
        value = DEFAULT_RATE_LIMITS
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"rate_limits must be a non-empty list of [calls, seconds] pairs, got {value!r}")
    windows = []
    for item in value:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or isinstance(item[0], bool)
            or not isinstance(item[0], int)
            or isinstance(item[1], bool)
            or not isinstance(item[1], (int, float))
        ):
            raise ValueError(f"rate_limits entry must be [calls (int), seconds (number)], got {item!r}")
        calls, seconds = item
        if calls < 1 or not seconds > 0 or math.isinf(seconds):
            raise ValueError(f"rate_limits entry needs calls >= 1 and 0 < seconds < inf, got {item!r}")
        windows.append(Window(int(calls), float(seconds)))
    return tuple(windows)


def effective_windows(windows: Iterable[Window], *, share: float, margin: float) -> tuple[Window, ...]:
    """Scale each limit by ``share`` (at least 1 call) and widen each window by ``margin``."""
    if not 0 < share <= 1:
        raise ValueError(f"rate_limit_share must be in (0, 1], got {share!r}")
    if margin < 0:
        raise ValueError(f"rate_limit_margin_seconds must be >= 0, got {margin!r}")
    return tuple(Window(max(1, math.floor(w.limit * share + 1e-9)), w.seconds + margin) for w in windows)


def leave_one_free(windows: Sequence[Window]) -> tuple[Window, ...]:
    """The windows a backfill's reservation must fit: one call short of each limit
    (never below one), so a waiting foreground caller wins every call that comes free."""
    return tuple(Window(max(1, w.limit - 1), w.seconds) for w in windows)


def max_block_seconds(windows: Sequence[Window]) -> float:
    """The longest wait a 429 may impose: the longest window plus BLOCK_SLACK_SECONDS."""
    return max(w.seconds for w in windows) + BLOCK_SLACK_SECONDS


def first_inside(timestamps: Sequence[float], now: float, seconds: float) -> int:
    """Index of the oldest of ``timestamps`` (ascending) still inside a window of
    ``seconds`` ending ``now``: those before it have left."""
    return bisect.bisect_right(timestamps, now - seconds + EPSILON)


def seconds_until_free(timestamps: Sequence[float], now: float, windows: Sequence[Window]) -> float:
    """How long until one more reservation fits in every window (0 = now).

    ``timestamps`` are past reservations in ascending order.
    """
    wait = 0.0
    for window in windows:
        first = first_inside(timestamps, now, window.seconds)
        excess = len(timestamps) - first - window.limit + 1
        if excess > 0:
            # The excess oldest reservations must leave this window first.
            wait = max(wait, timestamps[first + excess - 1] + window.seconds - now)
    return max(0.0, wait)
