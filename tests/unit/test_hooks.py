"""MdeHook through Airflow's real connection lookup (AIRFLOW_CONN_* in the environment)."""

from __future__ import annotations

import json

import pytest

from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.airflow.hooks import MdeHook
from mde_pipeline.airflow.provider_info import CONN_FIELDS

SECRET = "hook~Secret.0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def mde_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("MDE_RATE_LIMIT_LEDGER_DIR", str(tmp_path / "ledger"))


def set_connection(monkeypatch, conn_id="mde_default", **fields):
    document = {"conn_type": "http", "login": "hook-client", "password": SECRET, **fields}
    document.setdefault("extra", {"tenant_id": "hook-tenant", "cloud": "eu"})
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(document))


def test_hook_reads_the_default_connection_from_the_environment(monkeypatch):
    set_connection(monkeypatch)
    hook = MdeHook()
    config = hook.get_config()
    assert config.conn_id == "mde_default"
    assert config.tenant_id == "hook-tenant"
    assert config.client_id == "hook-client"
    assert config.client_secret == SECRET
    assert config.endpoints.api_base_url == "https://eu.api.security.microsoft.com"
    assert config.endpoints.scope == "https://api.securitycenter.microsoft.com/.default"
    assert SECRET not in repr(config)


def test_hook_attributes_follow_airflow_conventions():
    assert MdeHook.conn_name_attr == "mde_conn_id"
    assert MdeHook.default_conn_name == "mde_default"
    assert MdeHook.conn_type == "mde"
    assert MdeHook.hook_name == "Microsoft Defender for Endpoint"


def test_an_mde_connection_parses_into_the_config_of_the_equivalent_http_one(monkeypatch):
    """The type only changes the UI: the same fields, as Airflow 3.3's form saves them
    (every field of the form, null when left empty; "" or false after a clear), give the
    same MdeConnectionConfig as an http connection."""
    extra = {"tenant_id": "hook-tenant", "cloud": "eu", "rate_limits": "[[7, 3]]", "rate_limit_share": 0.5}
    set_connection(monkeypatch, conn_id="mde_http", extra=extra)
    form = {**dict.fromkeys(CONN_FIELDS), **extra, "certificate_path": "", "use_managed_identity": False,
            "rate_limit_ledger": ""}  # fmt: skip
    set_connection(monkeypatch, conn_id="mde_typed", conn_type="mde", extra=form)
    http, typed = MdeHook("mde_http").get_config(), MdeHook("mde_typed").get_config()
    assert typed == http.__class__(**{**http.__dict__, "conn_id": "mde_typed"})
    assert typed.rate_limits[0].limit == 7 and typed.auth_method == "client_secret"


def test_the_older_form_spelling_extra__mde__name_reads_as_the_bare_name(monkeypatch):
    """Airflow 3.3's form saves ``tenant_id`` (tests/deploy/test_conn_form_browser.py);
    Airflow 2's saved ``extra__mde__tenant_id``: the same config either way."""
    bare = {"tenant_id": "hook-tenant", "cloud": "eu", "rate_limits": "[[7, 3]]", "certificate_path": None}
    set_connection(monkeypatch, conn_id="mde_bare", conn_type="mde", extra=bare)
    prefixed = {f"extra__mde__{key}": value for key, value in bare.items()}
    set_connection(monkeypatch, conn_id="mde_prefixed", conn_type="mde", extra={**prefixed, "tenant_id": None})
    expected = MdeHook("mde_bare").get_config()
    renamed = expected.__class__(**{**expected.__dict__, "conn_id": "mde_prefixed"})
    assert MdeHook("mde_prefixed").get_config() == renamed

    set_connection(monkeypatch, conn_id="mde_both", conn_type="mde", extra={**bare, "extra__mde__tenant_id": "other"})
    with pytest.raises(MdeConfigurationError, match="extra tenant_id and extra__mde__tenant_id .* different values"):
        MdeHook("mde_both").get_config()


def test_a_malformed_extra_is_reported_as_such(monkeypatch):
    set_connection(monkeypatch, conn_id="mde_broken", conn_type="mde", extra='{"tenant_id": ')
    with pytest.raises(MdeConfigurationError, match="connection 'mde_broken': extra is not valid JSON"):
        MdeHook("mde_broken").get_config()


