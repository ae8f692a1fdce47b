"""Benchmarks that print figures (not tests): ``python -m bench <name> [options]``.

Each module ``bench/<name>.py`` has ``main(argv: list[str]) -> int``. What they share
lives here: importing any ``bench.<name>`` runs this first, which puts ``plugins/``,
``include/`` and the repo root on ``sys.path`` (as pytest.ini does for the tests).
"""

from __future__ import annotations

import bisect
import math
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
# Also handed to worker subprocesses as PYTHONPATH.
IMPORT_DIRS = [REPO / "plugins", REPO / "include", REPO]
for _directory in reversed(IMPORT_DIRS):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))

DAG_ID = "mde_alert_ips"
# The service's windows, [calls, seconds]; benchmarks shrink the seconds by a scale.
REAL_RATE_LIMITS = [[100, 60], [1500, 3600]]
# The simulator's endpoint names that spend API budget (token requests do not).
API_ENDPOINTS = ("list", "ips", "alert")


def scaled_rate_limits(scale: float, real: Sequence[Sequence[float]] = REAL_RATE_LIMITS) -> list[list[float]]:
    """``real`` with every window ``scale`` times shorter (same call counts)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    return [[int(calls), tidy_seconds(seconds / scale)] for calls, seconds in real]


def tidy_seconds(seconds: float) -> float | int:
    return int(seconds) if float(seconds).is_integer() else round(seconds, 6)


def window_shares(
    arrivals: list[float], seconds: float, limit: int, step: float = 1.0, until: float | None = None
) -> list[float]:
    """Calls in ``(t - seconds, t]`` / limit for t from first + seconds to ``until``
    (default: the last call), every ``step``: each window the limiter counts, sampled."""
    end = arrivals[-1] if arrivals and until is None else until
    if not arrivals or end - arrivals[0] < seconds:
        return []
    shares = []
    t = arrivals[0] + seconds
    while t <= end + 1e-9:
        inside = bisect.bisect_right(arrivals, t) - bisect.bisect_right(arrivals, t - seconds)
        shares.append(inside / limit)
        t += step
    return shares


def percentiles(values: list[float]) -> tuple[float, float, float] | None:
    """(p50, p95, max), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = lambda p: ordered[max(math.ceil(p * len(ordered)) - 1, 0)]  # noqa: E731
    return rank(0.50), rank(0.95), ordered[-1]
