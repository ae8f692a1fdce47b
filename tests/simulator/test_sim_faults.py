"""Faults on demand: seeded shares of 5xx, dropped connections, slow and malformed answers."""
import json
from collections import Counter

import pytest
import requests

from simhttp import Api, assert_mde_error
from mde_simulator.process import SimulatorProcess

NO_LIMITS = [[100000, 1]]
NO_FAULTS = {"fault_5xx": 0.0, "fault_drop": 0.0, "fault_slow": 0.0, "fault_malformed": 0.0,
             "fault_endpoints": "all"}


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
