"""How fast the operator's view answers over a 180-day lake.

    python -m bench status_page [--days 180 --alerts-per-day 2000 --ips-per-alert 10 --hourly-days 2]

Generates the window through the project's writer (bench/lake_queries.py's
``generate_lake``: one commit per table and hour), compacts every day but the last
``--hourly-days`` (the steady state between two compaction runs), leaves 5 hours out
(missing on purpose), and writes a budget ledger with 24 hours of calls at the hourly
limit plus a few 429s. Then times, through the real FastAPI app (in-process HTTP
client; auth switched off, it is Airflow's), with a connection and the lake in the
environment and no metadata DB:

* ``/mde/api/status`` cold (first request: every day's figures read from footers and
  manifests), warm (nothing changed: listings only), and after one new hour was
  committed (that day is read again);
* ``/mde/`` (the HTML page) warm;
* ``build_status`` with a 180-day backfill of 4,320 hours left (the IP-call arithmetic).

Prints a table; the issue's bar is "under a second warm".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.lake_queries import TENANT as LAKE_TENANT
from bench.lake_queries import generate_lake, interval_tables

TENANT, CLIENT = LAKE_TENANT, "bench-client"


def write_ledger(directory: Path, now: float) -> None:
    """24 hours at the hourly limit (1,500 calls/hour) and ten 429s, written in bulk."""
    import sqlite3

    from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, SqliteLedger, ledger_key

    SqliteLedger(directory / LEDGER_FILE_NAME).close()  # the schema
    key = ledger_key(TENANT, CLIENT)
    minute = int(now // 60)
    with sqlite3.connect(directory / LEDGER_FILE_NAME) as conn:
        conn.executemany("INSERT INTO calls (key, ts) VALUES (?, ?)", [(key, now - i * 2.4) for i in range(1500)])
        conn.executemany(
            "INSERT INTO minutes (key, minute, calls, throttled) VALUES (?, ?, 25, ?)",
            [(key, minute - m, 1 if m % 144 == 0 else 0) for m in range(1440)],
        )


def timed(call, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times), max(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench status_page", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--alerts-per-day", type=int, default=2000)
    parser.add_argument("--ips-per-alert", type=int, default=10)
    parser.add_argument("--hourly-days", type=int, default=2, help="newest days left hourly (not compacted)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--keep", metavar="DIR", help="build the lake in DIR and keep it (reused when present)")
    args = parser.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mde-bench-status-"))
    lake_root, ledger_dir, home = work / "lake", work / "ledger", work / "airflow"
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    first_day = (hour - timedelta(days=args.days - 1)).replace(hour=0)
    try:
        from mde_pipeline.lake.compaction import compact_day
        from mde_pipeline.lake.location import resolve_lake_location

        # The rows' tenant (bench.lake_queries) is the partition; the connection names it too.
        location = resolve_lake_location(str(lake_root)).for_tenant(TENANT)
        if not (work / "generated.json").exists():
            began = time.perf_counter()
            print(f"generating {args.days} days x {args.alerts_per_day} alerts into {lake_root} ...", flush=True)
            generate_lake(location, first_day, args.days, alerts_per_day=args.alerts_per_day, ips_per_alert=args.ips_per_alert,
                          tenant_id=TENANT, progress=lambda d: d % 30 == 0 and print(f"  {d} days, {time.perf_counter() - began:.0f} s", flush=True))
            for back in range(args.hourly_days, args.days):
                day = f"{hour - timedelta(days=back):%Y-%m-%d}"
                if day >= f"{first_day:%Y-%m-%d}":
                    for table in ("alerts", "alert_ips"):
                        compact_day(location, table, day)
            for back in (3, 4, 30, 31, 32):  # missing hours, hourly and inside compacted days
                start = hour - timedelta(hours=back)
                for table in ("alerts", "alert_ips"):
                    path = Path(location.path(table, f"date={start:%Y-%m-%d}", f"interval={start:%Y%m%dT%H}.parquet"))
                    path.unlink(missing_ok=True)
            (work / "generated.json").write_text(json.dumps({"first_day": first_day.isoformat()}))
            print(f"generated and compacted in {time.perf_counter() - began:.0f} s", flush=True)
        shutil.rmtree(ledger_dir, ignore_errors=True)
        write_ledger(ledger_dir, time.time())

        os.environ.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW_VAR_MDE_LAKE_ROOT=str(lake_root),
            AIRFLOW_CONN_MDE_DEFAULT=json.dumps({
                "conn_type": "http", "host": "https://127.0.0.1:9", "login": CLIENT, "password": "x",
                "extra": {"tenant_id": TENANT, "rate_limit_ledger_dir": str(ledger_dir)},
            }),
        )
        import logging

        from fastapi.testclient import TestClient

        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("mde_pipeline.lake").setLevel(logging.WARNING)

        from mde_pipeline.airflow.status import web
        from mde_pipeline.airflow.status.report import build_status

        app = web.create_app()
        app.dependency_overrides[web.authorized] = lambda: None
        app.dependency_overrides[web.page_authorized] = lambda: None
        client = TestClient(app)

        def get(path: str) -> dict:
            response = client.get(path)
            assert response.status_code == 200, response.text[:500]
            return response.json() if path.endswith("status") else {}

        began = time.perf_counter()
        document = get("/api/status")
        cold = time.perf_counter() - began
        lake = document["tenants"][0]["lake"]
        warm = timed(lambda: get("/api/status"), args.repeats)
        page = timed(lambda: get("/"), args.repeats)
        new_hour = hour - timedelta(hours=3)
        from mde_pipeline.lake.commit import commit_interval

        commit_interval(location, new_hour, interval_tables(new_hour, alerts_per_day=args.alerts_per_day, ips_per_alert=args.ips_per_alert,
                                                            tenant_id=TENANT))
        began = time.perf_counter()
        get("/api/status")
        after_commit = time.perf_counter() - began
        left = [(hour - timedelta(days=args.days) + timedelta(hours=h)).isoformat() for h in range(args.days * 24)]
        backfill = [{"id": 1, "from_date": left[0], "to_date": left[-1], "is_paused": False, "created_at": now.isoformat(),
                     "hours_total": len(left), "hours_done": 0, "hours_failed": 0, "hours_left": len(left),
                     "hours_running": 0, "hours_skipped": 0, "intervals_left": left}]
        with_backfill = timed(lambda: build_status(backfills=lambda dag_id: [dict(b) for b in backfill]), args.repeats)
        run = build_status(backfills=lambda dag_id: [dict(b) for b in backfill])["tenants"][0]["backfills"][0]

        print(f"\nlake: {len(lake['rows_per_day'])} days, {lake['hours_committed']} hours committed, "
              f"{lake['hours_missing']} missing, {sum(d['alert_ips'] for d in lake['rows_per_day']):,} alert_ips rows; "
              f"errors: {document['errors']}")
        print(f"backfill of {len(left)} hours: {run['ip_calls_left']:,} IP calls left (estimate), ETA {run['eta_seconds'] / 86400:.1f} days")
        print(f"\n{'request':44s} {'median s':>9s} {'max s':>8s}")
        print(f"{'GET /mde/api/status cold (first request)':44s} {cold:9.3f} {cold:8.3f}")
        print(f"{'GET /mde/api/status warm':44s} {warm[0]:9.3f} {warm[1]:8.3f}")
        print(f"{'GET /mde/ (HTML page) warm':44s} {page[0]:9.3f} {page[1]:8.3f}")
        print(f"{'GET /mde/api/status after one new hour':44s} {after_commit:9.3f} {after_commit:8.3f}")
        print(f"{'build_status with a 4,320-hour backfill':44s} {with_backfill[0]:9.3f} {with_backfill[1]:8.3f}")
        return 0 if warm[1] < 1.0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
