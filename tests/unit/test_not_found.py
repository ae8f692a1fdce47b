"""An honest 404 (issue 12): only the service's own error JSON means "alert gone"; a
proxy's HTML page, an empty body or other JSON is an error (retried within retry_total
first), and a batch in which most alerts are "not found" fails naming the API host."""

from __future__ import annotations

import pytest

from mde_pipeline.api.errors import (
    MdeMostlyNotFoundError,
    MdeNotFoundError,
    MdeServerError,
    MdeUnexpectedNotFoundError,
    is_service_error,
)
from mde_pipeline.api.fetch import MAX_NOT_FOUND_SHARE, NOT_FOUND_MIN_BATCH, fetch_batch_ips

ALERT_ID = "da637984756812345678_-1234567890"
OK = (200, {"Content-Type": "application/json"}, {"value": [{"id": "10.0.0.1"}]})
JSON = {"Content-Type": "application/json; charset=utf-8"}
HTML_PAGE = b"<html><head><title>404 Not Found</title></head><body><center>nginx</center></body></html>"
PROXY_404 = (404, {"Content-Type": "text/html"}, HTML_PAGE)


def service_404(code="ResourceNotFound"):
    return (404, JSON, {"error": {"code": code, "message": "Alert not found", "target": "t-1"}})


@pytest.mark.parametrize("code", ["ResourceNotFound", "NotFound", "AnythingTheServiceSays"])
def test_the_services_own_404_means_the_alert_is_gone(mde_scripted, code):
    api = mde_scripted()
    api.script(service_404(code))
    assert api.client.get_alert_ips(ALERT_ID) is None
    assert len(api.urls) == 1  # not retried


@pytest.mark.parametrize(
    "answer",
    [
        PROXY_404,
        (404, {}, b""),
        (404, JSON, b""),
        (404, JSON, {"message": "Not Found"}),  # JSON, but not the service's error shape
        (404, JSON, {"error": "not found"}),
        (404, JSON, {"error": {"message": "no code"}}),
        (404, {"Content-Type": "text/html"}, {"error": {"code": "NotFound", "message": "x"}}),
        (404, {"Content-Type": "text/plain"}, b"Not Found"),
    ],
)
def test_any_other_404_is_an_error_naming_the_host_after_bounded_retries(mde_scripted, answer):
    api = mde_scripted(retry_total=2, retry_backoff_factor=0.5)
    api.script(*[answer] * 3)
    with pytest.raises(MdeUnexpectedNotFoundError, match="mde.unit.test answered 404") as info:
        api.client.get_alert_ips(ALERT_ID)
    assert isinstance(info.value, MdeServerError) and not isinstance(info.value, MdeNotFoundError)
    assert info.value.status == 404
    assert len(api.urls) == 3  # first try + retry_total retries, then an error: never "gone"
    assert api.clock.sleeps == [pytest.approx(1.0)]


def test_a_proxy_hiccup_404_is_retried_and_the_answer_is_kept(mde_scripted):
    api = mde_scripted()
    api.script(PROXY_404, OK)
    assert api.client.get_alert_ips(ALERT_ID) == ["10.0.0.1"]
    assert len(api.urls) == 2


def test_a_foreign_404_on_the_listing_is_the_same_error(mde_scripted):
    api = mde_scripted(retry_total=0)
    api.script(PROXY_404)
    with pytest.raises(MdeUnexpectedNotFoundError):
        api.client.list_alerts_page(filter=None, top=1)


def test_is_service_error_accepts_the_json_error_shape_only():
    body = b'{"error": {"code": "NotFound", "message": "x"}}'
    assert is_service_error("application/json", body)
    assert is_service_error("application/problem+json", body)
    assert is_service_error(None, body)  # no content type: the body decides
    assert not is_service_error("text/html; charset=utf-8", body)
    assert not is_service_error("application/json", b'{"error": {"code": "", "message": "x"}}')
    assert not is_service_error("application/json", b"\xff")


# ------------------------------------------------------------------ the batch check


def batch(count: int) -> dict:
    entries = [{"alert_id": f"alert-{i}", "last_update_time": "2024-03-10T13:00:00Z"} for i in range(count)]
    return {"batch_index": 1, "batch_count": 1, "alerts": entries}


def test_a_batch_mostly_not_found_fails_naming_the_host_before_spending_the_rest(mde_scripted):
    # 10 alerts, 6 gone: the 6th "not found" passes half, so the 4 left are never called.
    assert (NOT_FOUND_MIN_BATCH, MAX_NOT_FOUND_SHARE) == (10, 0.5)
    api = mde_scripted()
    api.script(OK, *[service_404()] * 6)
    with pytest.raises(MdeMostlyNotFoundError, match=r"6 of 10 alerts .* from https://mde\.unit\.test"):
        fetch_batch_ips(api.client, batch(10))
    assert len(api.urls) == 7


def test_half_a_batch_not_found_or_a_small_batch_all_gone_passes(mde_scripted):
    api = mde_scripted()
    api.script(*[service_404()] * 5, *[OK] * 5, *[service_404()] * 9)
    results = fetch_batch_ips(api.client, batch(10))
    assert [r["status"] for r in results] == ["not_found"] * 5 + ["ok"] * 5
    small = fetch_batch_ips(api.client, batch(9))  # below NOT_FOUND_MIN_BATCH: a lone run of gone alerts
    assert [r["status"] for r in small] == ["not_found"] * 9
