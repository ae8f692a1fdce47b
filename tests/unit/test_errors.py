"""Typed errors from HTTP answers: classes, permission names, correlation ids, no secrets."""

from __future__ import annotations

import json
import pickle

import pytest

from mde_pipeline.api.errors import (
    MdeApiError,
    MdeAuthenticationError,
    MdeBadRequestError,
    MdeNotFoundError,
    MdePermissionError,
    MdeServerError,
    MdeThrottledError,
    aadsts_code,
    error_from_response,
    redact,
    safe_url,
)

BASE = "https://api.security.microsoft.com"
TARGET = "5b9c3f0e-1d2a-4b8c-9e7f-0a1b2c3d4e5f"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJlLWJ5dGVz"


def body(code, message, target=TARGET):
    return json.dumps({"error": {"code": code, "message": message, "target": target}}).encode()


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, MdeBadRequestError),
        (401, MdeAuthenticationError),
        (403, MdePermissionError),
        (404, MdeNotFoundError),
        (429, MdeThrottledError),
        (408, MdeServerError),
        (500, MdeServerError),
        (503, MdeServerError),
        (418, MdeApiError),
    ],
)
def test_status_maps_to_class_and_keeps_target(status, cls):
    error = error_from_response(status, body("Code", "something"), f"{BASE}/api/alerts")
    assert type(error) is cls
    assert error.status == status
    assert error.code == "Code"
    assert error.target == TARGET
    assert TARGET in str(error)


def test_403_on_ips_names_ip_read_all_and_on_alerts_alert_read_all():
    ips = error_from_response(403, body("Forbidden", "no"), f"{BASE}/api/alerts/da1_2/ips")
    assert ips.permission == "Ip.Read.All"
    assert "Ip.Read.All" in str(ips)
    alerts = error_from_response(403, body("Forbidden", "no"), f"{BASE}/api/alerts?$top=1")
    assert alerts.permission == "Alert.Read.All"
    assert "Alert.Read.All" in str(alerts)


def test_429_carries_retry_after():
    error = error_from_response(429, body("429", "API calls quota exceeded!"), f"{BASE}/api/alerts", retry_after=42)
    assert error.retry_after == 42
    assert "42" in str(error)


def test_non_json_error_body_still_gives_a_typed_error():
    error = error_from_response(502, b"<html>Bad gateway</html>", f"{BASE}/api/alerts")
    assert isinstance(error, MdeServerError)
    assert error.code is None and error.target is None


def test_secrets_tokens_and_query_strings_never_reach_the_error():
    secret = "s3cr3t-value-123"
    message = f"echo: secret={secret} Authorization: Bearer {JWT} token {JWT}"
    error = error_from_response(
        401, body("InvalidToken", message), f"{BASE}/api/alerts?$top=1&code={secret}", secrets=[secret]
    )
    for text in (str(error), repr(error), error.request_url, error.message):
        assert secret not in text
        assert JWT not in text
    assert "$top=1" in error.request_url


def test_errors_survive_pickling_with_their_fields():
    error = error_from_response(429, body("429", "slow down"), f"{BASE}/api/alerts/x/ips", retry_after=7.5)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is MdeThrottledError
    assert (copy.status, copy.target, copy.retry_after, copy.request_url) == (429, TARGET, 7.5, error.request_url)
    permission = pickle.loads(pickle.dumps(error_from_response(403, b"", f"{BASE}/api/alerts/x/ips")))
    assert permission.permission == "Ip.Read.All"


def test_long_service_messages_are_trimmed():
    error = error_from_response(400, body("BadRequest", "x" * 5000), f"{BASE}/api/alerts")
    assert len(str(error)) < 1000


def test_helpers():
    assert aadsts_code("Authentication failed: AADSTS7000215: Invalid client secret") == "AADSTS7000215"
    assert aadsts_code("nothing") is None
    assert safe_url("https://u:p@h:1/p?$filter=a eq 1&sig=zz") == "https://h:1/p?$filter=a eq 1"
    assert redact("Bearer abc.def", []) == "Bearer ***"
    assert redact("", ["x"]) == ""
