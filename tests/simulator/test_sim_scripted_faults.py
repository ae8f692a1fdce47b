"""A trickling body (every read quick, the whole answer slow), scripted Retry-After answers (absurd, garbage, negative, zero, a long 503) and HTML 404s
"from a proxy": deterministic faults for the client's bounded waits and honest 404s."""
import time

import pytest
import requests

from simhttp import assert_mde_error
from mde_simulator.process import SimulatorError, SimulatorProcess

NO_LIMITS = [[100000, 1]]
CLEAN = {"retry_after_script": [], "proxy_404": False, "fault_trickle": 0.0, "fault_endpoints": "all"}
BAD_DATE = "Wed, 32 Foo 2026 99:99:99 GMT"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("scripted"), alerts=10, seed=3,
                          rate_limits=NO_LIMITS, missing_ips_rate=0, empty_ips_rate=0) as process:
        yield process


@pytest.fixture
def simulator(shared):
    shared.configure(**CLEAN)
    shared.reset_stats()
    yield shared
    shared.configure(**CLEAN)


def test_scripted_answers_are_served_in_order_with_the_header_as_given(api, simulator):
    alert_id = api.list_all()[0]["id"]
    script = ["999999999", "soon", BAD_DATE, "-5", "0", {"status": 429, "retry_after": None},
              {"status": 503, "retry_after": "3900"}]
    settings = simulator.configure(retry_after_script=script, fault_endpoints=["ips"])
    assert len(settings["retry_after_script"]) == 7
    answers = [api.get(f"/api/alerts/{alert_id}/ips") for _ in range(8)]
    assert [r.status_code for r in answers] == [429] * 6 + [503, 200]
    assert [r.headers.get("Retry-After") for r in answers[:7]] == [
        "999999999", "soon", BAD_DATE, "-5", "0", None, "3900"]
    assert_mde_error(answers[0], 429, "429")
    assert_mde_error(answers[6], 503, "ServiceUnavailable")
    stats = simulator.stats()
    assert stats["faults"] == {"scripted_429": 6, "scripted_503": 1}
    assert stats["calls"]["ips"] == {"429": 6, "503": 1, "200": 1}  # counted like any call
    assert simulator.settings()["retry_after_script"] == []


def test_the_script_waits_for_an_eligible_endpoint(api, simulator):
    simulator.configure(retry_after_script=["1"], fault_endpoints=["ips"])
    assert api.get("/api/alerts", {"$top": "1"}).status_code == 200  # list is not eligible
    alert_id = api.list_all()[0]["id"]
    assert api.get(f"/api/alerts/{alert_id}/ips").status_code == 429


@pytest.mark.parametrize("bad", [[{"status": 500, "retry_after": "1"}], ["a\r\nX-Evil: 1"], [7], "1",
                                 [{"retry_after": "1", "extra": 1}]])
def test_bad_scripts_are_refused(simulator, bad):
    with pytest.raises(SimulatorError, match="400"):
        simulator.configure(retry_after_script=bad)


def test_proxy_404_answers_html_for_chosen_or_all_ips_calls(api, simulator):
    first, second = [a["id"] for a in api.list_all()[:2]]
    simulator.configure(proxy_404=[first])
    gone = api.get(f"/api/alerts/{first}/ips", token=False)  # the proxy answers before any auth
    assert gone.status_code == 404
    assert gone.headers["Content-Type"].startswith("text/html")
    assert b"<html>" in gone.content
    with pytest.raises(requests.JSONDecodeError):
        gone.json()
    assert api.get(f"/api/alerts/{second}/ips").status_code == 200
    assert api.get(f"/api/alerts/{first}").status_code == 200  # only /ips goes through the "proxy"
    simulator.configure(proxy_404=True)
    assert api.get(f"/api/alerts/{second}/ips").status_code == 404
    assert simulator.stats()["faults"] == {"proxy_404": 2}
    simulator.configure(proxy_404=False)
    assert api.get(f"/api/alerts/{first}/ips").status_code == 200


def test_the_services_own_404_stays_json(api, simulator):
    assert_mde_error(api.get("/api/alerts/da000000000000000000_-1/ips"), 404, "ResourceNotFound")


def test_a_trickled_body_never_trips_a_read_timeout_but_takes_trickle_seconds(api, simulator):
    alert_id = api.list_all()[0]["id"]
    simulator.configure(fault_trickle=1.0, trickle_seconds=1.5, fault_endpoints=["ips"])
    started = time.monotonic()
    answer = api.get(f"/api/alerts/{alert_id}/ips", timeout=(5, 0.5))  # 0.5 s per read
    assert time.monotonic() - started >= 1.4
    assert answer.status_code == 200 and answer.json()["value"]
    assert simulator.stats()["faults"] == {"trickle": 1}
