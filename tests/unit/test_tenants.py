"""Variable mde_tenants -> one DAG, connection and pool per tenant (mde_pipeline.airflow.tenants)."""

from __future__ import annotations

import json

import pytest

from mde_pipeline.airflow.tenants import (
    DEFAULT_TENANT_DAG,
    TENANTS_ENV,
    TenantDag,
    TenantsConfigError,
    configured_tenant_dags,
    parse_tenants,
    read_tenants_text,
    tenant_dags,
    tenant_pools,
)

POOLS = {"mde_api": {"slots": 2, "description": "Bounds the API callers.", "include_deferred": False}}


@pytest.mark.parametrize("text", [None, "", "  ", "[]", " [ ] "])
def test_no_tenants_is_the_single_tenant_default(text):
    assert parse_tenants(text) == []
    assert tenant_dags(parse_tenants(text)) == [DEFAULT_TENANT_DAG]
    assert DEFAULT_TENANT_DAG == TenantDag(None, "mde_alert_ips", "mde_default", "mde_api")


def test_each_name_gets_its_dag_connection_and_pool_in_order():
    names = parse_tenants('["contoso", "Fab_rikam-2"]')
    assert tenant_dags(names) == [
        TenantDag("contoso", "mde_alert_ips_contoso", "mde_contoso", "mde_api_contoso"),
        TenantDag("Fab_rikam-2", "mde_alert_ips_Fab_rikam-2", "mde_Fab_rikam-2", "mde_api_Fab_rikam-2"),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("contoso,fabrikam", "not JSON"),
        ('{"contoso": 1}', "got a JSON dict"),
        ('"contoso"', "got a JSON str"),
        ("null", "got a JSON NoneType"),
        ('["a b"]', "'a b' is not 1-64 letters"),
        ('["a.b"]', "'a.b' is not"),
        ('[""]', "'' is not"),
        ("[1]", "1 is not"),
        ('[["a"]]', "['a'] is not"),
        (json.dumps(["x" * 65]), "is not 1-64"),
        ('["a", "b", "a"]', "names tenant 'a' twice"),
        ('["Contoso", "contoso"]', "differ only in case"),
    ],
)
def test_a_bad_variable_is_refused_naming_it_and_what_is_wrong(text, says):
    with pytest.raises(TenantsConfigError, match="Variable mde_tenants") as caught:
        parse_tenants(text)
    assert says in str(caught.value)


def test_the_environment_is_read_first_without_asking_airflow(monkeypatch):
    import airflow.sdk

    def no_lookup(*args, **kwargs):
        raise AssertionError("Variable.get must not be called when the environment has the Variable")

    monkeypatch.setattr(airflow.sdk.Variable, "get", no_lookup)
    assert read_tenants_text({TENANTS_ENV: '["a"]'}) == '["a"]'
    # Set but empty is set: it would shadow a stored Variable in Airflow too.
    assert read_tenants_text({TENANTS_ENV: ""}) == ""
    assert configured_tenant_dags({TENANTS_ENV: '["a"]'}) == [tenant_dags(["a"])[0]]


def test_without_the_environment_the_variable_comes_from_airflow(monkeypatch):
    import airflow.sdk

    asked = []

    def lookup(key, default="unset", deserialize_json=False):
        asked.append((key, default))
        return '["from-airflow"]' if key == "mde_tenants" else default

    monkeypatch.setattr(airflow.sdk.Variable, "get", lookup)
    assert configured_tenant_dags({})[0].dag_id == "mde_alert_ips_from-airflow"
    assert asked == [("mde_tenants", None)]


def test_an_undefined_variable_is_no_tenants(monkeypatch):
    # The real lookup in a plain process: the environment backend only, not found -> None.
    monkeypatch.delenv(TENANTS_ENV, raising=False)
    assert read_tenants_text({}) is None
    assert configured_tenant_dags({}) == [DEFAULT_TENANT_DAG]


def test_pools_of_the_tenants_copy_the_api_pool_and_keep_it():
    document = tenant_pools(POOLS, ["a", "b-2"])
    assert list(document) == ["mde_api", "mde_api_a", "mde_api_b-2"]
    assert document["mde_api"] == POOLS["mde_api"]
    for name in ("a", "b-2"):
        pool = document[f"mde_api_{name}"]
        assert (pool["slots"], pool["include_deferred"]) == (2, False)
        assert pool["description"].startswith(f"Tenant {name} (connection mde_{name}, DAG mde_alert_ips_{name}).")
        assert pool["description"].endswith(POOLS["mde_api"]["description"])
    assert tenant_pools(POOLS, []) == POOLS
    with pytest.raises(ValueError, match="no pool 'mde_api'"):
        tenant_pools({}, ["a"])
