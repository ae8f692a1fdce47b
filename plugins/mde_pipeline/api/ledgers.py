"""Where reservations and 429 blocks are kept: the budget ledger shared by every caller.

One ledger entry per attempt, keyed by budget (``tenant:client``), so every task on the
host sees every other task's calls. :class:`SqliteLedger` is the backend (one file per
host, ``BEGIN IMMEDIATE`` serialises processes); tests supply their own
:class:`Ledger` implementations.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from typing import NamedTuple, Protocol, Sequence

from mde_pipeline.api.windows import Window, seconds_until_free

LEDGER_BACKENDS = ("sqlite",)  # connection extra rate_limit_ledger
LEDGER_FILE_NAME = "mde_rate_ledger.sqlite3"
LEDGER_DIR_ENV = "MDE_RATE_LIMIT_LEDGER_DIR"
# Per-minute history for the operator's view (calls granted, 429s), kept this long.
HISTORY_SECONDS = 24 * 3600


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


def decide(timestamps: Sequence[float], blocked_until: float, now: float, windows: Sequence[Window]) -> Decision:
    if blocked_until > now:
        return Decision(blocked_until - now, True)
    return Decision(seconds_until_free(timestamps, now, windows), False)

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
            conn.execute(
                "CREATE TABLE IF NOT EXISTS minutes (key TEXT NOT NULL, minute INTEGER NOT NULL, "
                "calls INTEGER NOT NULL DEFAULT 0, throttled INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key, minute))"
            )

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
            decision = decide(calls, row[0] if row else 0.0, now, windows)
            if decision.wait_seconds <= 0:
                cursor = conn.execute("INSERT INTO calls (key, ts) VALUES (?, ?)", (key, now))
                _count_minute(conn, key, now, "calls")
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

    def count_throttle(self, key: str, at: float) -> None:
        """One 429 received at ``at`` (the per-minute history of the operator's view)."""
        with self._transaction() as conn:
            _count_minute(conn, key, at, "throttled")

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


def _count_minute(conn: sqlite3.Connection, key: str, at: float, column: str) -> None:
    """Add one to ``column`` of ``at``'s minute; drop minutes past the history (bounded)."""
    minute = int(at // 60)
    conn.execute(
        f"INSERT INTO minutes (key, minute, {column}) VALUES (?, ?, 1) "
        f"ON CONFLICT (key, minute) DO UPDATE SET {column} = {column} + 1",
        (key, minute),
    )
    conn.execute("DELETE FROM minutes WHERE key = ? AND minute < ?", (key, minute - HISTORY_SECONDS // 60))


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


def open_ledger(backend: str, directory: str | None = None) -> Ledger:
    """The ledger a connection's ``rate_limit_ledger`` / ``rate_limit_ledger_dir`` name."""
    if backend == "sqlite":
        return SqliteLedger(os.path.join(default_ledger_dir(directory), LEDGER_FILE_NAME))
    raise ValueError(f"unknown rate_limit_ledger {backend!r}; expected one of {', '.join(LEDGER_BACKENDS)}")
