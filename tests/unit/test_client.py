"""MdeClient over azure-core's real RequestsTransport with a scripted adapter and a fake
clock: retries, throttling budget, limiter on every attempt, strict parsing, error
classes, id safety, secrets kept out of errors and logs."""

from __future__ import annotations

import io
import logging
import pickle

import pytest
import requests

from mde_pipeline.api.client import validate_alert_id
from mde_pipeline.api.errors import (
    MdeConfigurationError,
    MdeTrustError,
    InvalidAlertIdError,
    MdeApiError,
    MdeAuthenticationError,
    MdeBadRequestError,
    MdeMalformedResponseError,
    MdeNotFoundError,
    MdePermissionError,
    MdeServerError,
    MdeThrottledError,
)
from tests.support.api_fakes import FakeClock, InMemoryLedger

IPS = {"@odata.context": "https://x/$metadata#Ips", "value": [{"id": "104.80.104.128"}, {"id": "2001:DB8::1"}]}
ALERT_ID = "da637984756812345678_-1234567890"
OK = (200, {"Content-Type": "application/json"}, IPS)


def throttled(seconds, body=b'{"error": {"code": "429", "message": "API calls quota exceeded!"}}'):
    return (429, {"Retry-After": str(seconds)}, body)


# ------------------------------------------------------------------ happy paths


def test_get_alert_ips_returns_the_raw_id_strings_with_a_bearer_token(mde_scripted):
    api = mde_scripted()
    api.script(OK)
    assert api.client.get_alert_ips(ALERT_ID) == ["104.80.104.128", "2001:DB8::1"]
    assert api.urls == [f"https://mde.unit.test/api/alerts/{ALERT_ID}/ips"]
    assert api.auth_headers == [f"Bearer {api.credential.tokens[0]}"]
    request = api.adapter.requests[0]
    assert request.headers["User-Agent"].startswith("mde-alert-ips-airflow/")
    assert api.client.stats.snapshot().calls == 1


def test_empty_value_is_an_empty_list_and_404_is_none(mde_scripted, mde_error_body):
    api = mde_scripted()
    api.script((200, {}, {"value": []}), (404, {}, mde_error_body("ResourceNotFound", "Alert not found")))
    assert api.client.get_alert_ips(ALERT_ID) == []
    assert api.client.get_alert_ips(ALERT_ID) is None


def test_list_alerts_page_builds_the_odata_query(mde_scripted):
    api = mde_scripted()
    page = {"value": [{"id": "a1", "lastUpdateTime": "2024-01-01T00:00:00.1234567Z"}]}
    api.script((200, {}, page), (200, {}, page))
    flt = "lastUpdateTime ge 2024-01-01T00:00:00Z and lastUpdateTime lt 2024-01-01T01:00:00Z"
    assert api.client.list_alerts_page(filter=flt, top=10000, skip=20, expand="evidence") == page
    api.client.list_alerts_page(filter=None, top=5, orderby=None)
    first, second = api.urls
    assert first == (
        "https://mde.unit.test/api/alerts?$filter=lastUpdateTime%20ge%202024-01-01T00:00:00Z%20and%20"
        "lastUpdateTime%20lt%202024-01-01T01:00:00Z&$orderby=lastUpdateTime%20asc&$top=10000&$skip=20"
        "&$expand=evidence"
    )
    assert second == "https://mde.unit.test/api/alerts?$top=5"


@pytest.mark.parametrize("top, skip", [(0, 0), (10001, 0), (True, 0), (10, -1), ("10", 0)])
def test_list_alerts_page_refuses_bad_paging_arguments(mde_scripted, top, skip):
    with pytest.raises(ValueError):
        mde_scripted().client.list_alerts_page(filter=None, top=top, skip=skip)


def test_next_link_is_followed_only_on_the_api_host(mde_scripted):
    api = mde_scripted()
    api.script((200, {}, {"value": []}))
    assert api.client.get_next_link("https://mde.unit.test/api/alerts?$skiptoken=abc") == {"value": []}
    for bad in (
        "https://evil.example/api/alerts?$skip=10",
        "http://mde.unit.test/api/alerts",
        "https://mde.unit.test:444/api/alerts",
        "https://mde.unit.test/other",
        42,
    ):
        with pytest.raises(MdeMalformedResponseError):
            api.client.get_next_link(bad)
    assert len(api.urls) == 1  # nothing sent (and no token) to the other places


