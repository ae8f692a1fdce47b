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

Several hosts: each host has its own ledger, so set ``rate_limit_share = 1/hosts``;
each host then stays within ``L/hosts`` and the sum within ``L``.

Throttling: a 429's ``Retry-After`` is written to the ledger as ``blocked_until``
(receipt time + Retry-After + margin) and every caller on the host waits it out before
its next reservation, so nobody prolongs the throttle. A wait longer than the caller's
``max_blocked_wait`` raises :class:`~mde_pipeline.errors.MdeThrottledError`.

Time: one seam, :class:`Clock` (``now()``, ``sleep()``). The system clock is wall time
(``time.time``) because reservations are compared across processes; unit tests use
:class:`FakeClock` and never sleep.
"""

from __future__ import annotations

import itertools
import math
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Protocol, Sequence

from mde_pipeline.errors import MdeThrottledError

DEFAULT_RATE_LIMITS: tuple[tuple[int, float], ...] = ((100, 60.0), (1500, 3600.0))
DEFAULT_MARGIN_SECONDS = 1.0
LEDGER_FILE_NAME = "mde_rate_ledger.sqlite3"
LEDGER_DIR_ENV = "MDE_RATE_LIMIT_LEDGER_DIR"
# Float slack when comparing "has this reservation left the window": a reservation
# exactly W' old has left it; rounding must not turn that into a 1e-13 s extra wait.
_EPSILON = 1e-6


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


class FakeClock:
    """Manual clock: ``sleep`` advances time instantly and records the sleep."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


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


def seconds_until_free(timestamps: Sequence[float], now: float, windows: Sequence[Window]) -> float:
    """How long until one more reservation fits in every window (0 = now).

    ``timestamps`` are past reservations in ascending order.
    """
    wait = 0.0
    for window in windows:
        horizon = now - window.seconds + _EPSILON
        in_window = [t for t in timestamps if t > horizon]
        excess = len(in_window) - window.limit + 1
        if excess > 0:
            # The excess oldest reservations must leave this window first.
            wait = max(wait, in_window[excess - 1] + window.seconds - now)
    return max(0.0, wait)


class Decision(NamedTuple):
    wait_seconds: float  # 0 when the reservation was recorded
    blocked: bool  # the wait comes from a 429's Retry-After, not from the windows
    entry: int | None = None  # the recorded reservation (for settle)


class Ledger(Protocol):
    def reserve(self, key: str, now: float, windows: Sequence[Window]) -> Decision:
        """Atomically record a reservation at ``now`` if it fits, else say how long to wait."""

    def settle(self, key: str, entry: int, at: float) -> None:
        """Move a reservation to ``at`` when its attempt ended (never earlier)."""

    def block_until(self, key: str, until: float) -> None:
        """Nobody reserves for ``key`` before ``until`` (keeps the later of two blocks)."""

    def reservations(self, key: str) -> list[float]:
        """Reservations still kept (not yet pruned), ascending."""

    def blocked_until(self, key: str) -> float: ...


def _decide(timestamps: Sequence[float], blocked_until: float, now: float, windows: Sequence[Window]) -> Decision:
    if blocked_until > now:
        return Decision(blocked_until - now, True)
    return Decision(seconds_until_free(timestamps, now, windows), False)


