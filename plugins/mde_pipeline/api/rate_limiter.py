"""Client-side sliding-window limiter for the MDE API budget, with a shared ledger.

The service allows, per application + tenant, ``L`` calls in any ``W`` seconds for
every window in ``rate_limits`` (default 100 per 60 s and 1,500 per 3,600 s). Above
it answers 429 with ``Retry-After``, and calling again before that time prolongs the
throttling. This module keeps us under every window instead of bouncing off it.

How it works
------------
Every attempt (first tries, retries, re-sends after a token refresh) *reserves a slot*
in a ledger before it is sent. A reservation at time ``t`` is granted only if, for
every window, fewer than ``L'`` reservations lie in ``(t - W', t]``, where

    L' = max(1, floor(L * rate_limit_share))      W' = W + rate_limit_margin_seconds

Otherwise the caller sleeps until the oldest reservation that blocks it leaves the
widened window (``oldest + W'``) and asks again. With ``L'`` reservations at
``t0 <= ... `` the next one is granted at exactly ``t0 + W'``.

Why the margin: a reservation is taken at ``r`` but the request arrives at the
service at ``a = r + d`` with a latency ``0 <= d <= m`` (m = the margin). If two
arrivals fall in one service window, ``a_j - a_i < W``, then
``r_j - r_i = a_j - a_i + d_i - d_j < W + m = W'``: every service window's arrivals come
from reservations inside one widened window, so there are at most ``L'`` of them.
A fixed (calendar) window is a special case of a sliding one, so the bound holds for
either reading of the service's limit. Rejected (429) attempts keep their slot: the
service may count them too.

Settling: when an attempt ends (answer, error or timeout) its entry moves to the end
time ``c`` (``settle``). The request arrived at or before ``c``, so an entry's time is
then never earlier than its arrival, and the margin only has to cover requests still
in flight ``W'`` after their reservation. Measured on a loaded 2-core box, the first
request of a process (TLS handshake) arrived up to 0.5 s after its reservation: far
beyond a 50 ms margin, but finished long before the window moved on. Settling costs
one round trip of budget per call and window.

Why pool slots x per-slot pacing stays within every window: Airflow pool ``mde_api``
bounds how many tasks call at once (N slots), but N tasks each pacing itself to ``L``
would send ``N * L``. So the ledger is *one* budget for all of them: each slot's
reservation sees every other slot's reservations, and the sum over all slots in any
widened window is at most ``L'``. Each slot effectively gets ``L'/N`` on average when
all are busy, and the whole budget when it is alone -- no static split wasted.

Why the ledger must outlive a task (a file, not memory): limits are per app + tenant
over an hour, longer than most tasks. A new task taking over a pool slot starts with
an empty in-memory history; if the previous task spent the full hourly budget in the
last minutes, an in-memory limiter would spend it again (2x the limit in one window).
The SQLite ledger lives on the host, survives task boundaries, and is locked with
``BEGIN IMMEDIATE`` so concurrent processes serialise their reservations.

Several hosts: share one Redis ledger (api/redis_ledger.py), the same arithmetic for
every caller on every host. With a ledger per host instead, set
``rate_limit_share = 1/hosts``: each host then stays within ``L/hosts`` and the sum within ``L``.

Throttling: a 429's wait (api/waits.py: its usable Retry-After, at least the backoff) is
written to the ledger as ``blocked_until`` (receipt time + wait + margin) and every
caller on the host waits it out before its next reservation, so nobody prolongs the
throttle. No block reaches past the longest window + slack (``max_block_seconds``):
``record_throttle`` caps what it writes and the ledger clips what it reads. A wait longer than the caller's
``max_blocked_wait`` raises :class:`~mde_pipeline.errors.MdeThrottledError`.

Backfills: a limiter made with ``background=True`` (a backfill run's task) also keeps
its kind's reservations within the limits of :mod:`mde_pipeline.api.backfill_reserve`
and never takes the last free call of a window, so an hourly load waiting on a full
window gets each call that leaves it. Foreground callers see only the windows.

Time: one seam, :class:`Clock` (``now()``, ``sleep()``). The system clock is wall time
(``time.time``) because reservations are compared across processes; unit tests use
a fake clock and never sleep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from mde_pipeline.api.backfill_reserve import DEFAULT_SCHEDULED_RESERVE_SHARE, background_windows
from mde_pipeline.api.errors import MdeThrottledError
from mde_pipeline.api.ledgers import Decision, Ledger
from mde_pipeline.api.windows import Window, effective_windows, max_block_seconds

DEFAULT_MARGIN_SECONDS = 1.0


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (comparable across processes on one host)."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class Slot:
    reserved_at: float
    waited_seconds: float
    entry: int | None = None


class RateLimiter:
    """Paces attempts for one budget (``key``) through a ledger.

    ``acquire()`` blocks until a slot is reserved; ``settle()`` moves it to the
    attempt's end; ``record_throttle()`` writes a 429's Retry-After to the ledger.
    """

    def __init__(
        self,
        rate_limits: Sequence[Window],
        *,
        key: str,
        ledger: Ledger,
        clock: Clock | None = None,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        share: float = 1.0,
        max_blocked_wait: float | None = None,
        background: bool = False,
        scheduled_reserve_share: float = DEFAULT_SCHEDULED_RESERVE_SHARE,
    ) -> None:
        self.configured_windows = tuple(rate_limits)
        self.windows = effective_windows(self.configured_windows, share=share, margin=margin_seconds)
        self.key = key
        self.ledger = ledger
        self.clock = clock or SystemClock()
        self.margin_seconds = margin_seconds
        self.max_blocked_wait = max_blocked_wait
        # No throttle outlasts the longest window: a longer Retry-After is implausible.
        self.max_block_seconds = max_block_seconds(self.configured_windows)
        self.background = background
        self.scheduled_reserve_share = scheduled_reserve_share
        # A backfill's calls keep these limits among themselves (api/backfill_reserve.py).
        self.background_limits = (
            background_windows(self.windows, floor_share=scheduled_reserve_share) if background else None
        )

    def try_reserve(self, now: float) -> Decision:
        """One reservation attempt at ``now``: recorded, or how long to wait."""
        if self.background_limits is not None:
            return self.ledger.reserve(self.key, now, self.windows, self.background_limits)
        return self.ledger.reserve(self.key, now, self.windows)

    def acquire(self) -> Slot:
        waited = 0.0
        while True:
            now = self.clock.now()
            decision = self.try_reserve(now)
            if decision.wait_seconds <= 0:
                return Slot(now, waited, decision.entry)
            if decision.blocked and self.max_blocked_wait is not None and decision.wait_seconds > self.max_blocked_wait:
                raise MdeThrottledError(
                    f"MDE API budget is blocked for {decision.wait_seconds:.0f}s more after a 429 "
                    f"(more than max_throttle_wait_seconds={self.max_blocked_wait:g})",
                    status=429,
                    retry_after=decision.wait_seconds,
                )
            self.clock.sleep(decision.wait_seconds)
            waited += decision.wait_seconds

    def settle(self, slot: Slot) -> None:
        """The attempt of ``slot`` has ended: its entry moves to now (see "Settling")."""
        if slot.entry is not None:
            self.ledger.settle(self.key, slot.entry, self.clock.now())

    def record_throttle(self, retry_after: float) -> float:
        """Block the budget until receipt + Retry-After + margin; returns that time.

        The wait is capped at ``max_block_seconds`` (and NaN counts as 0): one absurd
        value must not stop every caller on the host for longer than a window."""
        wait = min(retry_after, self.max_block_seconds) if retry_after > 0 else 0.0
        now = self.clock.now()
        until = now + wait + self.margin_seconds
        self.ledger.block_until(self.key, until)
        count_throttle = getattr(self.ledger, "count_throttle", None)  # optional in the Ledger protocol
        if count_throttle is not None:
            count_throttle(self.key, now)
        return until