def test_hook_uses_the_named_connection_host_and_port(monkeypatch):
    set_connection(monkeypatch, conn_id="mde_other", host="mde-proxy.example.org", port=8443,
                   extra={"tenant_id": "t"})  # fmt: skip
    config = MdeHook(mde_conn_id="mde_other").get_config()
    assert config.endpoints.api_base_url == "https://mde-proxy.example.org:8443"


def test_client_is_cached_per_hook_and_spends_the_connections_budget(monkeypatch, tmp_path):
    set_connection(monkeypatch, extra={"tenant_id": "hook-tenant", "rate_limits": [[7, 3]]})
    hook = MdeHook()
    client = hook.get_client()
    try:
        assert isinstance(client, MdeClient)
        assert hook.get_client() is client
        assert client.tenant_id == "hook-tenant"
        assert client.limiter.key == "hook-tenant:hook-client"
        assert client.limiter.windows[0].limit == 7
        # the default ledger is the shared SQLite file in MDE_RATE_LIMIT_LEDGER_DIR
        assert (tmp_path / "ledger" / "mde_rate_ledger.sqlite3").exists()
    finally:
        hook.close()


def test_a_backfill_tasks_client_reserves_in_the_background(monkeypatch):
    set_connection(monkeypatch, extra={"tenant_id": "t", "scheduled_reserve_share": 0.1})
    hooks = MdeHook(), MdeHook(background=True)
    try:
        scheduled, backfill = (hook.get_client().limiter for hook in hooks)
        assert (scheduled.background, backfill.background) == (False, True)
        assert backfill.scheduled_reserve_share == 0.1
    finally:
        for hook in hooks:
            hook.close()


def test_missing_connection_is_airflows_not_found_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MDE_MISSING", raising=False)
    from airflow.sdk.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException):
        MdeHook(mde_conn_id="mde_missing").get_config()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"extra": {"cloud": "eu"}}, "tenant_id is required"),
        ({"login": None}, "login"),
        ({"password": None}, "password"),
        ({"extra": {"tenant_id": "t", "cloud": "nowhere"}}, "unknown cloud"),
    ],
)
def test_incomplete_connections_name_what_is_missing(monkeypatch, fields, message):
    set_connection(monkeypatch, **fields)
    with pytest.raises(MdeConfigurationError, match=message) as info:
        MdeHook().get_config()
    assert "'mde_default'" in str(info.value)
    assert SECRET not in str(info.value)


PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7pemTestKeyLine1\n"
    "q9zTestKeyLine2abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP\n"
    "-----END PRIVATE KEY-----\n"
)


def test_certificate_data_and_password_are_masked_when_the_connection_is_read(monkeypatch):
    """Neither name holds one of Airflow's sensitive words: the hook masks them itself,
    whole and line by line, in what the task logger writes (its mask_logs processor)."""
    from airflow.sdk.log import mask_logs

    password = "cert-Passw0rd-for-the-test"
    set_connection(monkeypatch, password=None, extra={"tenant_id": "t", "cloud": "eu", "certificate_data": PEM,
                                                      "certificate_password": password})  # fmt: skip
    MdeHook().get_config()
    key_line = PEM.splitlines()[1]
    event = {"event": f"loaded {PEM} with {password}", "detail": key_line, "nested": {"x": [PEM]}}
    logged = repr(mask_logs(None, "info", event))
    assert password not in logged
    assert key_line not in logged
    assert PEM.splitlines()[2] not in logged
    assert "***" in logged


def test_a_redis_ledger_password_is_masked_when_the_connection_is_read(monkeypatch):
    from airflow.sdk.log import mask_logs

    url = "redis://:Redis-Passw0rd-for-the-test@10.20.0.5:6379/1"
    set_connection(monkeypatch, extra={"tenant_id": "t", "cloud": "eu", "rate_limit_ledger": url})
    MdeHook().get_config()
    logged = repr(mask_logs(None, "info", {"event": f"extra rate_limit_ledger={url}"}))
    assert "Redis-Passw0rd-for-the-test" not in logged and "10.20.0.5:6379" in logged
