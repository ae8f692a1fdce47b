"""What the budget ledger says right now, for the operator's view (read-only).

A SQLite ledger is opened read-only (never creates it, never takes its write
lock), so the status page and ``make status`` cannot slow the callers down; a Redis ledger is
read with plain reads (its Lua scripts are the only writers). Figures:

* per configured window: reservations in ``(now - W', now]`` against the effective
  limit ``L'`` (rate_limiter.py: share and margin applied), i.e. what the limiter sees;
* the per-minute history (calls granted, 429s received) of the last 24 hours, from the
  ``minutes`` table the ledger keeps (ledgers.py; a ledger written before that table
  existed has no history);
* per window, the backfills' reservations and what they may hold (api/backfill_reserve.py);
* a block (a 429's Retry-After) still in force;
* whether an hourly load waits for the budget, which holds every backfill call until
  then (backfill_reserve rule 4);
* the sustained rate the windows allow, for ETAs.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Sequence

from mde_pipeline.api.backfill_reserve import DEFAULT_SCHEDULED_RESERVE_SHARE, background_windows
from mde_pipeline.api.ledgers import HISTORY_SECONDS
from mde_pipeline.api.redis_ledger import RedisLedger
from mde_pipeline.api.windows import Window, leave_one_free


def sustained_calls_per_hour(windows: Sequence[Window]) -> float:
    """Calls per hour the tightest window allows over a long run (1,500/h by default)."""
    return min(w.limit * 3600.0 / w.seconds for w in windows)


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection | None:
    if not os.path.exists(path):
        return None
    return sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5)


def _rows(conn: sqlite3.Connection, sql: str, params: tuple) -> list[tuple]:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:  # a table or column an older ledger does not have
        if "no such table" in str(exc) or "no such column" in str(exc):
            return []
        raise


def ledger_keys(path: str | os.PathLike[str]) -> list[str]:
    """Every budget key the ledger knows (calls, history or blocks), sorted."""
    conn = _connect(path)
    if conn is None:
        return []
    try:
        keys: set[str] = set()
        for table in ("calls", "minutes", "blocks"):
            keys.update(row[0] for row in _rows(conn, f"SELECT DISTINCT key FROM {table}", ()))
        return sorted(keys)
    finally:
        conn.close()


def budget_status(
    path: str | os.PathLike[str],
    key: str,
    configured: Sequence[Window],
    effective: Sequence[Window],
    now: float,
    reserve_share: float = DEFAULT_SCHEDULED_RESERVE_SHARE,
) -> dict[str, Any]:
    """The budget section of the status JSON for one key of a SQLite ledger (docs/OPERATORS.md)."""
    used: list[int] = [0] * len(effective)
    background: list[int] = [0] * len(effective)
    history: list[tuple[int, int, int]] = []
    blocked_until = load_waiting_until = 0.0
    conn = _connect(path)
    try:
        if conn is not None:
            for index, window in enumerate(effective):
                rows = _rows(conn, "SELECT count(*) FROM calls WHERE key = ? AND ts > ?", (key, now - window.seconds))
                used[index] = int(rows[0][0]) if rows else 0
                rows = _rows(
                    conn, "SELECT count(*) FROM calls WHERE key = ? AND ts > ? AND background = 1",
                    (key, now - window.seconds),
                )  # fmt: skip
                background[index] = int(rows[0][0]) if rows else 0
            history = _rows(
                conn,
                "SELECT minute, calls, throttled FROM minutes WHERE key = ? AND minute >= ? ORDER BY minute",
                (key, _first_minute(now)),
            )
            rows = _rows(conn, "SELECT until FROM blocks WHERE key = ?", (key,))
            blocked_until = float(rows[0][0]) if rows else 0.0
            rows = _rows(conn, "SELECT until FROM waiting WHERE key = ?", (key,))
            load_waiting_until = float(rows[0][0]) if rows else 0.0
    finally:
        if conn is not None:
            conn.close()
    return _section(
        key, os.fspath(path), conn is not None, configured, effective, used, history, blocked_until, now,
        background, background_windows(effective, floor_share=reserve_share), load_waiting_until,
    )  # fmt: skip


def redis_budget_status(
    ledger: RedisLedger,
    where: str,
    key: str,
    configured: Sequence[Window],
    effective: Sequence[Window],
    now: float,
    reserve_share: float = DEFAULT_SCHEDULED_RESERVE_SHARE,
) -> dict[str, Any]:
    """The same section from the Redis ledger every host shares (``where``: its URL, no password)."""
    used = [ledger.calls_since(key, now - window.seconds) for window in effective]
    background = [ledger.calls_since(key, now - window.seconds, background=True) for window in effective]
    history = ledger.history(key, _first_minute(now))
    caps = background_windows(effective, floor_share=reserve_share)
    return _section(
        key, where, True, configured, effective, used, history, ledger.blocked_until(key), now, background, caps,
        ledger.load_waiting_until(key),
    )  # fmt: skip


def _first_minute(now: float) -> int:
    return int(now // 60) - HISTORY_SECONDS // 60 + 1


def _section(
    key: str,
    where: str,
    exists: bool,
    configured: Sequence[Window],
    effective: Sequence[Window],
    used: Sequence[int],
    history: Sequence[Sequence[int]],
    blocked_until: float,
    now: float,
    background: Sequence[int],
    background_caps: Sequence[Window],
    load_waiting_until: float = 0.0,
) -> dict[str, Any]:
    rows = [[int(minute) * 60, int(calls), int(throttled)] for minute, calls, throttled in history]
    # What a backfill may hold now: its own cap, and one call short of the window.
    backfill_limits = [min(cap.limit, free.limit) for cap, free in zip(background_caps, leave_one_free(effective))]
    return {
        "ledger_key": key,
        "ledger_path": where,
        "ledger_exists": exists,
        "windows": [
            {
                "seconds": conf.seconds,
                "limit": conf.limit,
                "effective_limit": eff.limit,
                "calls": count,
                "used_share": round(count / eff.limit, 4),
                "backfill_calls": backfill,
                "backfill_limit": backfill_limit,
            }
            for conf, eff, count, backfill, backfill_limit in zip(
                configured, effective, used, background, backfill_limits
            )
        ],
        "sustained_calls_per_hour": round(sustained_calls_per_hour(effective), 3),
        "blocked_until": blocked_until if blocked_until > now else None,
        "blocked_seconds_left": round(blocked_until - now, 1) if blocked_until > now else 0.0,
        # An hourly load waits for the budget: no backfill call is granted until then.
        "backfills_held_until": load_waiting_until if load_waiting_until > now else None,
        "per_minute": {
            "columns": ["minute_start_epoch", "calls", "throttled"],
            "rows": rows,
            "calls_24h": sum(r[1] for r in rows),
            "throttled_24h": sum(r[2] for r in rows),
        },
    }