# ------------------------------------------------------------------ alert ids


@pytest.mark.parametrize(
    "bad",
    ["../machines", "a/b", "a\\b", "..", ".", "a..b", "", "x" * 129, "id\n", "id%2F", "a?b", "a#b", " a", None, 7],
)
def test_alert_ids_that_could_change_the_path_are_refused_before_any_call(mde_scripted, bad):
    api = mde_scripted()
    with pytest.raises(InvalidAlertIdError):
        api.client.get_alert_ips(bad)
    assert api.urls == []


def test_real_alert_id_shapes_are_accepted():
    for good in ("da637984756812345678_-1234567890", "636688558380765161_2136280442", "ed1-2.x"):
        assert validate_alert_id(good) == good


# ------------------------------------------------------------------ strict parsing


@pytest.mark.parametrize(
    "body",
    [
        b'{"value": [{"id": "104.80.104.128"}, {"id": "23.203.232.228 }]}',  # the seed's own example
        b"",
        b"<html>ok</html>",
        b'{"value": NaN}',
        b'{"values": []}',
        b'{"value": {"id": "1.2.3.4"}}',
        b'[{"id": "1.2.3.4"}]',
        b'{"value": ["1.2.3.4"]}',
        b'{"value": [{"ip": "1.2.3.4"}]}',
        b'{"value": [{"id": 16909060}]}',
        b'{"value": [{"id": null}]}',
        b"\xff\xfe",
    ],
)
def test_ips_bodies_that_are_not_the_documented_json_are_errors(mde_scripted, body):
    api = mde_scripted()
    api.script((200, {"Content-Type": "application/json"}, body))
    with pytest.raises(MdeMalformedResponseError) as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.request_url.endswith("/ips")


@pytest.mark.parametrize(
    "body",
    [b'{"value": [1, 2]}', b'{"value": null}', b'{"value": [], "@odata.nextLink": 5}', b"not json", b"{}"],
)
def test_alert_pages_that_are_not_the_documented_json_are_errors(mde_scripted, body):
    api = mde_scripted()
    api.script((200, {}, body))
    with pytest.raises(MdeMalformedResponseError):
        api.client.list_alerts_page(filter=None, top=1)


