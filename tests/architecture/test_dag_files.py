"""Every DAG file parses and defines what it promises: in-process, in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= {"mde_alert_ips", "mde_lake_compaction"}


def test_the_hourly_dag_is_settle_list_fetch_publish(dagbag):
    dag = dagbag.dags["mde_alert_ips"]
    assert {task.task_id: sorted(task.downstream_task_ids) for task in dag.tasks} == {
        "settle": ["list_alerts"],
        "list_alerts": ["fetch_ips"],
        "fetch_ips": ["publish"],
        "publish": [],
    }
    assert {task.task_id: task.pool for task in dag.tasks if task.task_id != "publish"} == {
        "settle": "default_pool",  # deferred: holds neither a worker slot nor an mde_api slot
        "list_alerts": "mde_api",
        "fetch_ips": "mde_api",
    }
    assert dag.params["refetch"] is False


def test_compaction_then_indexing_each_retrying_alone(dagbag):
    dag = dagbag.dags["mde_lake_compaction"]
    tasks = {task.task_id: task for task in dag.tasks}
    assert len(tasks) == 2
    (first,) = [task for task in tasks.values() if not task.upstream_task_ids]
    (second,) = [task for task in tasks.values() if task.upstream_task_ids]
    assert second.upstream_task_ids == {first.task_id}
    assert "compact" in first.task_id and "index" in second.task_id
    assert all(task.retries >= 1 for task in tasks.values())


def test_no_task_runs_unbounded(dagbag):
    for dag_id in ("mde_alert_ips", "mde_lake_compaction"):
        for task in dagbag.dags[dag_id].tasks:
            assert task.execution_timeout is not None and task.execution_timeout.total_seconds() > 0, task.task_id
