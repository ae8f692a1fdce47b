"""Every DAG file parses and defines what it promises: in-process, in seconds."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"
TENANTS_ENV = "AIRFLOW_VAR_MDE_TENANTS"


def parse(tenants: str | None = None) -> DagBag:
    """The DAG folder parsed with Variable mde_tenants set (from the environment, as the
    DAG file reads it first) or not set at all."""
    environ = {k: v for k, v in os.environ.items() if k != TENANTS_ENV}
    if tenants is not None:
        environ[TENANTS_ENV] = tenants
    with mock.patch.dict(os.environ, environ, clear=True):
        return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def dagbag():
    return parse()


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


def test_one_hourly_dag_per_tenant_of_the_variable_from_the_one_file():
    bag = parse('["a", "b"]')
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"mde_alert_ips_a", "mde_alert_ips_b", "mde_lake_compaction"}
    for name in ("a", "b"):
        dag = bag.dags[f"mde_alert_ips_{name}"]
        assert dag.fileloc.endswith("mde_alert_ips.py") and f"tenant:{name}" in dag.tags
        tasks = {task.task_id: task for task in dag.tasks}
        assert {task_id: sorted(task.downstream_task_ids) for task_id, task in tasks.items()} == {
            "settle": ["list_alerts"], "list_alerts": ["fetch_ips"], "fetch_ips": ["publish"], "publish": [],
        }
        # Every task that calls the API (or finds the tenant's lake part) uses the tenant's connection.
        assert tasks["list_alerts"].mde_conn_id == f"mde_{name}"
        assert tasks["fetch_ips"].partial_kwargs["mde_conn_id"] == f"mde_{name}"
        assert tasks["publish"].mde_conn_id == f"mde_{name}"
        assert {task_id: task.pool for task_id, task in tasks.items() if task_id != "publish"} == {
            "settle": "default_pool", "list_alerts": f"mde_api_{name}", "fetch_ips": f"mde_api_{name}",
        }


def test_without_the_variable_the_one_dag_uses_mde_default(dagbag):
    tasks = {task.task_id: task for task in dagbag.dags["mde_alert_ips"].tasks}
    assert tasks["list_alerts"].mde_conn_id == "mde_default"
    assert tasks["fetch_ips"].partial_kwargs["mde_conn_id"] == "mde_default"
    assert tasks["publish"].mde_conn_id == "mde_default"
    assert not [dag_id for dag_id in dagbag.dag_ids if dag_id.startswith("mde_alert_ips_")]
    assert set(parse("[]").dag_ids) == set(dagbag.dag_ids)


@pytest.mark.parametrize("tenants", ['["a", "a"]', "a,b", '["a b"]'])
def test_a_bad_variable_is_an_import_error_naming_it_not_a_silent_change(tenants):
    bag = parse(tenants)
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("mde_alert_ips.py")
    assert "TenantsConfigError: Variable mde_tenants" in error
    # No hourly DAG at all (neither the tenants' nor the default), the other file as usual.
    assert set(bag.dag_ids) == {"mde_lake_compaction"}


def test_compaction_retention_then_indexing_each_retrying_alone(dagbag):
    dag = dagbag.dags["mde_lake_compaction"]
    tasks = {task.task_id: task for task in dag.tasks}
    assert set(tasks) == {"compact", "retain", "index"}
    assert tasks["compact"].upstream_task_ids == set()
    assert tasks["retain"].upstream_task_ids == {"compact"}
    assert tasks["index"].upstream_task_ids == {"retain"}
    assert dag.params["retention_dry_run"] is False
    assert all(task.retries >= 1 for task in tasks.values())


def test_no_task_runs_unbounded(dagbag):
    for dag_id in ("mde_alert_ips", "mde_lake_compaction"):
        for task in dagbag.dags[dag_id].tasks:
            assert task.execution_timeout is not None and task.execution_timeout.total_seconds() > 0, task.task_id
