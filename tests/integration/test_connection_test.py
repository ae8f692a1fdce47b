"""Airflow's connection test of an ``mde`` connection (MdeHook.test_connection: what
`airflow connections test` and the UI's Test button run) against the HTTPS simulator: a
token, then one listing call of one alert; a failure says which setting is wrong in the
tasks' words, never with the secret."""

from __future__ import annotations

import json

import pytest

from mde_pipeline.airflow.hooks import MdeHook
from mde_simulator.process import SimulatorProcess
from tests.integration.simulator_env import use_simulator

pytestmark = pytest.mark.slow

WRONG_SECRET = "wrong~Secret.0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("mde_sim"), alerts=5, seed=4) as sim:
        yield sim


@pytest.fixture
def sim(sim_process, monkeypatch, tmp_path):
    sim_process.reset_stats(limiter=True)
    return use_simulator(sim_process, monkeypatch, tmp_path)


def connection_test(sim, monkeypatch, **overrides) -> tuple[bool, str]:
    connection = json.loads(sim.connection_uri(**overrides))
    connection["conn_type"] = "mde"
    monkeypatch.setenv("AIRFLOW_CONN_MDE_CHECK", json.dumps(connection))
    return MdeHook("mde_check").test_connection()


def api_calls(sim) -> dict:
    calls = sim.stats()["calls"]
    return {name: calls[name] for name in ("token", "list", "ips") if name in calls}


def test_good_credentials_get_a_token_and_list_one_alert(sim, monkeypatch):
    ok, message = connection_test(sim, monkeypatch)
    assert ok is True, message
    assert "listed 1 alert from " + sim.base_url in message and sim.info["tenant_id"] in message
    assert api_calls(sim) == {"token": {"200": 1}, "list": {"200": 1}}


def test_a_wrong_secret_fails_plainly_without_the_secret(sim, monkeypatch):
    ok, message = connection_test(sim, monkeypatch, password=WRONG_SECRET)
    assert ok is False
    assert message.startswith("MdeAuthenticationError: ") and "401" in message
    assert WRONG_SECRET not in message and sim.info["client_secret"] not in message
    assert "list" not in api_calls(sim)  # no API call without a token


def test_a_wrong_tenant_names_the_setting_as_the_tasks_do(sim, monkeypatch):
    ok, message = connection_test(sim, monkeypatch, tenant_id="00000000-0000-0000-0000-00000000dead")
    assert ok is False
    assert message.startswith("MdeEntraConfigurationError: ") and "extra tenant_id" in message
    assert sim.info["client_secret"] not in message


def test_a_connection_that_does_not_parse_says_what_to_fix(sim, monkeypatch):
    ok, message = connection_test(sim, monkeypatch, tenant_id="")
    assert ok is False and "MdeConfigurationError" in message and "extra tenant_id is required" in message
    assert api_calls(sim) == {}
