"""Faults on demand: seeded shares of 5xx, dropped connections, slow, malformed and trickled
answers; scripted Retry-After answers (absurd, garbage, negative, zero, a long 503) and HTML
404s "from a proxy" for the client's bounded waits and honest 404s."""
import json
import time
from collections import Counter

import pytest
import requests

from simhttp import Api, assert_mde_error
from mde_simulator.process import SimulatorError, SimulatorProcess

NO_LIMITS = [[100000, 1]]
NO_FAULTS = {"fault_5xx": 0.0, "fault_drop": 0.0, "fault_slow": 0.0, "fault_malformed": 0.0,
             "fault_trickle": 0.0, "retry_after_script": [], "proxy_404": False,
             "fault_endpoints": "all", "poison_fields": {}, "extra_fields": {}, "ips_fail": [],
             "ips_non_string": []}
BAD_DATE = "Wed, 32 Foo 2026 99:99:99 GMT"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("faults"), alerts=20, seed=5,
                          rate_limits=NO_LIMITS, missing_ips_rate=0, empty_ips_rate=0) as process:
        yield process


@pytest.fixture
def simulator(shared):
    """The shared simulator with no faults and fresh stats; faults are switched off after."""
    shared.configure(**NO_FAULTS)
    shared.reset_stats()
    yield shared
    shared.configure(**NO_FAULTS)


