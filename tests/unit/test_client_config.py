"""MdeConnectionConfig: the connection's fields and extra, validated with clear errors."""

from __future__ import annotations

import json
import logging

import pytest

from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.api.windows import Window


def parse(host="https://api.security.microsoft.com", login="cid", password="secret-value", **extra):
    return MdeConnectionConfig.from_parts(
        host=host, login=login, password=password, extra={"tenant_id": "t1", **extra}, conn_id="mde_default"
    )


def test_defaults():
    config = parse()
    assert config.auth_method == "client_secret"
    assert config.rate_limits == (Window(100, 60.0), Window(1500, 3600.0))
    assert config.rate_limit_margin_seconds == 1.0
    assert config.rate_limit_share == 1.0
    assert config.scheduled_reserve_share == 0.0
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert config.max_throttle_wait_seconds == 3900.0
    assert config.disable_instance_discovery is False
    assert config.budget_key == "t1:cid"


def test_extra_as_json_text_and_every_option():
    extra = {
        "tenant_id": "t2", "cloud": "gcc_high", "scope": "https://custom/.default",
        "authority_host": "https://login.example.org", "rate_limits": [[10, 1], [50, 5]],
        "rate_limit_margin_seconds": "0.05", "rate_limit_share": 0.5, "rate_limit_ledger_dir": "/x",
        "timeout": [3, 30], "retry_total": "2", "retry_backoff_factor": 0.1, "retry_backoff_max": 5,
        "max_throttle_wait_seconds": 120, "ca_bundle": "/ca.pem",
    }  # fmt: skip
    config = MdeConnectionConfig.from_parts(host=None, login="cid", password="s", extra=json.dumps(extra))
    assert config.endpoints.api_base_url == "https://api-gov.securitycenter.microsoft.us"
    assert config.endpoints.authority_host == "https://login.example.org"
    assert config.endpoints.scope == "https://custom/.default"
    assert config.disable_instance_discovery is True  # unknown authority
    assert config.rate_limits == (Window(10, 1.0), Window(50, 5.0))
    assert (config.rate_limit_margin_seconds, config.rate_limit_share) == (0.05, 0.5)
    assert (config.connect_timeout, config.read_timeout, config.retry_total) == (3.0, 30.0, 2)
    assert config.ca_bundle == ("/ca.pem",)


def test_timeout_forms():
    assert (parse(timeout=5).connect_timeout, parse(timeout=5).read_timeout) == (5.0, 5.0)
    config = parse(timeout={"read": 90})
    assert (config.connect_timeout, config.read_timeout) == (10.0, 90.0)
    assert parse(connect_timeout=2).connect_timeout == 2.0


def test_rate_limits_as_json_text():
    assert parse(rate_limits="[[5, 1]]").rate_limits == (Window(5, 1.0),)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tenant_id": None}, "tenant_id is required"),
        ({"login": None}, "login"),
        ({"password": None}, "password"),
        ({"cloud": "moon"}, "unknown cloud"),
        ({"host": "http://api.security.microsoft.com"}, "https"),
        ({"rate_limits": [[0, 60]]}, "rate_limits"),
        ({"rate_limits": "nope"}, "rate_limits"),
        ({"rate_limit_share": 0}, "rate_limit_share"),
        ({"rate_limit_share": 2}, "rate_limit_share"),
        ({"scheduled_reserve_share": 1}, "scheduled_reserve_share"),
        ({"scheduled_reserve_share": -0.1}, "scheduled_reserve_share"),
        ({"timeout": "fast"}, "timeout"),
        ({"retry_total": 1.5}, "retry_total"),
        ({"retry_total": -1}, "retry_total"),
        ({"use_managed_identity": "maybe"}, "use_managed_identity"),
        ({"use_managed_identity": True}, "choose one way"),
        ({"certificate_path": "/c.pem"}, "choose one way"),
        ({"verify": False}, "cannot be turned off"),
        ({"rate_limit_ledger": "redis"}, "rate_limit_ledger"),
        ({"ca_bundle": 5}, "ca_bundle"),
    ],
)
def test_bad_connections_get_a_clear_error_naming_the_connection(kwargs, message):
    args = {"host": "https://api.security.microsoft.com", "login": "cid", "password": "secret-value"}
    extra = {"tenant_id": "t1"}
    for key, value in kwargs.items():
        if key in args:
            args[key] = value
        elif value is None:
            extra.pop(key, None)
        else:
            extra[key] = value
    with pytest.raises(MdeConfigurationError, match=message) as info:
        MdeConnectionConfig.from_parts(**args, extra=extra, conn_id="mde_default")
    assert "mde_default" in str(info.value)
    assert "secret-value" not in str(info.value)


def test_invalid_extra_json_is_a_clear_error():
    with pytest.raises(MdeConfigurationError, match="not valid JSON"):
        MdeConnectionConfig.from_parts(host=None, login="a", password="b", extra="{tenant_id: 1")


def test_unknown_extra_keys_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="mde_pipeline.api.config"):
        parse(tenant="typo")
    assert "tenant" in caplog.text


def test_managed_identity_needs_no_login_or_password():
    config = parse(login=None, password=None, use_managed_identity=True)
    assert config.auth_method == "managed_identity"
    assert config.client_secret is None
    assert config.budget_key == "t1:system-assigned-identity"


def test_certificate_without_password_field():
    config = parse(password=None, certificate_path="/c.pem")
    assert config.auth_method == "certificate"
    with pytest.raises(MdeConfigurationError, match="not both"):
        parse(password=None, certificate_path="/c.pem", certificate_data="-----BEGIN")


def test_a_redis_ledger_url_is_accepted_and_its_password_kept_secret():
    config = parse(rate_limit_ledger="rediss://:s3cret-pw@redis.internal:6380/2")
    assert config.rate_limit_ledger == "rediss://:s3cret-pw@redis.internal:6380/2"
    assert "s3cret-pw" in config.secrets() and "s3cret-pw" not in repr(config)


@pytest.mark.parametrize("value", ["memory", "redis", "postgres://db/x", "redis://"])
def test_other_ledgers_are_refused_without_echoing_a_password(value):
    with pytest.raises(MdeConfigurationError, match="rate_limit_ledger"):
        parse(rate_limit_ledger=value)
