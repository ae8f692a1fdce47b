"""`make run`: the whole pipeline on this machine, against the simulator.

1. Starts the HTTPS simulator of Entra ID + Defender (include/mde_simulator) with
   alerts over the last few complete hours, real rate limits (100/min, 1500/h), some
   alerts without IPs, some that vanish before their IPs are fetched, some invalid IPs,
   in the simulator's ``demo`` profile: the shape of a tenant (busy internal hosts and
   shared services, a long tail of public addresses, IOC-like addresses in several
   alerts, alerts changing over the hours, a few late alerts, a poison field, one alert
   whose /ips always fails; include/mde_simulator/demo.py). ``--profile flat`` gives
   the tests' data instead.
2. Prepares the repo's Airflow home (.airflow/: SQLite DB, logs), imports pool mde_api
   from include/pools.json.
3. Runs DAG `mde_alert_ips` once per hour with ``dag.test()`` (what `airflow dags test`
   runs; all hours in one process, include/dag_runs.py): the same DAG file, operators
   and lake writer a deployment uses; connection and lake root come from the
   environment (AIRFLOW_CONN_MDE_DEFAULT, AIRFLOW_VAR_MDE_LAKE_ROOT). Each run's logical
   date is its hour's end plus one second, so that `make ui`'s scheduler finds the hour
   starts free for its own runs. The simulator's clock stands where the scheduler's run
   would have been (the hour's end plus the default settle time), so the hours play as
   they would have: a late alert is missed by its hour's run and found by the next one's
   look-back, a changed alert lands each version.
4. Prints a DuckDB summary of the lake and checks it against the simulator's ground truth.

With tenants (``AIRFLOW_VAR_MDE_TENANTS='["a", "b"]' make run``, Variable mde_tenants):
one simulator per tenant (its own tenant id and alerts, include/tenant_simulators.py),
pool ``mde_api_<name>`` for each, DAG ``mde_alert_ips_<name>`` on connection
``mde_<name>`` for every hour, and each tenant's lake partition checked against its own
simulator.

Options: --hours N (default 3), --alerts-per-hour N (default 30), --lake DIR (default
<repo>/lake), --keep-lake (do not clear the lake first), --profile demo|flat (default demo).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lake_check
from local_airflow import REPO, AirflowHome, lake_env
from mde_pipeline.airflow.tenants import TENANTS_ENV, TenantsConfigError, parse_tenants, tenant_dags
from tenant_simulators import simulators_env, start_simulators


DEFAULT_HOME = REPO / ".airflow"


def repo_home(path: Path = DEFAULT_HOME) -> AirflowHome:
    """The repo's Airflow home (.airflow/, or ``--home``), migrated once, with pool mde_api
    (also `make ui`). The simulators keep their state beside it (``.sim``, ``.sim-ui``)."""
    home = AirflowHome(Path(path).resolve())
    home.path.mkdir(parents=True, exist_ok=True)
    if not (home.path / "airflow.db").exists():
        print("== preparing Airflow's metadata DB in .airflow/ (once)")
        home.cli("db", "migrate")
    home.import_pools()
    return home


def simulator_options(profile: str, end: datetime, hours: int, alerts_per_hour: int = 30) -> dict:
    """The simulator's data for `make run` (and the test of docs/ANALYSTS.md's queries on
    its lake): alerts over the ``hours`` before ``end``, the clock at the first hour's start."""
    start = end - timedelta(hours=hours)
    return dict(
        alerts=alerts_per_hour * hours,
        start=start.isoformat(),
        end=end.isoformat(),
        invalid_ip_rate=0.05,
        vanish_rate=0.03,
        profile=profile,
        now=start.isoformat(),  # nothing has happened yet; each run moves the clock on
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--alerts-per-hour", type=int, default=30)
    parser.add_argument("--lake", type=Path, default=REPO / "lake")
    parser.add_argument("--keep-lake", action="store_true")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--profile", choices=("demo", "flat"), default="demo")
    args = parser.parse_args(argv)
    try:
        names = parse_tenants(os.environ.get(TENANTS_ENV))
    except TenantsConfigError as exc:
        print(f"{TENANTS_ENV}: {exc}", file=sys.stderr)
        return 2

    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=args.hours)
    intervals = lake_check.hours(start, end)
    if not args.keep_lake and args.lake.exists():
        # Every run starts from an empty lake so its check against the simulators is exact;
        # say so, since the lake may hold other tenants' (or a longer run's) data.
        held = sorted(p.name for p in (args.lake / "alerts").glob("tenant_id=*"))
        print(f"== replacing the lake at {args.lake} ({len(held)} tenant folder(s) in it); "
              "`make run RUN_ARGS=--keep-lake` keeps it")
        shutil.rmtree(args.lake)

    home = repo_home(args.home)

    print(f"== starting the simulator{'s of tenants ' + ', '.join(names) if names else ''}: "
          f"{args.alerts_per_hour * args.hours} alerts{' each' if names else ''}, {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC")
    with ExitStack() as stack:
        sims = start_simulators(
            stack, home.path.parent / ".sim", names, **simulator_options(args.profile, end, args.hours, args.alerts_per_hour)
        )
        home.extra_env = {**simulators_env(sims), **lake_env(args.lake)}
        if names:
            home.import_pools()  # mde_api_<name> for each tenant
        began = time.monotonic()
        # A manual run at time T loads the hour that ends at or before T
        # (CronDataIntervalTimetable). T is the hour's end plus one second: a manual run
        # holds its logical date, and the scheduler's runs (`make ui`) need the hour
        # starts; a run at the hour's end would hold the next hour's scheduled slot
        # ("run already exists; skipping dagrun creation") until the clock passes it.
        run_ats = [interval + timedelta(hours=1, seconds=1) for interval in intervals]
        dag_ids = [dag.dag_id for dag in tenant_dags(names)]
        for dag_id in dag_ids:
            for interval, run_at in zip(intervals, run_ats):
                print(f"== airflow dags test {dag_id} {run_at.isoformat()}  (loads {interval:%H:%M}-{run_at:%H:%M} UTC)")
        # dag.test() for every run in one process (include/dag_runs.py): what
        # `airflow dags test` does, without Airflow's start-up once per hour.
        # Each tenant's simulator clock where the scheduler's run would stand.
        clocks = {dag.dag_id: {"base_url": sims[dag.name].base_url, "ca_bundle": sims[dag.name].ca_bundle}
                  for dag in tenant_dags(names)}
        runs = home.test_runs(dag_ids, run_ats, sim_clocks=clocks)
        took = time.monotonic() - began
        failed = [f"{run['dag_id']} {run['run_at']}: {run['state']}" for run in runs if run["state"] != "success"]
        for line in failed:
            print(f"== run not successful: {line}", file=sys.stderr)
        stats = {name: sim.stats() for name, sim in sims.items()}
        truths = {name: sim.ground_truth() for name, sim in sims.items()}

    print(f"\n== the lake at {args.lake} (DuckDB, hive_partitioning)")
    print(lake_check.summary(args.lake))
    root = lake_check.open_lake(args.lake)
    exact = True
    print(f"\n== {len(intervals) * len(sims)} hourly runs in {took:.0f}s")
    for name, truth in truths.items():
        # Each tenant's partition against its own simulator: its rows, and nothing else.
        comparison = lake_check.compare(root.for_tenant(truth["tenant_id"]), truth, intervals)
        exact = exact and comparison.exact
        calls = {endpoint: sum(codes.values()) for endpoint, codes in stats[name]["calls"].items()}
        who = f"tenant {name} ({truth['tenant_id']})" if name else f"tenant {truth['tenant_id']}"
        print(f"== {who}: API calls {calls}; 429s received: {stats[name]['throttled']}")
        print(f"   against the simulator's ground truth: {comparison}")
    glob = f"{args.lake}/alert_ips/*/*/*.parquet"
    print(f"\nQuery it yourself: .venv/bin/python -c \"import duckdb; print(duckdb.sql(\\\"SELECT * FROM read_parquet('{glob}', hive_partitioning=true) LIMIT 5\\\"))\"")
    return 0 if exact and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
