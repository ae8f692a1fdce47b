"""Where reservations and 429 blocks are kept: the budget ledger shared by every caller.

One ledger entry per attempt, keyed by budget (``tenant:client``), so every task on the
host sees every other task's calls. :class:`SqliteLedger` is the default backend (one
file per host, ``BEGIN IMMEDIATE`` serialises processes); api/redis_ledger.py holds the
one every host shares; api/ledger_backends.py picks one from the connection.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
from typing import NamedTuple, Protocol, Sequence

from mde_pipeline.api.private_dirs import private_temp_dir
from mde_pipeline.api.backfill_reserve import background_wait, load_waiting_until, retention_seconds
from mde_pipeline.api.windows import Window, leave_one_free, max_block_seconds, seconds_until_free

log = logging.getLogger(__name__)

LEDGER_FILE_NAME = "mde_rate_ledger.sqlite3"
LEDGER_DIR_ENV = "MDE_RATE_LIMIT_LEDGER_DIR"
# Per-minute history for the operator's view (calls granted, 429s), kept this long.
HISTORY_SECONDS = 24 * 3600


class Decision(NamedTuple):
    wait_seconds: float  # 0 when the reservation was recorded
    blocked: bool  # the wait comes from a 429's Retry-After, not from the windows
    entry: int | None = None  # the recorded reservation (for settle)


class Ledger(Protocol):
    def reserve(
        self, key: str, now: float, windows: Sequence[Window], background: Sequence[Window] | None = None
    ) -> Decision:
        """Atomically record a reservation at ``now`` if it fits, else say how long to wait.

        ``background``: the reservation is a backfill's, and the backfills' own
        reservations must also fit these limits (api/backfill_reserve.py)."""

    def settle(self, key: str, entry: int, at: float) -> None:
        """Move a reservation to ``at`` when its attempt ended (never earlier)."""

    def block_until(self, key: str, until: float) -> None:
        """Nobody reserves for ``key`` before ``until`` (keeps the later of two blocks)."""

    def reservations(self, key: str) -> list[float]:
        """Reservations still kept (not yet pruned), ascending."""

    def blocked_until(self, key: str) -> float: ...


def clip_block(until: float, now: float, windows: Sequence[Window]) -> float:
    """A stored block never reaches past now + the longest window + slack.

    The limiter never writes a longer one (record_throttle caps it), but a block written
    before that cap existed (``Retry-After: 999999999``) or under longer windows would
    otherwise stop every caller on the host for good. Ledgers store the clipped value,
    so a clipped block ends."""
    limit = now + max_block_seconds(windows)
    if until > limit:
        log.warning(
            "rate-limit ledger held a throttle block %.0fs long, longer than any window allows; "
            "clipped to %.0fs (python -m mde_pipeline.api.ledger_admin clear removes blocks)",
            until - now,
            limit - now,
        )
        return limit
    return until


def decide(
    timestamps: Sequence[float],
    blocked_until: float,
    now: float,
    windows: Sequence[Window],
    background: Sequence[Window] | None = None,
    background_timestamps: Sequence[float] = (),
    load_waiting_until: float = 0.0,
) -> Decision:
    """Whether a reservation fits at ``now`` (backfill_reserve.py's rules for a
    ``background`` one); the ledger then records it or, for a refused foreground one,
    renews the load-waiting mark (backfill_reserve.load_waiting_until)."""
    if blocked_until > now:
        return Decision(blocked_until - now, True)
    if background is None:
        return Decision(seconds_until_free(timestamps, now, windows), False)
    # A backfill never takes the last free call of a window: when a call leaves a full
    # window, an hourly load waiting for it gets it, not the backfill that wakes with it.
    windows = leave_one_free(windows)
    wait = seconds_until_free(timestamps, now, windows)
    wait = max(
        wait,
        background_wait(windows, background, now, timestamps, background_timestamps),
        load_waiting_until - now,  # rule 4: a waiting hourly load takes every freed call
    )
    return Decision(wait, False)


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
            conn.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, ts REAL NOT NULL, "
                "background INTEGER NOT NULL DEFAULT 0)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS calls_key_ts ON calls (key, ts)")
            conn.execute("CREATE TABLE IF NOT EXISTS blocks (key TEXT PRIMARY KEY, until REAL NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS waiting (key TEXT PRIMARY KEY, until REAL NOT NULL)")
            # The last entry id handed out: a rowid is reused once the newest row is
            # pruned, and a late settle of the pruned entry would move the new one.
            conn.execute("CREATE TABLE IF NOT EXISTS entry_ids (last INTEGER NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS minutes (key TEXT NOT NULL, minute INTEGER NOT NULL, "
                "calls INTEGER NOT NULL DEFAULT 0, throttled INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key, minute))"
            )
            # A ledger file from before backfill reservations had a kind: add the column
            # (old rows count as foreground, which only errs towards the hourly loads).
            if "background" not in {row[1] for row in conn.execute("PRAGMA table_info(calls)")}:
                conn.execute("ALTER TABLE calls ADD COLUMN background INTEGER NOT NULL DEFAULT 0")

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

    def reserve(
        self, key: str, now: float, windows: Sequence[Window], background: Sequence[Window] | None = None
    ) -> Decision:
        kept = retention_seconds(windows)
        with self._transaction() as conn:
            conn.execute("DELETE FROM calls WHERE key = ? AND ts <= ?", (key, now - kept))
            rows = conn.execute("SELECT ts, background FROM calls WHERE key = ? ORDER BY ts", (key,)).fetchall()
            row = conn.execute("SELECT until FROM blocks WHERE key = ?", (key,)).fetchone()
            blocked = clip_block(row[0], now, windows) if row else 0.0
            if row and blocked != row[0]:
                conn.execute("UPDATE blocks SET until = ? WHERE key = ?", (blocked, key))
            row = conn.execute("SELECT until FROM waiting WHERE key = ?", (key,)).fetchone()
            waiting = row[0] if row else 0.0
            decision = decide(
                [ts for ts, _ in rows], blocked, now, windows, background, [ts for ts, bg in rows if bg], waiting
            )
            if background is None:
                marked = load_waiting_until(waiting, now, decision.wait_seconds)
                if marked != waiting:
                    conn.execute("INSERT OR REPLACE INTO waiting (key, until) VALUES (?, ?)", (key, marked))
            if decision.wait_seconds <= 0:
                entry = _next_entry_id(conn)
                conn.execute(
                    "INSERT INTO calls (rowid, key, ts, background) VALUES (?, ?, ?, ?)",
                    (entry, key, now, int(background is not None)),
                )
                _count_minute(conn, key, now, "calls")
                return decision._replace(entry=entry)
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

    def blocks(self) -> dict[str, float]:
        """Every stored block, key -> until (expired ones included: nothing deletes them)."""
        with self._transaction() as conn:
            return dict(conn.execute("SELECT key, until FROM blocks ORDER BY key"))

    def clear_blocks(self, key: str | None = None) -> int:
        """Remove the block of ``key`` (every block when None); returns how many went."""
        with self._transaction() as conn:
            if key is None:
                return conn.execute("DELETE FROM blocks").rowcount
            return conn.execute("DELETE FROM blocks WHERE key = ?", (key,)).rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _next_entry_id(conn: sqlite3.Connection) -> int:
    """An id no reservation in this file had before (a file from before entry_ids
    starts after its highest row)."""
    row = conn.execute("SELECT last FROM entry_ids").fetchone()
    top = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]
    entry = max(row[0] if row else 0, top) + 1
    if row:
        conn.execute("UPDATE entry_ids SET last = ?", (entry,))
    else:
        conn.execute("INSERT INTO entry_ids (last) VALUES (?)", (entry,))
    return entry


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
    else $AIRFLOW_HOME/mde_rate_ledger, else the per-user ``<tempdir>/mde_rate_ledger_<uid>``
    (0700, owner checked: never a world-writable directory another user could rewrite;
    unsafe -> PermissionError naming $MDE_RATE_LIMIT_LEDGER_DIR)."""
    if configured:
        return configured
    if os.environ.get(LEDGER_DIR_ENV):
        return os.environ[LEDGER_DIR_ENV]
    if os.environ.get("AIRFLOW_HOME"):
        return os.path.join(os.environ["AIRFLOW_HOME"], "mde_rate_ledger")
    directory = private_temp_dir("mde_rate_ledger")
    if directory is None:
        raise PermissionError(
            f"the ledger's fallback directory under {tempfile.gettempdir()} is not private to this user "
            f"(owner or mode); set ${LEDGER_DIR_ENV} or AIRFLOW_HOME"
        )
    return directory


def ledger_key(tenant_id: str, client_id: str) -> str:
    """The service's budget is per application + tenant."""
    return f"{tenant_id.strip().lower()}:{client_id.strip().lower()}"
