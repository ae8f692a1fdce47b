"""The freshness alert on the real scheduler: it fires for a scheduled hour that misses its
deadline, and not for one that meets it (plugins/mde_pipeline/airflow/freshness.py).

Two tenants from the one DAG file (``late`` and ``ontime``, each with its own simulator
and pool), the deadline shortened to 1 minute through its setting
(``MDE_FRESHNESS_DEADLINE_MINUTES``), and the services of include/local_scheduler.py
with a triggerer (where the alert's ``AsyncCallback`` runs). Unpausing both DAGs makes
the scheduler create each one's scheduled run of the latest complete hour at once
(``catchup=False``). Pool ``mde_api_late`` has 0 slots: that run's API tasks wait, as
behind an exhausted budget, so its hour is still not committed when its deadline passes.

Then, from Airflow's records and the triggerer's log: the late run's deadline is missed
and its callback ran and logged the WARNING naming that hour; the on-time run succeeded
before its deadline, which Airflow pruned, and no alert names it.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import pytest

from local_airflow import fresh_home, lake_env
from local_scheduler import AirflowServices
from tenant_simulators import simulators_env, start_simulators

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

LATE, ONTIME = "late", "ontime"
DEADLINE_MINUTES = 1


def dag_of(name: str) -> str:
    return f"mde_alert_ips_{name}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc) if value else None


def test_the_alert_fires_for_the_late_scheduled_hour_only(template_db, tmp_path):
    current = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    with ExitStack() as stack:
        # Alerts around the latest complete hour, whichever it is when the DAGs are unpaused.
        sims = start_simulators(
            stack, tmp_path / "sim", [LATE, ONTIME], alerts=6,
            start=(current - timedelta(hours=1)).isoformat(), end=(current + timedelta(hours=1)).isoformat(),
        )  # fmt: skip
        home = fresh_home(
            template_db, tmp_path / "airflow", **simulators_env(sims), **lake_env(tmp_path / "lake"),
            MDE_FRESHNESS_DEADLINE_MINUTES=str(DEADLINE_MINUTES), MDE_ALERT_IPS_TASK_RETRIES="0",
        )  # fmt: skip
        home.import_pools()  # mde_api_late and mde_api_ontime (also writes airflow.cfg)
        airflow = stack.enter_context(AirflowServices(home, triggerer=True))
        airflow.set_pool(f"mde_api_{LATE}", 0)
        for name in (LATE, ONTIME):
            airflow.wait_for_dag(dag_of(name))
        for name in (LATE, ONTIME):
            airflow.unpause(dag_of(name))

        def run_of(name: str):
            rows = airflow.query(
                "SELECT id, run_id, state, queued_at, end_date, data_interval_start FROM dag_run WHERE dag_id = ?",
                (dag_of(name),),
            )
            return rows[0] if rows else None

        def deadlines() -> dict[int, tuple]:
            """dag_run id -> (deadline_time, missed, callback state, callback output)."""
            rows = airflow.query(
                "SELECT d.dagrun_id, d.deadline_time, d.missed, c.state, c.output "
                "FROM deadline d JOIN callback c ON c.id = d.callback_id"
            )
            return {r[0]: r[1:] for r in rows}

        def describe() -> str:
            return f"runs: {[run_of(n) for n in (LATE, ONTIME)]}\ndeadlines: {deadlines()}"

        def late_alert_ran() -> bool:
            late = run_of(LATE)
            return bool(late) and deadlines().get(late[0], (None, None, None))[2] in ("success", "failed")

        airflow.wait_for(late_alert_ran, 240, "the late run's deadline callback to run", diagnostics=describe)

        def ontime_finished() -> bool:
            run = run_of(ONTIME)
            return bool(run) and run[2] in ("success", "failed")

        airflow.wait_for(ontime_finished, 120, "the on-time run to finish", diagnostics=describe)
        late, ontime = run_of(LATE), run_of(ONTIME)
        records = deadlines()
        triggerer_log = (airflow.log_dir / "triggerer.log").read_text(errors="replace")

    # The late hour: scheduled, still not committed, its deadline missed and its callback run.
    assert late[1].startswith("scheduled__") and late[2] == "running", describe()
    deadline_time, missed, callback_state, output = records[late[0]]
    assert missed and callback_state == "success", (records, triggerer_log[-4000:])
    assert _time(deadline_time) == _time(late[3]) + timedelta(minutes=DEADLINE_MINUTES)
    hour = _time(late[5])
    alert = re.search(
        r"MDE lake not fresh: hour (\S+) -> \S+ \(DAG (\S+), run (\S+), scheduled, state running\)", triggerer_log
    )
    assert alert, triggerer_log[-4000:]
    assert datetime.fromisoformat(alert[1].replace("Z", "+00:00")) == hour
    assert (alert[2], alert[3]) == (dag_of(LATE), late[1])

    # The on-time hour: committed before its deadline, which Airflow then pruned: no alert.
    assert ontime[1].startswith("scheduled__") and ontime[2] == "success", describe()
    assert _time(ontime[4]) < _time(ontime[3]) + timedelta(minutes=DEADLINE_MINUTES), (
        f"the on-time run took longer than the {DEADLINE_MINUTES}-minute deadline: machine too slow for this test"
    )
    assert ontime[0] not in records
    assert f"DAG {dag_of(ONTIME)}," not in triggerer_log
    assert triggerer_log.count("MDE lake not fresh") == 1