class InMemoryLedger:
    """Ledger for one process (unit tests, or a single long-lived worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[int, float]] = {}
        self._blocked: dict[str, float] = {}
        self._next_entry = itertools.count(1)

    def reserve(self, key: str, now: float, windows: Sequence[Window]) -> Decision:
        longest = max(w.seconds for w in windows)
        with self._lock:
            calls = {entry: t for entry, t in self._calls.get(key, {}).items() if t > now - longest}
            self._calls[key] = calls
            decision = _decide(sorted(calls.values()), self._blocked.get(key, 0.0), now, windows)
            if decision.wait_seconds <= 0:
                entry = next(self._next_entry)
                calls[entry] = now
                return decision._replace(entry=entry)
            return decision

    def settle(self, key: str, entry: int, at: float) -> None:
        with self._lock:
            calls = self._calls.get(key, {})
            if entry in calls:
                calls[entry] = max(calls[entry], at)

    def block_until(self, key: str, until: float) -> None:
        with self._lock:
            self._blocked[key] = max(self._blocked.get(key, 0.0), until)

    def blocked_until(self, key: str) -> float:
        with self._lock:
            return self._blocked.get(key, 0.0)

    def reservations(self, key: str) -> list[float]:
        with self._lock:
            return sorted(self._calls.get(key, {}).values())


class SqliteLedger:
    """Ledger in an SQLite file shared by every process on the host.

    ``BEGIN IMMEDIATE`` takes the database's write lock before reading, so the
    read-decide-insert of one reservation is atomic across processes. Keep the file
    on a local disk (SQLite locking is unreliable on network file systems).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_seconds: float = 60.0) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout_seconds
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with self._transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, ts REAL NOT NULL)")
            conn.execute("CREATE INDEX IF NOT EXISTS calls_key_ts ON calls (key, ts)")
            conn.execute("CREATE TABLE IF NOT EXISTS blocks (key TEXT PRIMARY KEY, until REAL NOT NULL)")

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork (Airflow forks task processes).
        if self._conn is None or self._pid != os.getpid():
            self._conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._pid = os.getpid()
        return self._conn

    class _Tx:
        def __init__(self, ledger: "SqliteLedger") -> None:
            self.ledger = ledger

        def __enter__(self) -> sqlite3.Connection:
            self.ledger._lock.acquire()
            try:
                self.conn = self.ledger._connection()
                self.conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.ledger._lock.release()
                raise
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.ledger._lock.release()

    def _transaction(self) -> "SqliteLedger._Tx":
        return SqliteLedger._Tx(self)

    def reserve(self, key: str, now: float, windows: Sequence[Window]) -> Decision:
        longest = max(w.seconds for w in windows)
        with self._transaction() as conn:
            conn.execute("DELETE FROM calls WHERE key = ? AND ts <= ?", (key, now - longest))
            calls = [row[0] for row in conn.execute("SELECT ts FROM calls WHERE key = ? ORDER BY ts", (key,))]
            row = conn.execute("SELECT until FROM blocks WHERE key = ?", (key,)).fetchone()
            decision = _decide(calls, row[0] if row else 0.0, now, windows)
            if decision.wait_seconds <= 0:
                cursor = conn.execute("INSERT INTO calls (key, ts) VALUES (?, ?)", (key, now))
                return decision._replace(entry=cursor.lastrowid)
            return decision

    def settle(self, key: str, entry: int, at: float) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE calls SET ts = max(ts, ?) WHERE rowid = ? AND key = ?", (at, entry, key))

    def block_until(self, key: str, until: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO blocks (key, until) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET until = max(until, excluded.until)",
                (key, until),
            )

    def blocked_until(self, key: str) -> float:
        with self._transaction() as conn:
            row = conn.execute("SELECT until FROM blocks WHERE key = ?", (key,)).fetchone()
            return row[0] if row else 0.0

    def reservations(self, key: str) -> list[float]:
        with self._transaction() as conn:
            return [row[0] for row in conn.execute("SELECT ts FROM calls WHERE key = ? ORDER BY ts", (key,))]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def default_ledger_dir(configured: str | None = None) -> str:
    """Connection extra ``rate_limit_ledger_dir``, else $MDE_RATE_LIMIT_LEDGER_DIR,
    else $AIRFLOW_HOME/mde_rate_ledger, else <tempdir>/mde_rate_ledger."""
    if configured:
        return configured
    if os.environ.get(LEDGER_DIR_ENV):
        return os.environ[LEDGER_DIR_ENV]
    if os.environ.get("AIRFLOW_HOME"):
        return os.path.join(os.environ["AIRFLOW_HOME"], "mde_rate_ledger")
    return os.path.join(tempfile.gettempdir(), "mde_rate_ledger")


def ledger_key(tenant_id: str, client_id: str) -> str:
    """The service's budget is per application + tenant."""
    return f"{tenant_id.strip().lower()}:{client_id.strip().lower()}"


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
    ) -> None:
        self.configured_windows = tuple(rate_limits)
        self.windows = effective_windows(self.configured_windows, share=share, margin=margin_seconds)
        self.key = key
        self.ledger = ledger
        self.clock = clock or SystemClock()
        self.margin_seconds = margin_seconds
        self.max_blocked_wait = max_blocked_wait

    def acquire(self) -> Slot:
        waited = 0.0
        while True:
            now = self.clock.now()
            decision = self.ledger.reserve(self.key, now, self.windows)
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
        """Block the budget until receipt + Retry-After + margin; returns that time."""
        until = self.clock.now() + max(0.0, retry_after) + self.margin_seconds
        self.ledger.block_until(self.key, until)
        return until
