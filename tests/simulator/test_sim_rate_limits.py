"""Rate limits over real HTTPS: 429 inside the window, admission after it slides,
Retry-After, throttle extension, budgets per (client, tenant), stats that prove it.

Times come from the server's own record of each call's arrival (/_sim/requests), so
the assertions do not depend on how fast this machine happens to be.
"""
import math
import threading
import time

import pytest

from simhttp import Api, assert_mde_error
from mde_simulator.process import SimulatorProcess

IPS = "/api/alerts/da000000000000000000_1/ips"   # unknown id: a counted 404, cheap


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("limits"), alerts=10) as process:
        yield process


@pytest.fixture
def limits(simulator):
    """Set the windows for one test, with empty windows and fresh stats."""
    clients = []

    def apply(rate_limits, scope="shared"):
        simulator.configure(rate_limits=rate_limits, limit_scope=scope)
        simulator.reset_stats(limiter=True)
        clients.append(Api(simulator))
        return clients[-1]
    yield apply
    for client in clients:
        client.close()


def sleep_until(moment):
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def test_fourth_call_in_the_window_is_throttled_and_admitted_after_the_slide(limits, simulator):
    api = limits([[3, 2]])
    api.token()  # token requests never count
    first = [api.get(IPS) for _ in range(3)]
    assert [r.status_code for r in first] == [404, 404, 404]
    fourth = api.get(IPS)
    arrivals = api.arrivals(first + [fourth])
    assert arrivals[3] - arrivals[0] < 2, "the four calls did not arrive within one window"
    error = assert_mde_error(fourth, 429, "429")
    assert error["message"] == "API calls quota exceeded! maximum allowed 3 per 00:00:02"

    # The refused call counts as well, so the second call must leave before a call is
    # admitted: exact wait d = arrivals[1] + 2 - arrivals[3]; Retry-After = ceil(d).
    wait = arrivals[1] + 2 - arrivals[3]
    retry_after = int(fourth.headers["Retry-After"])
    assert retry_after == max(1, math.ceil(wait - 1e-6))

    sleep_until(arrivals[1] + 2 + 0.05)   # just after the window slid past call 2
    after = api.get(IPS)
    assert after.status_code == 404       # admitted (an unknown id), not 429


def test_calls_during_a_throttle_prolong_it(limits, simulator):
    api = limits([[2, 1]])
    admitted = [api.get(IPS) for _ in range(2)]
    assert [r.status_code for r in admitted] == [404, 404]
    refused = []
    for _ in range(2):
        time.sleep(0.3)
        refused.append(api.get(IPS))
    assert [r.status_code for r in refused] == [429, 429]
    a = api.arrivals(admitted + refused)
    # Both admitted calls have left the window now; only the refused calls keep it busy.
    sleep_until(a[1] + 1 + 0.05)
    probe = api.get(IPS)
    t = api.arrivals([probe])[0]
    still_inside = [x for x in a if t - 1 < x <= t]
    assert all(x > a[1] for x in still_inside) and len(still_inside) >= 2
    assert probe.status_code == 429
    # Waiting out the announced Retry-After (and calling nothing meanwhile) is enough.
    time.sleep(int(probe.headers["Retry-After"]))
    assert api.get(IPS).status_code == 404

    stats = simulator.stats()
    (client,) = stats["clients"]
    (window,) = client["windows"]
    assert window["all"]["max_admitted"] <= 2
    assert window["all"]["max_calls"] >= 3
    assert client["throttled"] == stats["throttled"] == 3
    assert stats["calls"]["ips"] == {"404": 3, "429": 3}


