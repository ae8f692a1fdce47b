"""Soak at the service's real windows: scheduled hours while a backfill wants more than the budget.

    python -m bench soak [--minutes 80 --workdir DIR --backfill-days 5 --alerts-per-hour 150]

The real Airflow services (include/local_scheduler.py: api-server, dag-processor,
scheduler, triggerer on LocalExecutor + SQLite; pool ``mde_api`` as include/pools.json
ships it) run the DAG against the HTTPS simulator with the real limits, 100 calls / 60 s
and 1,500 calls / 3,600 s, for ``--minutes``. The simulator holds ``--alerts-per-hour``
alerts per hour from ``--backfill-days`` before now to past the soak's end. A backfill
over the past hours (up to two hours ago) wants ~days x 24 x (alerts + 1) calls, far more
than the budget (5 days: ~18,000 calls, 12 h of budget, where 80 minutes can spend at most
~3,000); unpausing the DAG lets the scheduler create the scheduled run of the
latest complete hour (``catchup=False``) and then one per real hour boundary, each
settling (deferred; ``--settle-seconds``, the DAG's default 300) before it lists. After
``--minutes`` the bench waits (at most ``--grace`` minutes) until the run of every hour
that ended inside the soak exists and every scheduled run has finished, then reads the
simulator's call log and the metadata DB.

On SQLite a backfill of ~100 runs or more is one transaction of seconds that any other
service's commit breaks ("Database is locked"), every time: the bench creates it with
the other services stopped for the moment (``create_backfill(freeze_writers=True)``).

Figures (nothing asserted; targets in brackets):
- fill: the 3,600 s window as the simulator's limiter counts it, admitted calls in
  ``(t - 3600, t]`` / 1,500, each second t after the first full window
  (t0 + 3600 < t <= the measurement's end, t0 = the first admitted call): min, mean and
  how many such windows [min >= 0.97];
- the most admitted calls in any 60 s and any 3,600 s (the simulator's own stats)
  [<= 100, <= 1,500]; 429s received [0];
- lag of each scheduled hour whose end fell inside the soak (the backfill running):
  from its ``data_interval_end`` to its ``publish`` task's end (metadata DB), p50 and
  max; it includes the settle delay (300 s by default). An hour not committed when the
  measurement ends shows how long it had waited (a lower bound, not in p50/max). The run created at unpause (its
  hour ended before the soak began) is shown apart, not in the figures.
- backfill runs finished, and whether the lake equals the simulator's ground truth for
  the hours committed.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench import API_ENDPOINTS, DAG_ID, REAL_RATE_LIMITS, percentiles, window_shares  # noqa: E402  (sets sys.path)
import lake_check  # noqa: E402

FILL_TARGET = 0.97


def parse_db_time(value: str | None) -> datetime | None:
    """A metadata DB timestamp (SQLite text, UTC) as an aware datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def summarize(
    admitted: list[float],
    soak_start: float,
    measured_until: float,
    scheduled: list[dict[str, Any]],
    *,
    limits=REAL_RATE_LIMITS,
    max_admitted: tuple[int, int],
    throttled: int,
) -> dict[str, Any]:
    """The soak's figures from admitted calls' arrival times (epoch s, ascending), the
    scheduled runs ({"run_id", "interval_end", "publish_end", "state"}: datetimes or
    None) and the simulator's per-window maxima and 429 count."""
    (short_limit, short_s), (long_limit, long_s) = limits
    # The first full window ends at t0 + long_s; the fill counts the windows after it.
    shares = window_shares(admitted, long_s, long_limit, until=measured_until)[1:]
    lags, before = [], []
    for run in scheduled:
        lag = (run["publish_end"] - run["interval_end"]).total_seconds() if run["publish_end"] else None
        # Not committed when the measurement ended: how long it had waited so far.
        row = {**run, "lag_s": lag, "open_s": None if lag is not None else measured_until - run["interval_end"].timestamp()}
        (before if run["interval_end"].timestamp() < soak_start else lags).append(row)
    done = [r["lag_s"] for r in lags if r["lag_s"] is not None]
    spread = percentiles(done)
    return {
        "calls": len(admitted),
        "fill_windows": len(shares),
        "fill_min": min(shares) if shares else math.nan,
        "fill_mean": statistics.fmean(shares) if shares else math.nan,
        "fill_met": bool(shares) and min(shares) >= FILL_TARGET,
        "max_60s": max_admitted[0],
        "max_3600s": max_admitted[1],
        "limits": [short_limit, long_limit],
        "within_limits": max_admitted[0] <= short_limit and max_admitted[1] <= long_limit,
        "throttled": throttled,
        "scheduled_hours": len(lags),
        "scheduled_committed": len(done),
        "lag_p50_s": spread[0] if spread else math.nan,
        "lag_max_s": spread[2] if spread else math.nan,
        "runs": lags,
        "runs_before": before,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{'figure':<44} {'value':>14}  target",
        f"{'fill of the 3,600 s window, min':<44} {s['fill_min']:>14.3f}  >= {FILL_TARGET}",
        f"{'fill of the 3,600 s window, mean':<44} {s['fill_mean']:>14.3f}",
        f"{'windows measured (one per second)':<44} {s['fill_windows']:>14}",
        f"{'most calls in any 60 s':<44} {s['max_60s']:>14}  <= {s['limits'][0]}",
        f"{'most calls in any 3,600 s':<44} {s['max_3600s']:>14}  <= {s['limits'][1]}",
        f"{'429s received':<44} {s['throttled']:>14}  0",
        f"{'API calls admitted':<44} {s['calls']:>14}",
        f"{'scheduled hours ended in the soak':<44} {s['scheduled_hours']:>14}",
        f"{'  of them committed':<44} {s['scheduled_committed']:>14}",
        f"{'lag hour end -> publish end, p50 (s)':<44} {s['lag_p50_s']:>14.0f}",
        f"{'lag hour end -> publish end, max (s)':<44} {s['lag_max_s']:>14.0f}",
    ]
    for label, runs in (("scheduled", s["runs"]), ("before the soak (created at unpause)", s["runs_before"])):
        for r in runs:
            lag = f"not committed after {r['open_s']:.0f} s" if r["lag_s"] is None else f"lag {r['lag_s']:.0f} s"
            lines.append(f"  {label}: hour ending {r['interval_end']:%Y-%m-%d %H:%M} UTC, {r['state']}, {lag}")
    return "\n".join(lines)


