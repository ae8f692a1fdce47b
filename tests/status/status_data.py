"""A lake and a budget ledger with known figures, for the operator's view tests.

``prepare(root, now)`` writes, under ``root``:

* ``lake/``: the 48 hours before ``now``'s hour minus two (missing on purpose), each
  with ``3 + index % 5`` alerts, through the project's writer; the oldest day is then
  compacted (so its figures come from the manifest, the others from footers);
* ``ledger/mde_rate_ledger.sqlite3``: calls in the last minute and hour, older calls
  spread over the day, 429s and a block in force;

and returns what the status must show (:class:`Expected`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lake_data import sample_interval
from mde_pipeline.api.backfill_reserve import LOAD_WAITING_GRACE_SECONDS
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, SqliteLedger, ledger_key
from mde_pipeline.api.windows import Window
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.location import resolve_lake_location

TENANT, CLIENT = "status-tenant", "status-client"
HOURS = 48
SKIPPED = (5, 17)  # hours back from now's hour that are never committed
BIG = (Window(10_000, 60.0), Window(100_000, 3600.0), Window(1_000_000, 86400.0))


@dataclass
class Expected:
    lake_root: Path
    ledger_dir: Path
    key: str
    calls_minute: int
    calls_hour: int
    calls_24h: int
    throttled_24h: int
    blocked_until: float
    latest_hour: datetime
    hours_committed: int
    hours_missing: int
    rows_per_day: dict[str, dict[str, int]] = field(default_factory=dict)
    alerts_per_hour_recent: float = 0.0
    backfill_calls: list[int] = field(default_factory=list)
    backfill_limits: list[int] = field(default_factory=list)
    backfills_held_until: float | None = None


def connection(expected: Expected, *, tenant: str = TENANT, client: str = CLIENT, **extra) -> str:
    """AIRFLOW_CONN_MDE_DEFAULT for the prepared ledger (rate limits 100/60, 1500/3600)."""
    return json.dumps({
        "conn_type": "http", "host": "https://127.0.0.1:9", "login": client, "password": "not-used",
        "extra": {"tenant_id": tenant, "rate_limit_ledger_dir": str(expected.ledger_dir),
                  "rate_limit_margin_seconds": 1.0, **extra},
    })


def prepare(root: Path, now: datetime, *, ledger_now: datetime | bool | None = None, tenant: str = TENANT,
            client: str = CLIENT, seed: int = 0) -> Expected:
    """The lake of ``tenant`` (its partition) as of ``now``; the ledger as of ``ledger_now``
    (default ``now``; False: later, with :func:`fill_ledger`). ``seed`` varies the rows."""
    now = now.astimezone(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    location = resolve_lake_location(root / "lake").for_tenant(tenant)
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"hours": 0, "alerts": 0, "alert_ips": 0})
    committed = []
    for back in range(1, HOURS + 1):
        if back in SKIPPED:
            continue
        start = hour - timedelta(hours=back)
        tables = sample_interval(start, alerts=3 + (back + seed) % 5, seed=back + 1000 * seed, tenant=tenant)
        commit_interval(location, start, tables)
        day = rows[start.strftime("%Y-%m-%d")]
        day["hours"] += 1
        day["alerts"] += tables["alerts"].num_rows
        day["alert_ips"] += tables["alert_ips"].num_rows
        committed.append((start, tables["alerts"].num_rows))
    oldest = min(rows)
    for table in ("alerts", "alert_ips"):
        compact_day(location, table, oldest)
    committed.sort()
    recent = [n for _, n in committed[-24:]]
    last_complete = hour - timedelta(hours=1)
    in_window = [s for s, _ in committed if s > last_complete - timedelta(days=180)]
    expected = Expected(
        lake_root=root / "lake", ledger_dir=root / "ledger", key=ledger_key(tenant, client),
        calls_minute=0, calls_hour=0, calls_24h=0, throttled_24h=0, blocked_until=0.0,
        latest_hour=committed[-1][0],
        hours_committed=len(in_window),
        hours_missing=180 * 24 - len(in_window),
        rows_per_day={k: dict(v) for k, v in rows.items()},
        alerts_per_hour_recent=round(sum(recent) / len(recent), 2),
    )
    if ledger_now is not False:
        fill_ledger(expected, ledger_now or now)
    return expected


def fill_ledger(expected: Expected, now: datetime, ledger=None) -> Expected:
    """Calls, 429s and a block as of ``now`` (in the SQLite ledger, or ``ledger``); sets
    the budget figures of ``expected``."""
    ledger = ledger or SqliteLedger(expected.ledger_dir / LEDGER_FILE_NAME)
    key = expected.key
    t = now.timestamp()
    in_minute = [t - 0.5 * i for i in range(4)]  # inside the sliding minute for ~58 s
    earlier_hour = [t - 120 - 60 * i for i in range(20)]  # 20 calls 2..21 minutes ago
    earlier_day = [t - 7200 - 600 * i for i in range(30)]  # outside the hour, inside 24 h
    for ts in sorted(earlier_day + earlier_hour + in_minute):
        # The calls of the last hour are a backfill's (background reservations).
        assert ledger.reserve(key, ts, BIG, BIG if ts in earlier_hour else None).wait_seconds == 0
    for ts in (t - 300, t - 300, t - 7300):
        ledger.count_throttle(key, ts)
    # An hourly load told to wait (its own tight minute, the real windows' retention):
    # backfills are held until its wait ends plus the grace.
    tight = (Window(len(in_minute), 60.0), *BIG[1:])
    wait = ledger.reserve(key, t, tight).wait_seconds
    assert wait > 0
    expected.backfills_held_until = t + wait + LOAD_WAITING_GRACE_SECONDS
    blocked_until = t + 900
    ledger.block_until(key, blocked_until)
    ledger.close()
    # The limiter's windows are widened by the 1 s margin: (now - 61 s, now].
    expected.calls_minute = len(in_minute) + sum(1 for ts in earlier_hour if ts > t - 61)
    expected.calls_hour = len(in_minute) + len(earlier_hour)
    expected.calls_24h = len(in_minute) + len(earlier_hour) + len(earlier_day)
    expected.backfill_calls = [sum(1 for ts in earlier_hour if ts > t - 61), len(earlier_hour)]
    # What a backfill may hold: the hour's even pace in the minute (1,500 over 3,601 s is
    # 25.4 a 61 s minute: 26), the hour less its last free call.
    expected.backfill_limits = [26, 1499]
    expected.throttled_24h = 3
    expected.blocked_until = blocked_until
    return expected
