"""`make ui`: the Airflow UI over the lake of `make run`, against the simulator.

1. Starts the HTTPS simulator (include/mde_simulator) with alerts over the last
   ``--hours`` complete hours and the next one, real rate limits, in the ``demo``
   profile as `make run` (alerts of the coming hour appear as the clock reaches them).
2. Uses the repo's Airflow home (.airflow/, the one `make run` prepared; migrated here
   when missing), imports pool mde_api.
3. Starts the api-server, scheduler, dag-processor and triggerer (include/local_scheduler.py) with
   the simulator's connection and the lake `make run` wrote (``lake/``), unpauses DAG
   mde_alert_ips (``--paused`` keeps it paused) so the scheduler loads the latest hour.
4. Prints the URL, the login, and the operator's view (``/mde/``); runs until Ctrl-C.

Prints a line as each scheduled run finishes. Options: --port (default 8080), --hours N
(default 3), --alerts-per-hour N (default 30), --lake DIR (default <repo>/lake),
--paused, --settle-seconds N (the DAG's settle, default 300: a run of the latest hour
waits until 5 minutes after the hour's end before listing).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from local_airflow import REPO, lake_env
from local_run import DEFAULT_HOME, repo_home
from local_scheduler import AirflowServices
from mde_simulator.process import SimulatorProcess


def main(argv: list[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints where every thread is (a stack that does not stop on Ctrl-C).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--alerts-per-hour", type=int, default=30)
    parser.add_argument("--lake", type=Path, default=REPO / "lake")
    parser.add_argument("--paused", action="store_true")
    parser.add_argument("--settle-seconds", type=int, default=None,
                        help="the DAG's settle (MDE_ALERT_IPS_SETTLE_SECONDS; default 300)")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args(argv)

    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start, end = hour - timedelta(hours=args.hours), hour + timedelta(hours=1)
    home = repo_home(args.home)

    print(f"== starting the simulator: alerts {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC")
    with SimulatorProcess(
        home.path.parent / ".sim-ui",
        alerts=args.alerts_per_hour * (args.hours + 1),
        start=start.isoformat(),
        end=end.isoformat(),
        invalid_ip_rate=0.05,
        vanish_rate=0.03,
        profile="demo",
    ) as sim:
        home.extra_env = {**sim.env(), **lake_env(args.lake.resolve())}
        if args.settle_seconds is not None:
            home.extra_env["MDE_ALERT_IPS_SETTLE_SECONDS"] = str(args.settle_seconds)
        print("== starting api-server, scheduler, dag-processor and triggerer (a minute on a small machine)")
        # The triggerer runs the deferred `settle` task (and the freshness alert's callback).
        with AirflowServices(home, api_port=args.port, startup_timeout=300, triggerer=True) as airflow:
            airflow.wait_for_dag("mde_alert_ips", timeout=300)
            if not args.paused:
                airflow.unpause("mde_alert_ips")
            passwords = json.loads((home.path / "simple_auth_manager_passwords.json.generated").read_text())
            url = f"http://127.0.0.1:{args.port}"
            print(
                f"\n   Airflow UI:        {url}/\n"
                f"   login:             admin / {passwords['admin']}\n"
                f"   operator's view:   {url}/mde/  (JSON: {url}/mde/api/status; 'MDE pipeline status' in the nav)\n"
                f"   DAG mde_alert_ips: {'paused' if args.paused else 'unpaused: the scheduler loads the latest hour'}\n"
                f"   lake:              {args.lake}\n   service logs:      {airflow.log_dir}\n\n"
                "Ctrl-C stops everything."
            )
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            reported: set[tuple[str, str]] = set()
            try:
                while True:
                    airflow.check_alive()
                    report_scheduled_runs(airflow, reported)
                    time.sleep(5)
            except KeyboardInterrupt:
                print("\n== stopping")
    return 0


def report_scheduled_runs(airflow: AirflowServices, reported: set[tuple[str, str]]) -> None:
    """One line per scheduled run of mde_alert_ips as it finishes (what the UI shows)."""
    rows = airflow.query(
        "SELECT run_id, state, data_interval_start, start_date, end_date FROM dag_run "
        "WHERE dag_id = ? AND run_type = 'scheduled' AND state IN ('success', 'failed')",
        ("mde_alert_ips",),
    )
    for run_id, state, interval_start, started, ended in rows:
        if (run_id, state) not in reported:
            reported.add((run_id, state))
            print(f"== scheduled run {run_id} (hour from {interval_start}): {state}, "
                  f"started {started}, ended {ended}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