def json_line(s: dict[str, Any], extra: dict[str, Any]) -> str:
    keep = {k: v for k, v in s.items() if k not in ("runs", "runs_before")}
    keep["lags_s"] = [r["lag_s"] for r in s["runs"]]
    return json.dumps({"bench": "soak", **keep, **extra}, default=str)


def scheduled_runs(airflow) -> list[dict[str, Any]]:
    rows = airflow.query(
        "SELECT r.run_id, r.data_interval_end, r.state, t.end_date, t.state FROM dag_run r "
        "LEFT JOIN task_instance t ON t.run_id = r.run_id AND t.dag_id = r.dag_id AND t.task_id = 'publish' "
        "WHERE r.dag_id = ? AND r.run_type = 'scheduled' ORDER BY r.data_interval_end",
        (DAG_ID,),
    )
    return [
        {
            "run_id": run_id,
            "interval_end": parse_db_time(end),
            "state": state,
            "publish_end": parse_db_time(publish_end) if publish_state == "success" else None,
        }
        for run_id, end, state, publish_end, publish_state in rows
    ]


def backfill_counts(airflow) -> dict[str, int]:
    return dict(airflow.query("SELECT state, count(*) FROM dag_run WHERE run_type = 'backfill' GROUP BY state"))


def soak(args, root: Path) -> int:
    # Imported here: the argument parsing and summary (tests) need no Airflow.
    from local_airflow import migrated_template
    from local_scheduler import pipeline_services
    from mde_simulator.process import SimulatorProcess

    now = datetime.now(timezone.utc)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    data_start = this_hour - timedelta(days=args.backfill_days)
    # Alerts up to past the soak's end (and its grace), so every live hour has some.
    data_end = this_hour + timedelta(hours=math.ceil((args.minutes + args.grace) / 60) + 1)
    total_hours = int((data_end - data_start).total_seconds() // 3600)
    # The backfill ends before the hour the scheduled run at unpause takes.
    backfill_hours = lake_check.hours(data_start, this_hour - timedelta(hours=1))
    wanted = len(backfill_hours) * (args.alerts_per_hour + 1)
    print(
        f"soak: windows {REAL_RATE_LIMITS} (the service's), {args.minutes:g} min + up to {args.grace:g} min grace; "
        f"settle {args.settle_seconds} s; {args.alerts_per_hour} alerts/h from {data_start:%Y-%m-%d %H:%M} to {data_end:%Y-%m-%d %H:%M} UTC; "
        f"backfill of {len(backfill_hours)} h wants ~{wanted} calls ({wanted / REAL_RATE_LIMITS[1][0]:.0f} h of budget); "
        f"workdir {root}",
        flush=True,
    )
    template_db = migrated_template(root / "template")
    with SimulatorProcess(
        root / "sim",
        alerts=total_hours * args.alerts_per_hour,
        start=data_start.isoformat(),
        end=data_end.isoformat(),
        seed=args.seed,
        rate_limits=REAL_RATE_LIMITS,
        startup_timeout=300,
    ) as sim:
        # The DAG's production settle delay (local homes default to 0: tests list at once).
        settle = {"MDE_ALERT_IPS_SETTLE_SECONDS": str(args.settle_seconds)}
        with pipeline_services(
            root / "run", sim, template_db, env=settle, triggerer=True, parallelism=args.parallelism
        ) as airflow:
            airflow.create_backfill(
                DAG_ID, backfill_hours[0], backfill_hours[-1], max_active_runs=args.max_active_runs, attempts=30, freeze_writers=True
            )
            airflow.unpause(DAG_ID)
            soak_start = time.time()
            print(f"  started {datetime.fromtimestamp(soak_start, timezone.utc):%Y-%m-%d %H:%M:%S} UTC", flush=True)
            next_report = soak_start
            while time.time() < soak_start + args.minutes * 60:
                airflow.check_alive()
                if time.time() >= next_report:
                    progress(sim, airflow, soak_start)
                    next_report += args.report_every * 60
                time.sleep(5)
            soak_end = time.time()

            # Every hour that ended inside the soak has its run (the scheduler may not have
            # created the last one yet), and every scheduled run has finished.
            ended = {end for end in lake_check.hours(this_hour, datetime.fromtimestamp(soak_end, timezone.utc)) if end.timestamp() > soak_start}

            def scheduled_done() -> bool:
                runs = scheduled_runs(airflow)
                return ended <= {r["interval_end"] for r in runs} and all(r["state"] in ("success", "failed") for r in runs)

            if not scheduled_done():
                print("  soak time over; waiting for the scheduled runs to finish ...", flush=True)
                deadline = time.time() + args.grace * 60
                while not scheduled_done() and time.time() < deadline:
                    airflow.check_alive()
                    time.sleep(5)
            measured_until = time.time()
            stats = sim.stats()
            log = sim.calls()
            runs = scheduled_runs(airflow)
            backfill = backfill_counts(airflow)
            progress(sim, airflow, soak_start)
        committed_hours = committed(root / "run" / "lake")
        try:
            truth = sim.ground_truth()
            comparison = lake_check.compare(root / "run" / "lake", truth, committed_hours)
            lake = f"{len(committed_hours)} h committed, " + ("exact" if comparison.exact else f"NOT exact ({len(comparison.problems)} problems)")
        except Exception as exc:  # a figure, not a failure of the soak
            lake = f"not checked ({type(exc).__name__}: {str(exc)[:200]})"

    admitted = sorted(at for client in log for at, endpoint, ok in client["calls"] if ok and endpoint in API_ENDPOINTS)
    windows = stats["clients"][0]["windows"] if stats["clients"] else [{"all": {"max_admitted": 0}}] * 2
    summary = summarize(
        admitted,
        soak_start,
        measured_until,
        runs,
        max_admitted=(windows[0]["all"]["max_admitted"], windows[1]["all"]["max_admitted"]),
        throttled=stats["throttled"],
    )
    started = datetime.fromtimestamp(soak_start, timezone.utc)
    extra = {
        "started": started.isoformat(timespec="seconds"),
        "soak_minutes": round((soak_end - soak_start) / 60, 1),
        "measured_minutes": round((measured_until - soak_start) / 60, 1),
        "backfill_runs": backfill,
        "backfill_hours": len(backfill_hours),
        "lake": lake,
    }
    print(
        f"soak from {started:%Y-%m-%d %H:%M} UTC: {extra['soak_minutes']} min soak, measured for "
        f"{extra['measured_minutes']} min; backfill runs {backfill} of {len(backfill_hours)}; lake: {lake}"
    )
    print(format_summary(summary))
    print(json_line(summary, extra), flush=True)
    return 0


def committed(lake_root: Path) -> list[datetime]:
    """Hours with a committed alert_ips file (publish writes one per interval, under the
    tenant's partition)."""
    hours = []
    for path in (lake_root / "alert_ips").rglob("interval=*.parquet"):
        hours.append(datetime.strptime(path.stem.split("=", 1)[1], "%Y%m%dT%H").replace(tzinfo=timezone.utc))
    return sorted(hours)


def progress(sim, airflow, soak_start: float) -> None:
    stats = sim.stats()
    windows = stats["clients"][0]["windows"] if stats["clients"] else []
    calls = sum(n for e in API_ENDPOINTS for s, n in stats["calls"].get(e, {}).items() if s not in ("429", "401"))
    runs = ", ".join(
        f"{r['interval_end']:%H:%M} {r['state']}" + (f" (lag {(r['publish_end'] - r['interval_end']).total_seconds():.0f} s)" if r["publish_end"] else "")
        for r in scheduled_runs(airflow)
    )
    peaks = "/".join(str(w["all"]["max_admitted"]) for w in windows)
    print(
        f"  +{(time.time() - soak_start) / 60:5.1f} min: {calls} calls admitted, {stats['throttled']} 429s, "
        f"peaks (60 s/3,600 s) {peaks or '-'}; backfill {backfill_counts(airflow)}; scheduled: {runs or 'none'}",
        flush=True,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=80.0, help="how long the soak runs (80)")
    p.add_argument("--workdir", type=Path, default=None, help="keep homes, logs and lake here (default: a temporary dir)")
    p.add_argument("--backfill-days", type=float, default=5.0, help="days of past hours to backfill (5: ~18,000 calls)")
    p.add_argument("--alerts-per-hour", type=int, default=150, help="alerts per hour, past and live (150)")
    p.add_argument("--max-active-runs", type=int, default=4, help="backfill max_active_runs (4)")
    p.add_argument("--parallelism", type=int, default=6, help="Airflow core.parallelism (6)")
    p.add_argument("--grace", type=float, default=30.0, help="minutes to wait after the soak for scheduled runs (30)")
    p.add_argument("--report-every", type=float, default=5.0, help="progress line every this many minutes (5)")
    p.add_argument("--settle-seconds", type=int, default=300, help="the DAG's settle delay (300, its production default)")
    p.add_argument("--seed", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # ``kill <pid>`` of an 80-minute run: unwind, so the services and simulator stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.minutes <= 0 or args.backfill_days <= 0 or args.alerts_per_hour <= 0:
        print("--minutes, --backfill-days and --alerts-per-hour must be > 0", file=sys.stderr)
        return 2
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return soak(args, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        return soak(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
