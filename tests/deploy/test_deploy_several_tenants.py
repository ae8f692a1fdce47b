"""Several tenants in a deployment (Variable mde_tenants): docker-compose hands the Variable
to every Airflow component, and the connection check of airflow-init checks each
tenant's connection ``mde_<name>`` instead of ``mde_default``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import AIRFLOW_SERVICES, REPO, compose_model

sys.path.insert(0, str(REPO / "include" / "deploy"))
import check_connections as check  # noqa: E402  (include/deploy is not a package)

TENANTS = '["east", "west"]'


def test_compose_hands_the_tenants_variable_to_every_airflow_component(tmp_path, filled_tenant_env_file, tenant_model):
    env_file = tmp_path / "env"
    env_file.write_text(filled_tenant_env_file.read_text() + f"\nAIRFLOW_VAR_MDE_TENANTS='{TENANTS}'\n")
    model = compose_model(env_file)
    for name in AIRFLOW_SERVICES:  # the DAG processor and the workers must parse the same DAGs
        assert model["services"][name]["environment"]["AIRFLOW_VAR_MDE_TENANTS"] == TENANTS, name
        # Without it in .env the name has no value (not in the container), so a Variable
        # kept in the metadata DB applies.
        assert tenant_model["services"][name]["environment"].get("AIRFLOW_VAR_MDE_TENANTS") is None, name
    assert "AIRFLOW_VAR_MDE_TENANTS:" in (REPO / "docker-compose.worker-host.yaml").read_text()


@pytest.fixture
def connection(filled_tenant_env_file) -> str:
    from dotenv import dotenv_values

    return dotenv_values(filled_tenant_env_file)["AIRFLOW_CONN_MDE_DEFAULT"]


def test_the_check_reads_each_tenants_connection_instead_of_mde_default(monkeypatch, tmp_path, connection):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_MDE_DEFAULT", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_MDE_TENANTS", TENANTS)
    monkeypatch.setenv("AIRFLOW_CONN_MDE_EAST", connection)
    broken = json.loads(connection)
    broken["extra"].pop("tenant_id")
    monkeypatch.setenv("AIRFLOW_CONN_MDE_WEST", json.dumps(broken))
    problems, summaries = check.check_tenants(dict(os.environ))
    assert [s.split(":")[0] for s in summaries] == ["mde_east"]
    assert summaries[0].startswith("mde_east: client_secret auth, cloud commercial")
    assert len(problems) == 1 and "extra tenant_id is required" in problems[0] and "mde_west" in problems[0]
    assert json.loads(connection)["password"] not in " ".join(problems + summaries)

    monkeypatch.delenv("AIRFLOW_CONN_MDE_WEST")
    problems, _ = check.check_tenants(dict(os.environ))
    assert problems == [
        "AIRFLOW_CONN_MDE_WEST is not set: copy .env.example to .env (include/deploy/make_env.py) and fill it in"]


def test_the_check_refuses_a_bad_tenants_variable_and_checks_mde_default_without_one():
    problems, summaries = check.check_tenants({"AIRFLOW_VAR_MDE_TENANTS": '["east", "east"]'})
    assert summaries == [] and problems == ["AIRFLOW_VAR_MDE_TENANTS: Variable mde_tenants names tenant 'east' twice"]
    assert check.mde_conn_ids({}) == (["mde_default"], [])
    assert check.mde_conn_ids({"AIRFLOW_VAR_MDE_TENANTS": "[]"}) == (["mde_default"], [])
    assert check.mde_conn_ids({"AIRFLOW_VAR_MDE_TENANTS": TENANTS}) == (["mde_east", "mde_west"], [])