def test_shared_and_per_endpoint_budgets(limits, simulator):
    api = limits([[2, 30]])
    assert api.get("/api/alerts").status_code == 200
    assert api.get(IPS).status_code == 404
    assert_mde_error(api.get("/api/alerts"), 429)         # list + ips share one budget
    assert_mde_error(api.get(IPS), 429)

    api = limits([[2, 30]], scope="per-endpoint")
    assert api.get("/api/alerts").status_code == 200
    assert api.get("/api/alerts").status_code == 200
    assert_mde_error(api.get("/api/alerts"), 429)
    assert api.get(IPS).status_code == 404                 # ips has its own budget
    assert api.get(IPS).status_code == 404
    assert_mde_error(api.get(IPS), 429)
    windows = simulator.stats()["clients"][0]["windows"][0]
    assert windows["list"] == {"max_calls": 3, "max_admitted": 2}
    assert windows["ips"] == {"max_calls": 3, "max_admitted": 2}


def test_budget_is_per_client_and_token_requests_do_not_count(limits, simulator):
    api = limits([[2, 30]])
    for _ in range(5):
        api.token(fresh=True)
    assert api.get("/api/alerts").status_code == 200
    assert api.get("/api/alerts").status_code == 200
    assert_mde_error(api.get("/api/alerts"), 429)
    other = api.token(simulator.info["limited_client_id"], simulator.info["limited_client_secret"])
    assert api.get("/api/alerts", token=other).status_code == 200
    stats = simulator.stats()
    assert stats["tokens_issued"] == 6
    per_client = {c["client_id"]: c for c in stats["clients"]}
    assert per_client[simulator.info["client_id"]]["calls"] == 3
    assert per_client[simulator.info["limited_client_id"]]["calls"] == 1


def test_limits_change_at_run_time_and_unauthenticated_calls_are_not_counted(limits, simulator):
    api = limits([[100, 60]])
    assert api.get(IPS, token=False).status_code == 401
    assert api.get(IPS).status_code == 404
    settings = simulator.configure(rate_limits=[[1, 3600]])
    assert settings["rate_limits"] == [[1, 3600]]
    error = assert_mde_error(api.get(IPS), 429)
    assert error["message"] == "API calls quota exceeded! maximum allowed 1 per 01:00:00"
    retry_after = int(api.get(IPS).headers["Retry-After"])
    assert 3590 <= retry_after <= 3600
    stats = simulator.stats()
    assert stats["calls"]["ips"] == {"401": 1, "404": 1, "429": 2}
    assert stats["clients"][0]["calls"] == 3


def test_concurrent_callers_never_get_more_than_the_limit_admitted(limits, simulator):
    limits([[20, 1], [30, 3]])
    results, lock = [], threading.Lock()
    deadline = time.time() + 1.5

    def hammer():
        client = Api(simulator)
        mine = []
        while time.time() < deadline:
            mine.append(client.get(IPS).status_code)
        client.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {404, 429}
    stats = simulator.stats()
    assert stats["calls"]["ips"] == {"404": results.count(404), "429": results.count(429)}
    (client,) = stats["clients"]
    for window in client["windows"]:
        assert 1 <= window["all"]["max_admitted"] <= window["limit"]
        assert window["all"]["max_calls"] > window["limit"]


def test_one_app_in_two_tenants_has_two_budgets(limits, simulator):
    api = limits([[2, 30]])
    app = simulator.info["client_id"]
    other_tenant = "11111111-2222-4333-8444-555555555555"
    simulator.configure(clients=[{"client_id": app, "client_secret": "second-tenant-secret",
                                  "tenant_id": other_tenant}])
    response = api.token_response(client_id=app, secret="second-tenant-secret",
                                  tenant=other_tenant)
    assert response.status_code == 200, response.text
    other_token = response.json()["access_token"]
    assert api.get(IPS).status_code == 404
    assert api.get(IPS).status_code == 404
    assert_mde_error(api.get(IPS), 429)
    assert api.get(IPS, token=other_token).status_code == 404   # its own budget
    # The secret of one tenant's registration does not open the other.
    assert api.token_response(client_id=app, secret="second-tenant-secret").status_code == 401
    budgets = {(c["client_id"], c["tenant_id"]): c["calls"] for c in simulator.stats()["clients"]}
    assert budgets == {(app, simulator.info["tenant_id"]): 3, (app, other_tenant): 1}
