"""More worker hosts (docs/DEPLOYMENT.md "More worker hosts"): the main host's override
publishes PostgreSQL and Redis on a private address; the worker-host file reaches them,
the API server and one shared lake, with only the secrets a worker needs."""

from __future__ import annotations

import pytest
from conftest import REPO, compose_model, render_env, run_compose
from test_deploy_compose import AIRFLOW_KEYS, BROKER, CONNECTIONS, SECRET_VARIABLES

MAIN_HOST_FILE = REPO / "docker-compose.main-host.yaml"
WORKER_HOST_FILE = REPO / "docker-compose.worker-host.yaml"
MAIN_FILES = (REPO / "docker-compose.yaml", MAIN_HOST_FILE)
WORKER_HOST = {
    "MAIN_HOST": "10.20.0.5",
    "WORKER_HOSTNAME": "worker-b.internal",
    "WORKER_BIND_ADDRESS": "10.20.0.6",
    "AIRFLOW_VAR_MDE_LAKE_ROOT": "abfs://lake@mdelakeaccount.dfs.core.windows.net/mde",
}


def test_the_main_host_publishes_database_and_broker_on_the_private_address_only(tmp_path):
    env_file = render_env(".env.example", tmp_path / "env", CLUSTER_BIND_ADDRESS="10.20.0.5")
    services = compose_model(env_file, files=MAIN_FILES)["services"]
    published = {(n, p["target"]): p["host_ip"] for n, s in services.items() for p in s.get("ports", [])}
    assert published == {("postgres", 5432): "10.20.0.5", ("redis", 6379): "10.20.0.5", ("airflow-apiserver", 8080): "127.0.0.1"}
    missing = run_compose(render_env(".env.example", tmp_path / "bare"), "config", files=MAIN_FILES)
    assert missing.returncode != 0 and "CLUSTER_BIND_ADDRESS" in missing.stderr


def test_a_worker_host_reaches_the_main_host_and_sees_only_a_workers_secrets(tmp_path):
    from dotenv import dotenv_values

    env_file = render_env(".env.example", tmp_path / "env", **WORKER_HOST)
    values = dotenv_values(env_file)
    model = compose_model(env_file, files=(WORKER_HOST_FILE,))
    (name,) = model["services"]
    worker = model["services"][name]
    env = worker["environment"]
    assert worker["command"] == ["celery", "worker"] and worker["hostname"] == "worker-b.internal"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://10.20.0.5:8080/execution/"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{values['REDIS_PASSWORD']}@10.20.0.5:6379/0"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f":{values['POSTGRES_PASSWORD']}@10.20.0.5:5432/airflow")
    assert env["AIRFLOW_VAR_MDE_LAKE_ROOT"] == WORKER_HOST["AIRFLOW_VAR_MDE_LAKE_ROOT"]
    assert "10.20.0.5" in env["NO_PROXY"].split(",")
    assert [(p["target"], p["host_ip"]) for p in worker["ports"]] == [(8793, "10.20.0.6")]
    text = "\n".join(str(v) for v in env.values() if v is not None)
    seen = {variable for variable in SECRET_VARIABLES if values.get(variable) and values[variable] in text}
    assert seen == {v for v in AIRFLOW_KEYS | CONNECTIONS | BROKER if values.get(v)}
    assert "_AIRFLOW_WWW_USER_PASSWORD" not in seen and "FLOWER_BASIC_AUTH" not in seen


@pytest.mark.parametrize("variable", sorted(WORKER_HOST))
def test_a_worker_host_refuses_to_start_without_what_it_must_share(tmp_path, variable):
    env_file = render_env(".env.example", tmp_path / "env", **{k: v for k, v in WORKER_HOST.items() if k != variable})
    proc = run_compose(env_file, "config", files=(WORKER_HOST_FILE,))
    assert proc.returncode != 0 and variable in proc.stderr