def parses(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def ips_statuses(api, alert_ids, calls):
    out = []
    for n in range(calls):
        try:
            out.append(api.get(f"/api/alerts/{alert_ids[n % len(alert_ids)]}/ips").status_code)
        except requests.ConnectionError:
            out.append("dropped")
    return out


def test_faults_happen_at_the_asked_rate_and_only_where_asked(api, simulator):
    simulator.configure(fault_5xx=0.2, fault_drop=0.1, fault_endpoints=["ips"])
    alert_ids = [a["id"] for a in api.list_all()]         # list is not a fault endpoint
    statuses = ips_statuses(api, alert_ids, 300)
    counts = Counter(statuses)
    # 300 draws at 0.2 and 0.1: mean 60 and 30, sd ~7 and ~5; the seed fixes the draws.
    assert 39 <= counts[500] + counts[503] <= 81, counts
    assert counts[500] and counts[503]
    assert 15 <= counts["dropped"] <= 45, counts
    assert counts[200] == 300 - counts[500] - counts[503] - counts["dropped"]
    for _ in range(30):
        assert api.get("/api/alerts", {"$top": "1"}).status_code == 200
    stats = simulator.stats()
    assert stats["faults"].get("500", 0) + stats["faults"].get("503", 0) == counts[500] + counts[503]
    assert stats["faults"]["drop"] == counts["dropped"]
    assert stats["calls"]["ips"].get("dropped") == counts["dropped"]
    # 5xx bodies are the service's error shape.
    simulator.configure(fault_5xx=1.0, fault_drop=0.0)
    error = api.get(f"/api/alerts/{alert_ids[0]}/ips")
    assert_mde_error(error, error.status_code)
    assert error.status_code in (500, 503)


def test_same_seed_same_faults(tmp_path):
    runs = []
    for name in ("a", "b"):
        with SimulatorProcess(tmp_path / name, alerts=10, seed=9, rate_limits=NO_LIMITS,
                              fault_5xx=0.3, fault_malformed=0.2) as sim:
            api = Api(sim)
            runs.append([api.get("/api/alerts/x/ips").status_code for _ in range(40)]
                        + [parses(api.get("/api/alerts").text) for _ in range(20)])
            api.close()
    assert runs[0] == runs[1]
    assert 500 in runs[0] or 503 in runs[0]
    assert False in runs[0][40:]        # some malformed listings among the 20


def test_malformed_bodies_are_really_unparseable(api, simulator):
    alert_id = api.list_all()[0]["id"]
    simulator.configure(fault_malformed=1.0)
    for path in (f"/api/alerts/{alert_id}/ips", "/api/alerts", f"/api/alerts/{alert_id}"):
        response = api.get(path)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert "..." in response.text
        with pytest.raises(ValueError):
            json.loads(response.text)
    simulator.configure(fault_malformed=0.0)
    assert api.get(f"/api/alerts/{alert_id}/ips").json()["value"]


def test_slow_answers_outlast_a_client_timeout(api, simulator):
    simulator.configure(fault_slow=1.0, slow_seconds=1.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get("/api/alerts", timeout=(5, 0.3))
    simulator.configure(fault_slow=0.0)
    assert api.get("/api/alerts", timeout=(5, 5)).status_code == 200
    assert simulator.stats()["faults"]["slow"] == 1


def test_dropped_connection_and_config_validation(api, simulator):
    simulator.configure(fault_drop=1.0, fault_endpoints="list")
    with pytest.raises(requests.ConnectionError):
        api.get("/api/alerts")
    assert api.get("/api/alerts/x/ips").status_code == 404   # ips is not faulted
    from mde_simulator.process import SimulatorError
    for bad in ({"fault_5xx": 1.5}, {"no_such_option": 1}, {"fault_5xx": 0.6, "fault_drop": 0.6},
                {"rate_limits": [[0, 1]]}, {"limit_scope": "global"},
                {"fault_endpoints": ["tokens"]}, {"fault_5xx": 0.5}):
        with pytest.raises(SimulatorError, match="400"):
            simulator.configure(**bad)
    assert simulator.settings()["fault_drop"] == 1.0   # a rejected update changes nothing


# ------------------------------------------------------------------ scripted answers, proxy 404s, trickle


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


def test_a_scripted_answer_for_one_tenant_waits_for_that_tenants_call(api, simulator):
    # The same app registered in a second tenant: its own budget (the service limits per
    # app and tenant), and a scripted 429 for it must not reach the first tenant's calls.
    app, other = simulator.info["client_id"], "22222222-3333-4444-8555-666666666666"
    simulator.configure(clients=[{"client_id": app, "client_secret": "other-tenant-secret", "tenant_id": other}])
    response = api.token_response(client_id=app, secret="other-tenant-secret", tenant=other)
    assert response.status_code == 200, response.text
    other_token = response.json()["access_token"]
    alert_id = api.list_all()[0]["id"]
    ips = f"/api/alerts/{alert_id}/ips"
    simulator.configure(retry_after_script=[{"status": 429, "retry_after": "7", "tenant_id": other.upper()}, "3"])
    assert simulator.settings()["retry_after_script"][0]["tenant_id"] == other  # kept in lower case

    first = api.get(ips)  # the home tenant passes the other tenant's answer by and takes "3"
    assert (first.status_code, first.headers.get("Retry-After")) == (429, "3")
    assert api.get(ips).status_code == 200  # nothing left for the home tenant
    throttled = api.get(ips, token=other_token)
    assert (throttled.status_code, throttled.headers.get("Retry-After")) == (429, "7")
    assert api.get(ips, token=other_token).status_code == 200
    assert simulator.settings()["retry_after_script"] == []

    # /_sim/calls: every call's arrival per (app, tenant), in order, admitted by the limiter
    # (scripted answers come after it), the same calls /_sim/stats counts.
    budgets = {c["tenant_id"]: c for c in simulator.calls() if c["client_id"] == app}
    log = {tenant: budget["calls"] for tenant, budget in budgets.items()}
    assert [(endpoint, admitted) for _, endpoint, admitted in log[other]] == [("ips", True)] * 2
    assert budgets[other]["scripted"] == [[log[other][0][0], 429]]  # which call got the answer
    assert budgets[simulator.info["tenant_id"]]["scripted"] == [[log[simulator.info["tenant_id"]][1][0], 429]]
    assert [endpoint for _, endpoint, _ in log[simulator.info["tenant_id"]]] == ["list", "ips", "ips"]
    for calls in log.values():
        assert [at for at, _, _ in calls] == sorted(at for at, _, _ in calls)
    counted = {c["tenant_id"]: c["calls"] for c in simulator.stats()["clients"] if c["client_id"] == app}
    assert counted == {tenant: len(calls) for tenant, calls in log.items()}


@pytest.mark.parametrize("bad", [[{"status": 500, "retry_after": "1"}], ["a\r\nX-Evil: 1"], [7], "1",
                                 [{"retry_after": "1", "extra": 1}], [{"retry_after": "1", "tenant_id": 5}]])
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


def test_poison_alerts_are_served_so_while_the_ground_truth_stays(api, simulator):
    first, second = [a["id"] for a in api.list_all()[:2]]
    truth = simulator.ground_truth()["alerts"]
    simulator.configure(poison_fields={first: {"incidentId": 12.5, "severity": 3, "mitreTechniques": "T1059"}},
                        extra_fields={"newField": {"nested": [1, 2]}}, ips_fail=[first], ips_non_string=[second])
    listed = {a["id"]: a for a in api.list_all()}
    assert (listed[first]["incidentId"], listed[first]["severity"], listed[first]["mitreTechniques"]) == (12.5, 3, "T1059")
    assert isinstance(listed[second]["severity"], str)  # only the chosen alert is poisoned
    assert all(a["newField"] == {"nested": [1, 2]} for a in listed.values())
    assert simulator.ground_truth()["alerts"] == truth
    for _ in range(3):
        assert_mde_error(api.get(f"/api/alerts/{first}/ips"), 500, "InternalServerError")
    items = api.get(f"/api/alerts/{second}/ips").json()["value"]
    assert items[-1] == {"id": 17} and all(isinstance(i["id"], str) for i in items[:-1])
    assert simulator.stats()["faults"] == {"ips_fail": 3}
    simulator.configure(poison_fields={}, extra_fields={}, ips_fail=[], ips_non_string=[])
    assert api.get(f"/api/alerts/{first}/ips").status_code == 200
    assert "newField" not in api.list_all()[0]
