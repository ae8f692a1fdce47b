"""Freshness: from a scheduled run's start to its hour committed in the lake.

    python -m bench freshness [--alerts 50,300 --scale 1 --slots 2]

For each N in ``--alerts``: a fresh simulator holding N alerts in the latest complete
hour, a fresh Airflow home and ledger (an idle budget), the real services
(include/local_scheduler.py: api-server, dag-processor, scheduler on LocalExecutor +
SQLite; pool ``mde_api`` as include/pools.json ships it unless ``--slots``). Unpausing
the DAG makes the scheduler create the scheduled run of that hour (``catchup=False``),
as after the hour closes in production. So the figures include every task's start-up.

Windows: the real ones (100 / 60 s, 1,500 / 3,600 s) unless ``--scale`` shortens them;
the connection keeps the limiter's default margin unless ``--margin``.

Figures per N: the run's start (``dag_run.start_date``) to the commit (the publish
task's end, and the mtime of the committed ``alert_ips`` file); the floor the windows set
for the run's N + 1 calls (listing + one per alert) from an idle budget: the earliest
moment the last call can be admitted when each window's limit is spent at once,
``max over windows of (ceil((N+1) / L) - 1) * W``, and the steady-rate figure
``(N+1) * W / L`` of the minute window for comparison; target: freshness <= 1.5 x floor
+ 30 s. Then where the time went: scheduler and task start-up, listing, the API calls'
span (first to last call at the simulator), publish.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench import API_ENDPOINTS, DAG_ID, scaled_rate_limits  # noqa: E402  (sets sys.path)
import lake_check  # noqa: E402
from local_airflow import migrated_template  # noqa: E402
from local_scheduler import pipeline_services  # noqa: E402
from mde_simulator.process import SimulatorProcess  # noqa: E402





def schedule_floor(calls: int, limits) -> float:
    """Earliest admission of the ``calls``-th call from empty windows (bursts allowed)."""
    return max((math.ceil(calls / limit) - 1) * seconds for limit, seconds in limits)


def rate_floor(calls: int, limits) -> float:
    """``calls`` at the minute window's steady rate (the brief's "N calls at 100 per minute")."""
    limit, seconds = limits[0]
    return calls * seconds / limit


def parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc) if value else None


def run_one(args, alerts: int, template_db: Path, root: Path) -> dict[str, Any]:
    limits = scaled_rate_limits(args.scale)
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    client = {} if args.margin is None else {"rate_limit_margin_seconds": args.margin}
    with SimulatorProcess(
        root / "sim",
        alerts=alerts,
        start=hour.isoformat(),
        end=(hour + timedelta(hours=1)).isoformat(),
        seed=args.seed,
        rate_limits=limits,
    ) as sim:
        with pipeline_services(root, sim, template_db, pool_slots=args.slots, client=client) as airflow:
            airflow.unpause(DAG_ID)
            scheduled = airflow.wait_for(
                lambda: airflow.query("SELECT run_id FROM dag_run WHERE run_type = 'scheduled' ORDER BY run_id"),
                120,
                "the scheduler to create the scheduled run",
            )[0][0]

            def finished():
                rows = airflow.query("SELECT state FROM dag_run WHERE run_id = ?", (scheduled,))
                return rows and rows[0][0] in ("success", "failed")

            airflow.wait_for(finished, 3 * schedule_floor(alerts + 1, limits) + 600, "the scheduled run to finish")
            state, run_start, run_end = airflow.query(
                "SELECT state, start_date, end_date FROM dag_run WHERE run_id = ?", (scheduled,)
            )[0]
            tasks = airflow.query(
                "SELECT task_id, map_index, queued_dttm, start_date, end_date FROM task_instance "
                "WHERE run_id = ? ORDER BY start_date",
                (scheduled,),
            )
        requests = sim.requests()
        truth = sim.ground_truth()
        stats = sim.stats()

    run_start = parse(run_start)
    ti = {(t, m): (parse(q), parse(s), parse(e)) for t, m, q, s, e in tasks}
    publish_end = ti[("publish", -1)][2]
    committed = root / "lake" / "alert_ips" / f"date={hour:%Y-%m-%d}" / f"interval={hour:%Y%m%dT%H}.parquet"
    mtime = datetime.fromtimestamp(committed.stat().st_mtime, timezone.utc) if committed.exists() else None
    calls = sorted(
        r["at"] for r in requests if r.get("endpoint") in API_ENDPOINTS and r.get("at") and str(r["status"]) != "429"
    )
    fetches = [v for (t, _), v in ti.items() if t == "fetch_ips"]
    comparison = lake_check.compare(root / "lake", truth, [hour])
    floor = schedule_floor(alerts + 1, limits)
    freshness = (mtime or publish_end) - run_start
    return {
        "alerts": alerts,
        "state": state,
        "lake": "exact" if comparison.exact else "NOT exact",
        "calls": len(calls),
        "throttled": stats["throttled"],
        "freshness": freshness.total_seconds(),
        "to_publish_end": (publish_end - run_start).total_seconds(),
        "floor": floor,
        "rate_floor": rate_floor(alerts + 1, limits),
        "target": 1.5 * floor + 30,
        # Where the time went, seconds from the run's start.
        "list_queued": (ti[("list_alerts", -1)][0] - run_start).total_seconds(),
        "list_started": (ti[("list_alerts", -1)][1] - run_start).total_seconds(),
        "list_ended": (ti[("list_alerts", -1)][2] - run_start).total_seconds(),
        "fetch_started": (min(s for _, s, _ in fetches) - run_start).total_seconds() if fetches else math.nan,
        "fetch_ended": (max(e for _, _, e in fetches) - run_start).total_seconds() if fetches else math.nan,
        "batches": len(fetches),
        "first_call": calls[0] - run_start.timestamp() if calls else math.nan,
        "last_call": calls[-1] - run_start.timestamp() if calls else math.nan,
        "publish_started": (ti[("publish", -1)][1] - run_start).total_seconds(),
        "publish_ended": (publish_end - run_start).total_seconds(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench freshness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", default="50,300", help="alerts in the hour, comma-separated (50,300)")
    parser.add_argument("--scale", type=float, default=1.0, help="windows this many times shorter than real (1)")
    parser.add_argument("--slots", type=int, default=None, help="pool mde_api size (default: include/pools.json)")
    parser.add_argument("--margin", type=float, default=None, help="rate_limit_margin_seconds (default: the client's)")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.alerts.split(",") if n.strip()]
    limits = scaled_rate_limits(args.scale)
    print(
        f"freshness: windows {limits} (real / {args.scale:g}); pool mde_api "
        f"{args.slots or 'from include/pools.json'}; margin {args.margin if args.margin is not None else 'default'}; "
        f"real scheduler (LocalExecutor, SQLite), scheduled run of the latest hour, idle budget",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
        template_db = migrated_template(Path(tmp) / "template")
        for alerts in counts:
            print(f"  N = {alerts}: running ...", flush=True)
            started = time.monotonic()
            results.append(run_one(args, alerts, template_db, Path(tmp) / f"n{alerts}"))
            print(f"  done in {time.monotonic() - started:.0f} s", flush=True)

    print(f"{'N':>5} {'state':>8} {'calls':>5} {'429':>4} {'fresh s':>8} {'floor s':>8} {'target s':>9} {'met':>4} {'rate floor':>10}  lake")
    for r in results:
        met = "yes" if r["freshness"] <= r["target"] else "NO"
        print(
            f"{r['alerts']:>5} {r['state']:>8} {r['calls']:>5} {r['throttled']:>4} {r['freshness']:>8.1f} "
            f"{r['floor']:>8.1f} {r['target']:>9.1f} {met:>4} {r['rate_floor']:>10.1f}  {r['lake']}"
        )
    print("seconds from the run's start:")
    for r in results:
        print(
            f"  N={r['alerts']}: list queued {r['list_queued']:.1f}, started {r['list_started']:.1f}, ended "
            f"{r['list_ended']:.1f}; {r['batches']} fetch batch(es) {r['fetch_started']:.1f}-{r['fetch_ended']:.1f}; "
            f"API calls {r['first_call']:.1f}-{r['last_call']:.1f}; publish {r['publish_started']:.1f}-"
            f"{r['publish_ended']:.1f}; file committed {r['freshness']:.1f}"
        )
    print("fresh = run start -> alert_ips file committed (mtime); floor = earliest last call from an idle budget; "
          "target = 1.5 x floor + 30 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
