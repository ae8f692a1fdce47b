"""A Redis ledger URL whose password holds '/', '#', '?', '@', ':' or '%' (encoded or not):
parsed by the last '@' everywhere, and no piece of the password in log records, exception
text, the status JSON or the /mde page."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
import redis

from mde_pipeline.airflow.status.page import render_page
from mde_pipeline.airflow.status.report import build_status
from mde_pipeline.airflow.tenants import DEFAULT_TENANT_DAG
from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.api.ledger_backends import safe_ledger_display
from mde_pipeline.api.redis_url import parse_redis_url
from mde_pipeline.common.redaction import redact
from mde_pipeline.lake.lake_status import LakeStatusCache
from mde_pipeline.lake.location import resolve_lake_location

SPECIALS = "/#?@:%"
# Fragments no message holds by chance; '%' is never followed by two hex digits here.
PLAIN = {c: f"Qx7{c}Wz9{c}{c}Kp3Rv{c}Lm5Tt" for c in SPECIALS}
PLAIN["all"] = "Qx7/Wz9#Kp3?Lm5@Rt8:Vy2%Hn4"
CASES = [(name, encoded) for name in PLAIN for encoded in (False, True)]


def fragments(password: str) -> list[str]:
    return [part for part in re.split(r"[/#?@:%]", password) if len(part) >= 3]


def url_with(password: str, encoded: bool, host: str = "redis.example", port: int = 6379) -> str:
    written = quote(password, safe="") if encoded else password
    return f"redis://:{written}@{host}:{port}/2"


def assert_clean(text: str, password: str) -> None:
    leaked = [part for part in fragments(password) if part in text]
    assert not leaked, f"password pieces {leaked} in {text!r}"
    assert quote(password, safe="") not in text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


@pytest.mark.parametrize("name,encoded", CASES)
def test_the_url_is_parsed_by_the_last_at_and_redis_py_gets_it_whole(name, encoded):
    password = PLAIN[name]
    parsed = parse_redis_url(url_with(password, encoded))
    assert (parsed.host, parsed.port, parsed.path, parsed.password) == ("redis.example", 6379, "/2", password)
    # What redis-py is handed parses back to the same host, port, db and password.
    kwargs = redis.connection.parse_url(parsed.normalised)
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("redis.example", 6379, 2, password)
    assert parsed.display == "redis://***@redis.example:6379/2"
    assert_clean(parsed.display + repr(parsed), password)
    assert redact(f"x {url_with(password, encoded)} y", parsed.secrets()).count("***") == 1


@pytest.mark.parametrize("name,encoded", CASES)
def test_a_bad_url_names_setting_host_and_port_only(name, encoded, caplog):
    password = PLAIN[name]
    caplog.set_level(logging.DEBUG)
    for url, shown in ((url_with(password, encoded).replace(":6379", ":63x9"), "redis.example:63x9"),
                       (f"rediss://:{password}@/0", "rediss://")):
        with pytest.raises(MdeConfigurationError) as info:
            MdeConnectionConfig.from_parts(host="https://mde.test", login="c", password="client-secret-x",
                                           extra={"tenant_id": "t", "rate_limit_ledger": url})  # fmt: skip
        message = str(info.value)
        assert "rate_limit_ledger" in message and shown in message
        assert_clean(message + repr(info.value), password)
    assert_clean(caplog.text, password)


class StaticCredential:
    """The token is not what these tests are about: the ledger URL is."""

    def get_token_info(self, *scopes, options=None):
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("static-token", int(time.time()) + 3600)

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("static-token", int(time.time()) + 3600)


@pytest.mark.parametrize("name,encoded", CASES)
def test_no_piece_of_the_password_in_logs_errors_status_json_or_page(name, encoded, tmp_path, monkeypatch, caplog):
    password = PLAIN[name]
    caplog.set_level(logging.DEBUG)
    url = url_with(password, encoded, host="127.0.0.1", port=closed_port())
    config = MdeConnectionConfig.from_parts(host="https://127.0.0.1:9", login="c", password="client-secret-x",
                                            extra={"tenant_id": "t", "rate_limit_ledger": url, "retry_total": 0})
    assert_clean(repr(config), password)
    # A task: the ledger's Redis refuses the connection (host and port read right).
    with MdeClient(config, credential=StaticCredential()) as client:
        with pytest.raises(redis.exceptions.ConnectionError) as info:
            client.list_alerts_page(filter=None, top=1)
    assert "127.0.0.1" in str(info.value)
    assert_clean(str(info.value) + repr(info.value), password)
    # The operator's view: the same Redis, an error line; the page shows it.
    status, page = _status_and_page(monkeypatch, tmp_path, url)
    assert any(line.startswith("budget ledger (Redis)") and "127.0.0.1" in line for line in status["errors"])
    assert_clean(json.dumps(status), password)
    assert_clean(page, password)
    assert safe_ledger_display(url) in page or status["tenants"][0]["budget"] is None
    assert_clean(caplog.text, password)


def _status_and_page(monkeypatch, tmp_path, url: str) -> tuple[dict, str]:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", json.dumps({
        "conn_type": "http", "host": "https://127.0.0.1:9", "login": "status-client", "password": "client-secret-x",
        "extra": {"tenant_id": "status-tenant", "rate_limit_ledger": url},
    }))  # fmt: skip
    (tmp_path / "lake").mkdir(exist_ok=True)
    status = build_status(now=datetime(2026, 3, 10, 14, tzinfo=timezone.utc), tenants=[DEFAULT_TENANT_DAG],
                          location=resolve_lake_location(tmp_path / "lake"), backfills=lambda dag_id: [],
                          cache=LakeStatusCache())  # fmt: skip
    return status, render_page(status, "/mde")


@pytest.mark.slow
def test_a_real_redis_whose_password_holds_every_special_character(tmp_path, monkeypatch, caplog):
    from local_redis import RedisServer

    from mde_pipeline.api.ledger_backends import open_ledger
    from mde_pipeline.api.windows import Window

    password = PLAIN["all"]
    caplog.set_level(logging.DEBUG)
    with RedisServer(tmp_path / "redis", password=password) as server:
        assert password in server.url  # unencoded, as an operator pastes it
        ledger = open_ledger(server.url)
        try:
            assert ledger.reserve("status-tenant:status-client", time.time(), [Window(100, 60.0)]).entry is not None
        finally:
            ledger.close()
        status, page = _status_and_page(monkeypatch, tmp_path, server.url)
    assert status["errors"] == []
    budget = status["tenants"][0]["budget"]
    assert budget["ledger_path"] == f"redis://***@127.0.0.1:{server.port}/0"
    assert budget["windows"][0]["calls"] == 1
    for text in (json.dumps(status), page, caplog.text):
        assert_clean(text, password)
