"""The real scheduler: a backfill and a scheduled run share pool ``mde_api``.

Airflow 3.3's api-server, dag-processor and scheduler run on LocalExecutor and SQLite
(include/local_scheduler.py) against the HTTPS simulator with scaled-down rate windows
tight enough that calls wait on the budget, with the pool's 2 slots:

1. ``backfill create`` over the older hours (small batches, so each run maps several
   fetch tasks), then unpause the DAG. The scheduler starts the backfill runs and, the
   DAG having ``catchup=False``, creates the scheduled run of the latest complete hour.
2. Once that scheduled run has finished and the backfill is busy (pool tasks running and
   more waiting), the scheduled run is cleared: its tasks come back while backfill
   batches hold the pool and others queue for it.

Then, from the metadata DB and the simulator: every run succeeded; the simulator saw no
429 and its per-window maxima stay within the limits; each scheduled-run task in the
pool was queued before any backfill task that was waiting with it (it waited at most for
the batches already in flight); the lake equals the ground truth for every loaded hour.

Why not "a scheduled run arrives at the next hour boundary": a backfill runs only while
its DAG is unpaused (the scheduler's queueing query filters paused DAGs), and unpausing a
``catchup=False`` DAG creates its scheduled run at once, so the only scheduled run a test
can get without waiting for the wall clock's next hour starts with the backfill. Clearing
it puts the same scheduled-run task instances back in front of the scheduler mid-backfill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

import lake_check
from local_scheduler import AirflowServices, pipeline_services
from mde_simulator.process import SimulatorProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

DAG_ID = "mde_alert_ips"
POOL = "mde_api"
BACKFILL_HOURS = 4
ALERTS_PER_HOUR = 12
# Backfill runs map batches of 4 alerts (several fetch tasks per run); the scheduled run
# keeps the DAG's default (one batch here): a scheduled run has no conf.
BACKFILL_CONF = {"batch_size": 4}
# 3 calls per second and 12 per 6 s: a batch's 4th call already waits on the budget.
LIMITS = [[3, 1], [12, 6]]
# Under load a request reaches the server a few 100 ms after its reservation.
CLIENT = {"rate_limit_margin_seconds": 0.5}
FINISHED = ("success", "failed")


@dataclass(frozen=True)
class Attempt:
    """One try of one task instance, as the scheduler recorded it."""

    run_id: str
    task_id: str
    map_index: int
    try_number: int
    state: str | None
    pool: str
    priority_weight: int
    scheduled: datetime | None
    queued: datetime | None

    @property
    def is_backfill(self) -> bool:
        return self.run_id.startswith("backfill__")

    @property
    def label(self) -> str:
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.run_id} {self.task_id}{index} try {self.try_number}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc) if value else None


ATTEMPT_COLUMNS = "run_id, task_id, map_index, try_number, state, pool, priority_weight, scheduled_dttm, queued_dttm"


def attempts(airflow: AirflowServices) -> list[Attempt]:
    """Every try of every task instance: earlier tries live in task_instance_history."""
    rows = airflow.query(
        f"SELECT {ATTEMPT_COLUMNS} FROM task_instance WHERE dag_id = ? "
        f"UNION ALL SELECT {ATTEMPT_COLUMNS} FROM task_instance_history WHERE dag_id = ?",
        (DAG_ID, DAG_ID),
    )
    return [Attempt(*r[:6], r[6] or 0, *(_time(v) for v in r[7:])) for r in rows]


def runs(airflow: AirflowServices) -> dict[str, str]:
    return dict(airflow.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,)))


def describe(airflow: AirflowServices) -> str:
    lines = [f"runs: {runs(airflow)}"]
    lines += [
        f"  {a.label}: {a.state} pool={a.pool} weight={a.priority_weight} scheduled={a.scheduled} queued={a.queued}"
        for a in sorted(attempts(airflow), key=lambda a: (a.queued or datetime.max.replace(tzinfo=timezone.utc)))
    ]
    return "\n".join(lines)


def no_failed_run(airflow: AirflowServices) -> None:
    failed = [run for run, state in runs(airflow).items() if state == "failed"]
    assert not failed, f"runs failed: {failed}\n{describe(airflow)}"


def overtaking(attempt: Attempt, others: list[Attempt]) -> list[Attempt]:
    """Backfill attempts of the pool queued while ``attempt`` was waiting for it."""
    return [
        other
        for other in others
        if other.is_backfill and other.pool == POOL and other.queued and attempt.scheduled < other.queued < attempt.queued
    ]


def waiting_with(attempt: Attempt, others: list[Attempt]) -> list[Attempt]:
    """Backfill attempts of the pool that were already waiting when ``attempt`` arrived."""
    return [
        other
        for other in others
        if other.is_backfill
        and other.pool == POOL
        and other.scheduled
        and other.queued
        and other.scheduled <= attempt.scheduled
        and other.queued > attempt.queued
    ]


# The pool size of include/pools.json. (Pool size 1 was a second run of this test until
# the suite outgrew its time budget: the rule under test, ScheduledBeforeBackfill, does
# not depend on the size, and 2 is the case where a backfill holds more than one slot.)
SLOTS = 2


def test_scheduled_run_is_served_before_a_busy_backfill(template_db, tmp_path):
    slots = SLOTS
    current = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    latest = current - timedelta(hours=1)  # the scheduled run's hour, unless the clock passes an hour meanwhile
    first = latest - timedelta(hours=BACKFILL_HOURS)
    lake = tmp_path / "lake"

    # Data up to the end of the current hour: whichever hour the scheduler finds latest
    # complete when the DAG is unpaused (or when an hour passes mid-test) has alerts.
    with SimulatorProcess(
        tmp_path / "sim",
        alerts=ALERTS_PER_HOUR * (BACKFILL_HOURS + 2),
        start=first.isoformat(),
        end=(current + timedelta(hours=1)).isoformat(),
        seed=11,
        rate_limits=LIMITS,
    ) as sim:
        # Fresh home: include/pools.json imported as a deployment does, then resized.
        # No task retries: a failure shows at once instead of after a retry delay.
        with pipeline_services(
            tmp_path, sim, template_db, pool_slots=slots, client=CLIENT, env={"MDE_ALERT_IPS_TASK_RETRIES": "0"}
        ) as airflow:
            # A backfill of a paused DAG is created, but nothing of it runs until unpaused.
            airflow.create_backfill(
                DAG_ID, first, latest - timedelta(hours=1), max_active_runs=BACKFILL_HOURS, conf=BACKFILL_CONF
            )
            airflow.unpause(DAG_ID)

            def scheduled_run_id() -> str | None:
                no_failed_run(airflow)
                return next((r for r in runs(airflow) if r.startswith("scheduled__")), None)

            scheduled = airflow.wait_for(scheduled_run_id, 60, "the scheduler to create the scheduled run")

            def scheduled_done_and_backfill_busy() -> bool:
                no_failed_run(airflow)
                if runs(airflow).get(scheduled) != "success":
                    return False
                backfill = [a for a in attempts(airflow) if a.is_backfill and a.pool == POOL]
                holding = [a for a in backfill if a.state in ("queued", "running")]
                waiting = [a for a in backfill if a.state == "scheduled"]
                # Enough waiting that some still wait when the rerun's tasks arrive (the
                # clear and the next scheduler loop take a few seconds).
                return len(holding) >= 1 and len(waiting) >= slots + 1

            airflow.wait_for(
                scheduled_done_and_backfill_busy,
                180,
                "the scheduled run to succeed while the backfill still has pool tasks to run",
                diagnostics=lambda: describe(airflow),
            )
            airflow.clear_run(DAG_ID, scheduled)

            def all_finished() -> bool:
                no_failed_run(airflow)
                states = runs(airflow)
                backfill = [r for r in states if r.startswith("backfill__")]
                reran = [a for a in attempts(airflow) if a.run_id == scheduled and a.try_number >= 2]
                return len(backfill) == BACKFILL_HOURS and bool(reran) and all(s in FINISHED for s in states.values())

            airflow.wait_for(all_finished, 240, "every run to finish", diagnostics=lambda: describe(airflow))
            final_runs = runs(airflow)
            loaded_hours = sorted(
                _time(start) for (start,) in airflow.query("SELECT data_interval_start FROM dag_run WHERE dag_id = ?", (DAG_ID,))
            )
            record = attempts(airflow)
            report = describe(airflow)
        stats = sim.stats()
        truth = sim.ground_truth()

    # Every run succeeded: the backfill's hours and the scheduled hour (an hour boundary
    # passing mid-test adds the scheduled run of the next hour: it must succeed too).
    assert set(final_runs.values()) == {"success"}, report
    assert len([r for r in final_runs if r.startswith("backfill__")]) == BACKFILL_HOURS, report
    assert loaded_hours[:BACKFILL_HOURS] == lake_check.hours(first, latest), report

    # The budget held: no 429, every window's maximum within its limit, and the limiter
    # really was the bottleneck at least once (the short window filled up).
    assert stats["throttled"] == 0, stats
    windows = stats["clients"][0]["windows"]
    for window in windows:
        assert window["all"]["max_calls"] <= window["limit"], windows
    assert any(w["all"]["max_admitted"] == w["limit"] for w in windows), f"the budget never bound: {windows}"

    # The scheduled run came first. Its tasks outrank every backfill task ...
    pool_record = [a for a in record if a.pool == POOL and a.queued]
    served = [a for a in pool_record if not a.is_backfill]
    backfill = [a for a in pool_record if a.is_backfill]
    assert backfill and served, report
    assert min(a.priority_weight for a in served) > max(a.priority_weight for a in backfill), report
    # ... and none waited for more than the batches in flight: no backfill task got a
    # pool slot between the moment a scheduled-run task became ready and its own turn.
    for attempt in served:
        assert attempt.scheduled is not None, f"{attempt.label} has no scheduled_dttm\n{report}"
        assert not overtaking(attempt, record), (
            f"{attempt.label} (scheduled {attempt.scheduled}, queued {attempt.queued}) was overtaken by "
            f"{[o.label for o in overtaking(attempt, record)]}\n{report}"
        )
    # The rerun really arrived mid-backfill: for each of its pool tasks, a backfill task
    # that was ready before it got its slot in a later scheduler loop (it lost the slot).
    rerun = [a for a in served if a.run_id == scheduled and a.try_number >= 2]
    assert {a.task_id for a in rerun} == {"list_alerts", "fetch_ips"}, report
    for attempt in rerun:
        assert waiting_with(attempt, record), f"{attempt.label}: no backfill task was waiting with it\n{report}"

    # The lake is exact for every loaded hour, the rerun hour included (replaced, not doubled).
    comparison = lake_check.compare(lake, truth, loaded_hours)
    assert comparison.exact, str(comparison)
    assert comparison.expected_alerts > 0
