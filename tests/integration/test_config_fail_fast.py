"""Configuration mistakes fail at once, name the setting and spend no retry: Entra's 400
(metadata lookup or token endpoint, with or without an AADSTS code) through the real
client against the simulator, and a lake root that cannot be written, before any call."""

from __future__ import annotations

import json
import os

import pytest
from airflow.sdk.exceptions import AirflowFailException

from mde_pipeline.airflow.operators import MdeListAlertsOperator
from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import MdeConfigurationError, MdeEntraConfigurationError
from mde_simulator.process import SimulatorProcess
from tests.integration.simulator_env import use_simulator

pytestmark = pytest.mark.slow

TENANT_HINT = "extra tenant_id"
CLOUD_HINT = "extra cloud / authority_host"


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("mde_sim"), alerts=20, seed=3) as sim:
        yield sim


@pytest.fixture
def sim(sim_process, monkeypatch, tmp_path):
    sim_process.configure(entra_400=None)
    sim_process.reset_stats(limiter=True)
    use_simulator(sim_process, monkeypatch, tmp_path)
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    yield sim_process
    sim_process.configure(entra_400=None)


def config_of(sim, **overrides) -> MdeConnectionConfig:
    conn = json.loads(sim.connection_uri(**overrides))
    # retry_total 5: a retry of a refusal would show up in the counts below.
    return MdeConnectionConfig.from_parts(host=conn["host"], login=conn["login"], password=conn["password"],
                                          extra={**conn["extra"], "retry_total": 5})  # fmt: skip


def entra_calls(sim) -> dict:
    calls = sim.stats()["calls"]
    return {name: calls[name] for name in ("openid_configuration", "token", "list", "ips") if name in calls}


@pytest.mark.parametrize(
    "refusal,calls,code",
    [
        ({"endpoint": "metadata", "code": 90002}, {"openid_configuration": {"400": 1}}, "AADSTS90002"),
        ({"endpoint": "metadata", "code": None}, {"openid_configuration": {"400": 1}}, None),
        ({"endpoint": "token", "code": 90002}, {"openid_configuration": {"200": 1}, "token": {"400": 1}}, "AADSTS90002"),
        ({"endpoint": "token", "code": 900023}, {"openid_configuration": {"200": 1}, "token": {"400": 1}}, "AADSTS900023"),
        ({"endpoint": "token", "code": None}, {"openid_configuration": {"200": 1}, "token": {"400": 1}}, None),
    ],
)
def test_a_400_from_entra_is_a_configuration_error_naming_the_setting_after_one_call(sim, refusal, calls, code):
    sim.configure(entra_400=refusal)
    config = config_of(sim)
    with MdeClient(config) as client:
        with pytest.raises(MdeEntraConfigurationError) as info:
            client.list_alerts_page(filter=None, top=1)
    error = info.value
    assert isinstance(error, MdeConfigurationError) and error.status == 400 and error.code == code
    assert TENANT_HINT in str(error) and (refusal["code"] is None or CLOUD_HINT in str(error))
    assert config.client_secret not in str(error) + repr(error)
    assert entra_calls(sim) == calls  # no retry, no API call


def test_an_unknown_tenant_and_an_unknown_client_id_name_what_to_fix(sim):
    with MdeClient(config_of(sim, tenant_id="00000000-0000-0000-0000-00000000dead")) as client:
        with pytest.raises(MdeEntraConfigurationError, match=f"{TENANT_HINT}.*{CLOUD_HINT}"):
            client.list_alerts_page(filter=None, top=1)
    assert entra_calls(sim) == {"openid_configuration": {"400": 1}}
    sim.reset_stats()
    with MdeClient(config_of(sim, login="11111111-2222-3333-4444-555555555555")) as client:
        with pytest.raises(MdeEntraConfigurationError, match=r"login \(the application \(client\) id\)") as info:
            client.list_alerts_page(filter=None, top=1)
    assert info.value.code == "AADSTS700016"
    assert entra_calls(sim) == {"openid_configuration": {"200": 1}, "token": {"400": 1}}


def test_a_tenant_id_no_tenant_can_have_is_refused_before_any_call(sim):
    with pytest.raises(MdeConfigurationError, match="extra tenant_id"):
        MdeClient(config_of(sim, tenant_id="contoso tenant!"))
    assert entra_calls(sim) == {}


def list_operator(sim, monkeypatch, lake_root: str, **overrides) -> MdeListAlertsOperator:
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", sim.connection_uri(**overrides))
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_ROOT", lake_root)
    return MdeListAlertsOperator(task_id="list", data_interval_start="2026-01-05 01:00:00+00:00",
                                 data_interval_end="2026-01-05 02:00:00+00:00")  # fmt: skip


def test_the_list_task_fails_without_retry_on_a_tenant_typo(sim, monkeypatch, tmp_path):
    operator = list_operator(sim, monkeypatch, str(tmp_path / "lake"), tenant_id="8f4c1f5e-2a6b-4c3d-9e8f-0a1b2c3d4e5e")
    with pytest.raises(AirflowFailException, match="not retried") as info:
        operator.execute({"run_id": "manual__typo"})
    assert TENANT_HINT in str(info.value) and isinstance(info.value.__cause__, MdeEntraConfigurationError)
    assert entra_calls(sim) == {"openid_configuration": {"400": 1}}
    assert info.value.__cause__.target  # Entra's correlation id, for support


@pytest.mark.parametrize("kind", ["under /proc", "read-only folder", "a file in the way"])
def test_a_lake_root_that_cannot_be_written_fails_the_list_task_before_any_call(sim, monkeypatch, tmp_path, kind):
    if kind == "under /proc":
        root = "/proc/nope/lake"
    elif kind == "read-only folder":
        (tmp_path / "ro").mkdir(mode=0o555)
        # root writes into any mode-0555 folder; sysfs refuses root too
        root = "/sys/mde_lake" if os.geteuid() == 0 else str(tmp_path / "ro" / "lake")
    else:
        (tmp_path / "file").write_text("not a folder")
        root = str(tmp_path / "file" / "lake")
    with pytest.raises(AirflowFailException, match="Variable mde_lake_root") as info:
        list_operator(sim, monkeypatch, root).execute({"run_id": "manual__lake"})
    assert root in str(info.value) and "not retried" in str(info.value)
    assert isinstance(info.value.__cause__, MdeConfigurationError)
    assert entra_calls(sim) == {}  # not even a token


def test_a_lake_root_that_does_not_parse_fails_the_list_task_without_retry(sim, monkeypatch):
    """A malformed abfs root (no valid container name) is configuration too: no retry, no
    call. (It fails in parsing, before any connection is read or storage reached.)"""
    with pytest.raises(AirflowFailException, match="not retried") as info:
        list_operator(sim, monkeypatch, "abfs://Not_A_Container!/lake").execute({"run_id": "manual__bad_root"})
    assert "LakeLocationError" in str(info.value) and "invalid container name" in str(info.value)
    assert "list" not in entra_calls(sim) and "ips" not in entra_calls(sim)  # no API call
