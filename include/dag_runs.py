"""Run DAG runs with `dag.test()` (what `airflow dags test` calls), several in one process.

`airflow dags test` pays Airflow's start-up (15-30 s here) per run; tests and benchmarks
that load several intervals run them through this script instead, in a subprocess whose
environment is an isolated Airflow home (see local_airflow.AirflowHome.test_runs).

    python include/dag_runs.py mde_alert_ips 2026-11-23T06:00:00+00:00 [...] [--conf JSON]
    python include/dag_runs.py mde_alert_ips_a,mde_alert_ips_b 2026-11-23T06:00:00+00:00 [...]

``--fail-commit STEP@N`` (tests): the N-th lake commit of this process that reaches
commit_log checkpoint STEP fails there once, as a storage error at that step would.
``--lake-roots JSON`` (tests): a list, one lake root per logical date; each date's runs
see theirs as Variable mde_lake_root (``AIRFLOW_VAR_MDE_LAKE_ROOT``, read at task time:
``dag.test`` runs the tasks in this process), so one process start-up serves several lakes.
``--sim-clocks JSON`` (tests): ``{dag_id: {"base_url", "ca_bundle"}}``; before each run of
that DAG, its simulator's clock is set where the scheduler's run would stand (the
hour's end plus the default settle time), as `make run` does between its runs.

Several DAG ids (comma-separated, e.g. one per tenant) run each logical date in turn,
in the same process (its start-up is the slow part). Prints one JSON line per run:
{"dag_id", "run_at", "run_id", "state", "tasks": {task[map]: state}, "data_interval":
[start, end]}. Exit status 0 even when runs fail: callers assert.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timedelta, timezone

# Where a scheduled run of an hour stands: its end plus the default settle time (the
# homes here set MDE_ALERT_IPS_SETTLE_SECONDS=0 so that `dag.test` does not wait).
SCHEDULED_RUN_DELAY = timedelta(minutes=5)


def _fail_commit(step: str, number: str) -> None:
    from mde_pipeline.lake import commit_log

    reached = []

    def checkpoint(name: str) -> None:
        if name == step:
            reached.append(name)
            if len(reached) == int(number):
                raise OSError(f"injected storage failure at commit step {step!r}")

    commit_log.commit_checkpoint = checkpoint


def _set_clock(simulator: dict, run_at: datetime) -> None:
    """The simulator's clock where the scheduler's run would stand (POST /_sim/config)."""
    import ssl
    import urllib.request

    body = json.dumps({"now": (run_at + SCHEDULED_RUN_DELAY).isoformat()}).encode()
    request = urllib.request.Request(f"{simulator['base_url']}/_sim/config", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=simulator["ca_bundle"])
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        response.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("run_at", nargs="+", help="logical dates: a manual run at T loads the hour ending at T")
    parser.add_argument("--conf", default=None)
    parser.add_argument("--fail-commit", default=None, metavar="STEP@N")
    parser.add_argument("--lake-roots", default=None, metavar="JSON", help="one lake root per logical date")
    parser.add_argument("--sim-clocks", default=None, metavar="JSON", help="dag_id -> simulator to set the clock of")
    args = parser.parse_args(argv)
    lake_roots = json.loads(args.lake_roots) if args.lake_roots else None
    if lake_roots is not None and len(lake_roots) != len(args.run_at):
        parser.error(f"--lake-roots names {len(lake_roots)} roots for {len(args.run_at)} logical dates")

    from airflow.cli.commands.dag_command import get_bagged_dag  # puts plugins/ on sys.path
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    if args.fail_commit:
        _fail_commit(*args.fail_commit.rsplit("@", 1))

    dags = [get_bagged_dag(bundle_names=None, dag_id=dag_id, dagfile_path=None) for dag_id in args.dag_id.split(",")]
    conf = json.loads(args.conf) if args.conf else None
    sim_clocks = json.loads(args.sim_clocks) if args.sim_clocks else {}
    for index, dag, run_at in ((i, dag, run_at) for i, run_at in enumerate(args.run_at) for dag in dags):
        if lake_roots is not None:
            os.environ["AIRFLOW_VAR_MDE_LAKE_ROOT"] = lake_roots[index]
        when = datetime.fromisoformat(run_at)
        began = datetime.now(timezone.utc)
        if dag.dag_id in sim_clocks:
            _set_clock(sim_clocks[dag.dag_id], when)
        try:
            dr = dag.test(logical_date=when, run_conf=conf)
        except Exception as exc:  # a crash of the harness itself, not a task failure
            print(json.dumps({"run_at": run_at, "dag_id": dag.dag_id, "state": "error", "error": repr(exc)}), flush=True)
            continue
        with create_session() as session:
            # dag.test starts a run at its logical date, so the UI would show a run that
            # took seconds as lasting since the hour it loads: record when it really began.
            session.query(DagRun).filter(DagRun.id == dr.id).update({DagRun.start_date: began})
            tis = dr.get_task_instances(session=session)
            tasks = {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state) for ti in tis}
        print(
            json.dumps(
                {
                    "run_at": run_at,
                    "dag_id": dag.dag_id,
                    "run_id": dr.run_id,
                    "state": str(dr.state),
                    "tasks": tasks,
                    "data_interval": [dr.data_interval_start.isoformat(), dr.data_interval_end.isoformat()],
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
