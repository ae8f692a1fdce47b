"""Priority weight strategy: scheduled (and manual) runs before backfill runs.

Pool ``mde_api`` is the API budget. When a 180-day backfill keeps every slot busy, the
scheduler hands the next free slot to the queued task instance with the highest
priority weight. This strategy makes any non-backfill run outrank every backfill task,
so an hourly load waits for at most one in-flight batch per slot.

The scheduler builds task instances for mapped tasks with only ``run_id`` set (no
``dag_run`` relationship), so the run type is read from the run id's prefix, which
Airflow sets as ``<run type>__<suffix>`` (``DagRunType.generate_run_id``).

The DAG refers to this class by import path (``weight_rule=PRIORITY_WEIGHT_RULE``) and
the plugin (airflow/plugin.py) registers it: a strategy *object* on a mapped task
breaks ``airflow backfill create`` in 3.3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.task.priority_strategy import PriorityWeightStrategy

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance

# Above anything a task's own priority_weight plausibly holds (default 1).
NON_BACKFILL_BONUS = 10_000
BACKFILL_RUN_ID_PREFIX = "backfill__"
BACKFILL_RUN_TYPE = "backfill"  # DagRunType.BACKFILL_JOB


def is_backfill_run(run_id: str | None) -> bool:
    """A backfill's run: its tasks rank last for pool slots and spend the budget last."""
    return bool(run_id) and run_id.startswith(BACKFILL_RUN_ID_PREFIX)


def weight_for(run_id: str | None, task_priority_weight: int) -> int:
    """The weight of a task instance of ``run_id`` whose task has ``task_priority_weight``."""
    if is_backfill_run(run_id):
        return task_priority_weight
    return task_priority_weight + NON_BACKFILL_BONUS


class ScheduledBeforeBackfill(PriorityWeightStrategy):
    """Every task of a scheduled or manual run outranks every task of a backfill run."""

    def get_weight(self, ti: TaskInstance) -> int:
        return weight_for(ti.run_id, ti.task.priority_weight if ti.task else 1)


PRIORITY_WEIGHT_RULE = f"{ScheduledBeforeBackfill.__module__}.{ScheduledBeforeBackfill.__qualname__}"