def test_bodies_over_the_cap_are_malformed_responses(mde_scripted):
    from mde_pipeline.api.client import MAX_IPS_BYTES

    big = b'{"value": [' + b'{"id": "1.2.3.4"},' * (MAX_IPS_BYTES // 17) + b'{"id": "1.2.3.4"}]}'
    api = mde_scripted()
    api.script((200, {"Content-Type": "application/json"}, big))
    with pytest.raises(MdeMalformedResponseError, match="over the 1048576-byte cap"):
        api.client.get_alert_ips(ALERT_ID)


class EndlessBody(io.RawIOBase):
    """A body that never ends (no Content-Length): it counts what was read from it."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        buffer[:] = b"x" * len(buffer)
        self.served += len(buffer)
        return len(buffer)


def test_a_body_over_the_stream_cap_stops_being_read_and_is_not_retried(mde_scripted, monkeypatch):
    # The cap applies while the body streams in: an endless or huge answer never fills memory.
    import mde_pipeline.api.client as client_module

    monkeypatch.setattr(client_module, "MAX_PAGE_BYTES", 64 * 1024)
    body = EndlessBody()
    api = mde_scripted(retry_total=3)
    api.script((200, {"Content-Type": "application/json"}, body))
    with pytest.raises(MdeMalformedResponseError, match="over the 65536-byte cap"):
        api.client.list_alerts_page(filter=None, top=1)
    assert body.served < 4 * 64 * 1024 and len(api.urls) == 1
    api.script((200, {"Content-Length": str(10**9)}, b"{}"))
    with pytest.raises(MdeMalformedResponseError, match="1000000000 bytes is over"):
        api.client.list_alerts_page(filter=None, top=1)


def test_page_cap_is_checked_before_parsing():
    from mde_pipeline.api.client import MAX_PAGE_BYTES, parse_json_body

    assert MAX_PAGE_BYTES == 64 * 1024 * 1024
    with pytest.raises(MdeMalformedResponseError, match="over the 10-byte cap"):
        parse_json_body(b'{"value": []}', "https://x/api/alerts", 10)


def test_deeply_nested_json_is_a_malformed_response_not_a_recursion_error(mde_scripted):
    api = mde_scripted()
    api.script((200, {}, b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
    with pytest.raises(MdeMalformedResponseError, match="nested too deeply"):
        api.client.list_alerts_page(filter=None, top=1)


# ------------------------------------------------------------------ error classes


@pytest.mark.parametrize(
    "status, cls",
    [(400, MdeBadRequestError), (403, MdePermissionError), (404, MdeNotFoundError), (418, MdeApiError)],
)
def test_client_errors_are_typed_keep_the_target_and_are_not_retried(mde_scripted, mde_error_body, status, cls):
    api = mde_scripted()
    api.script((status, {"Retry-After": "1"}, mde_error_body("Code", "nope")))
    with pytest.raises(cls) as info:
        api.client.list_alerts_page(filter=None, top=1)
    assert info.value.target == "0c8f7d6e-5b4a-4392-8170-6f5e4d3c2b1a"
    assert info.value.status == status
    assert len(api.urls) == 1


def test_403_on_ips_names_the_missing_permission(mde_scripted, mde_error_body):
    api = mde_scripted()
    api.script((403, {}, mde_error_body("Forbidden", "The application does not have any of the required roles")))
    with pytest.raises(MdePermissionError, match="Ip.Read.All") as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.permission == "Ip.Read.All"


def test_401_gets_one_resend_with_a_fresh_token_then_succeeds(mde_scripted, mde_error_body):
    api = mde_scripted()
    api.script((401, {}, mde_error_body("Unauthorized", "token expired")), OK)
    fresh = type(api.credential)()
    api.client._auth_policy._fresh_credential = lambda: fresh
    assert api.client.get_alert_ips(ALERT_ID) == ["104.80.104.128", "2001:DB8::1"]
    assert api.auth_headers == [f"Bearer {api.credential.tokens[0]}", f"Bearer {fresh.tokens[0]}"]
    assert api.credential.closed  # the stale credential is released
    assert api.client.stats.snapshot().calls == 2  # the re-send spent a slot too


def test_401_after_a_fresh_token_is_an_authentication_error(mde_scripted, mde_error_body):
    api = mde_scripted()
    api.script(*[(401, {}, mde_error_body("Unauthorized", "invalid token"))] * 2)
    api.client._auth_policy._fresh_credential = lambda: type(api.credential)()
    with pytest.raises(MdeAuthenticationError) as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.status == 401
    assert len(api.urls) == 2


def test_5xx_is_retried_with_backoff_on_the_clock_then_succeeds(mde_scripted, mde_error_body):
    api = mde_scripted(retry_backoff_factor=0.5)
    api.script(
        (500, {}, mde_error_body("InternalError", "boom")),
        (503, {}, b"unavailable"),
        (502, {}, b"bad gateway"),
        OK,
    )
    assert api.client.get_alert_ips(ALERT_ID) is not None
    # azure-core: no sleep before the first retry, then factor * 2 ** (n - 1)
    assert api.clock.sleeps == [pytest.approx(1.0), pytest.approx(2.0)]
    stats = api.client.stats.snapshot()
    assert (stats.calls, stats.retries, stats.throttled) == (4, 3, 0)
    assert stats.wait_seconds == pytest.approx(3.0)


def test_persistent_5xx_stops_after_retry_total_and_keeps_the_target(mde_scripted, mde_error_body):
    api = mde_scripted(retry_total=2, retry_backoff_factor=0.01)
    api.script(*[(500, {}, mde_error_body("InternalError", "boom"))] * 3)
    with pytest.raises(MdeServerError) as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.target == "0c8f7d6e-5b4a-4392-8170-6f5e4d3c2b1a"
    assert len(api.urls) == 3  # first try + retry_total retries


def test_a_503_retry_after_is_honoured_on_the_clock(mde_scripted):
    api = mde_scripted()
    api.script((503, {"Retry-After": "7"}, b""), OK)
    api.client.get_alert_ips(ALERT_ID)
    assert api.clock.sleeps == [7.0]


@pytest.mark.parametrize(
    "failure, message",
    [
        (requests.exceptions.ReadTimeout("read timed out"), "timed out"),
        (requests.exceptions.ConnectTimeout("connect timed out"), "timed out"),
        (requests.exceptions.ConnectionError("refused"), "could not connect"),
    ],
)
def test_network_failures_are_retried_then_become_server_errors(mde_scripted, failure, message):
    api = mde_scripted(retry_total=1, retry_backoff_factor=0)
    api.script(failure, failure)
    with pytest.raises(MdeServerError, match=message):
        api.client.get_alert_ips(ALERT_ID)
    assert len(api.urls) == 2


def test_an_untrusted_certificate_is_a_configuration_error_sent_once(mde_scripted, mde_cert_pem, monkeypatch, tmp_path):
    # Only a configuration change can fix trust: no retry, a message naming the bundle.
    ca = tmp_path / "corp-ca.pem"
    ca.write_bytes(mde_cert_pem("corp-ca")[0])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    api = mde_scripted(retry_total=3, retry_backoff_factor=0)
    failure = requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")
    api.script(failure, failure, failure, failure)
    with pytest.raises(MdeTrustError, match=f"REQUESTS_CA_BUNDLE={ca}") as caught:
        api.client.get_alert_ips(ALERT_ID)
    assert isinstance(caught.value, MdeConfigurationError)
    assert len(api.urls) == 1


def test_a_dropped_connection_is_retried_and_then_succeeds(mde_scripted):
    import urllib3.exceptions

    api = mde_scripted()
    dropped = requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted."))
    api.script(dropped, OK)
    assert api.client.get_alert_ips(ALERT_ID) == ["104.80.104.128", "2001:DB8::1"]
    assert api.client.stats.snapshot().retries == 1


# ------------------------------------------------------------------ throttling


def test_429_is_waited_out_through_the_ledger_and_not_counted_as_a_retry_failure(mde_scripted):
    api = mde_scripted(retry_total=0, rate_limit_margin_seconds=0.0)
    api.script(throttled(30), throttled(30), throttled(3600), OK)
    assert api.client.get_alert_ips(ALERT_ID) is not None
    # Each wait happened in the limiter (blocked_until), on the fake clock.
    assert api.clock.sleeps == [pytest.approx(30.0), pytest.approx(30.0), pytest.approx(3600.0)]
    stats = api.client.stats.snapshot()
    assert (stats.calls, stats.throttled, stats.retries) == (4, 3, 3)
    assert stats.wait_seconds == pytest.approx(3660.0)


def test_429_beyond_max_throttle_wait_is_a_throttled_error_with_retry_after(mde_scripted, mde_error_body):
    api = mde_scripted(max_throttle_wait_seconds=100)
    api.script(throttled(60), (429, {"Retry-After": "60"}, mde_error_body("429", "quota exceeded")))
    with pytest.raises(MdeThrottledError) as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.retry_after == 60.0
    assert info.value.target == "0c8f7d6e-5b4a-4392-8170-6f5e4d3c2b1a"
    assert len(api.urls) == 2


def test_a_block_recorded_by_another_client_is_waited_out_before_the_first_attempt(mde_scripted):
    ledger, clock = InMemoryLedger(), FakeClock(start=0.0)
    first = mde_scripted(ledger=ledger, clock=clock, rate_limit_margin_seconds=0.0)
    second = mde_scripted(ledger=ledger, clock=clock, rate_limit_margin_seconds=0.0)
    first.script(throttled(45), OK)
    second.script(OK)
    first.client.get_alert_ips(ALERT_ID)
    assert clock.now() == pytest.approx(45.0)
    clock.advance(-40.0)  # pretend the second client starts 5 s after the 429
    second.client.get_alert_ips(ALERT_ID)
    assert clock.sleeps[-1] == pytest.approx(40.0)


def test_a_block_longer_than_the_budget_fails_fast_without_calling(mde_scripted):
    ledger, clock = InMemoryLedger(), FakeClock(start=0.0)
    api = mde_scripted(ledger=ledger, clock=clock, max_throttle_wait_seconds=120)
    api.client.limiter.record_throttle(3600)
    with pytest.raises(MdeThrottledError) as info:
        api.client.get_alert_ips(ALERT_ID)
    assert info.value.request_url.endswith("/ips")
    assert api.urls == []


class RecordingLedger(InMemoryLedger):
    """Keeps every granted reservation (the real ledger prunes old ones)."""

    def __init__(self):
        super().__init__()
        self.granted = []

    def reserve(self, key, now, windows, background=None):
        decision = super().reserve(key, now, windows, background)
        if decision.wait_seconds <= 0:
            self.granted.append(now)
        return decision


def test_every_attempt_including_retries_goes_through_the_limiter(mde_scripted, mde_error_body):
    # 2 calls per 10 s: the first try and its first retry fit, the second retry must wait.
    ledger, clock = RecordingLedger(), FakeClock(start=0.0)
    api = mde_scripted(ledger=ledger, clock=clock, rate_limits=[[2, 10]], rate_limit_margin_seconds=0.0,
                       retry_backoff_factor=0)  # fmt: skip
    api.script((500, {}, b""), (500, {}, b""), OK)
    api.client.get_alert_ips(ALERT_ID)
    assert clock.sleeps == [pytest.approx(10.0)]
    assert ledger.granted == [0.0, 0.0, pytest.approx(10.0)]


def test_calls_are_paced_to_the_window(mde_scripted):
    ledger, clock = RecordingLedger(), FakeClock(start=0.0)
    api = mde_scripted(ledger=ledger, clock=clock, rate_limits=[[3, 60]], rate_limit_margin_seconds=1.0)
    api.script(*[OK] * 7)
    for _ in range(7):
        api.client.get_alert_ips(ALERT_ID)
    assert ledger.granted == pytest.approx([0, 0, 0, 61, 61, 61, 122])
    assert api.client.stats.snapshot().wait_seconds == pytest.approx(61 * 2)


# ------------------------------------------------------------------ secrets


def test_no_secret_or_token_in_errors_or_logs(mde_scripted, mde_error_body, caplog):
    caplog.set_level(logging.DEBUG)
    api = mde_scripted()
    secret = api.client.config.client_secret
    echo = f"you sent secret {secret} and Authorization: Bearer TOKEN"
    api.script(
        (500, {}, b"x"),
        lambda request: (400, {}, mde_error_body("BadRequest", echo.replace("TOKEN", request.headers["Authorization"][7:]))),
    )
    with pytest.raises(MdeBadRequestError) as info:
        api.client.get_alert_ips(ALERT_ID)
    token = api.credential.tokens[0]
    texts = [str(info.value), repr(info.value), caplog.text, str(pickle.loads(pickle.dumps(info.value)))]
    for text in texts:
        assert secret not in text
        assert token not in text
        assert token[-20:] not in text
    assert "secret ***" in str(info.value)


def test_config_repr_has_no_secrets(mde_make_config, mde_cert_pem):
    cert, key = mde_cert_pem("c", password=b"pw-secret-999")
    config = mde_make_config(password=None, certificate_data=(key + cert).decode(), certificate_password="pw-secret-999")
    text = repr(config) + str(config)
    assert "pw-secret-999" not in text and "PRIVATE KEY" not in text
    secret_config = mde_make_config()
    assert secret_config.client_secret not in repr(secret_config)


def test_stats_are_a_plain_dataclass_for_logs_and_xcom(mde_scripted):
    import dataclasses

    api = mde_scripted()
    api.script(OK, throttled(5), OK)
    api.client.get_alert_ips(ALERT_ID)
    api.client.get_alert_ips(ALERT_ID)
    stats = dataclasses.asdict(api.client.stats)
    assert stats == {"calls": 3, "throttled": 1, "retries": 1, "wait_seconds": pytest.approx(5.05)}


def test_half_a_surrogate_pair_becomes_a_replacement_character_not_an_error(mde_scripted):
    # Valid JSON ("\ud800"), but text no UTF-8 writer stores: one odd value never blocks an hour.
    api = mde_scripted()
    api.script((200, {"Content-Type": "application/json"}, b'{"value": [{"id": "10.0.0.1"}, {"id": "x\\ud800y"}]}'))
    values = api.client.get_alert_ips(ALERT_ID)
    assert values[0] == "10.0.0.1" and values[1].startswith("x\ufffd") and values[1].endswith("y")
    "".join(values).encode("utf-8")
