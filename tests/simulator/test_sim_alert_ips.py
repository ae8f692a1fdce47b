"""GET /api/alerts/{id}/ips against the ground truth; ids that try to escape the route;
alerts that vanish or move forward while a client works."""
import http.client
import ipaddress
import json
import ssl
from urllib.parse import quote

import pytest

from simhttp import Api, assert_mde_error
from mde_simulator.process import SimulatorProcess
from mde_simulator.timeutil import parse_iso


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("ips"), alerts=250, seed=11,
                          start="2026-03-01T00:00:00Z", end="2026-03-01T04:00:00Z",
                          vanish_rate=0.08, invalid_ip_rate=0.2,
                          rate_limits=[[100000, 1]]) as process:
        yield process


@pytest.fixture(scope="module")
def api(sim):
    client = Api(sim)
    yield client
    client.close()


def canonical(text):
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def test_every_listed_alert_ips_match_the_ground_truth(api, sim):
    truth = sim.ground_truth()["alerts"]
    listed = api.list_all()
    assert len(listed) == len(truth)
    statuses = {"ok": 0, "empty": 0, "not_found": 0}
    spelled_oddly = duplicated = with_invalid = 0
    for alert in listed:
        fact = truth[alert["id"]]
        response = api.get(f"/api/alerts/{quote(alert['id'], safe='')}/ips")
        if response.status_code == 404:
            assert_mde_error(response, 404, "ResourceNotFound")
            assert fact["ips_status"] == "not_found" and fact["ips"] == []
            statuses["not_found"] += 1
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["@odata.context"].endswith("/$metadata#Ips")
        served = [item["id"] for item in body["value"]]
        assert all(set(item) == {"id"} for item in body["value"])
        valid = [canonical(s) for s in served if canonical(s)]
        assert sorted(set(valid)) == fact["ips"]
        assert [s for s in served if canonical(s) is None] == fact["invalid_ips"]
        assert served == fact["served_ips"]
        statuses[fact["ips_status"]] += 1
        assert fact["ips_status"] == ("ok" if valid else "empty")
        spelled_oddly += any(canonical(s) and canonical(s) != s for s in served)
        duplicated += len(valid) != len(set(valid))
        with_invalid += bool(fact["invalid_ips"])
    assert all(statuses.values()), statuses          # all three kinds occur
    assert spelled_oddly and duplicated and with_invalid
    vanished = [i for i, f in truth.items() if f["vanished"]]
    assert vanished and all(truth[i]["ips_status"] == "not_found" for i in vanished)
    assert {a["id"] for a in listed} >= set(vanished)   # listed, yet 404 on fetch
    v6 = [ip for f in truth.values() for ip in f["ips"] if ":" in ip]
    assert v6 and all(ip == ip.lower() for ip in v6)


def test_ground_truth_file_matches_the_endpoint(sim):
    from_file = json.loads(open(sim.info["ground_truth"]).read())
    assert from_file == sim.ground_truth()


def test_unknown_id_answers_404_with_the_service_error_body(api):
    error = assert_mde_error(api.get("/api/alerts/da999999999999999999_42/ips"), 404,
                             "ResourceNotFound")
    assert "da999999999999999999_42" in error["message"]
    assert_mde_error(api.get("/alerts/da999999999999999999_42/ips"), 404, "ResourceNotFound")


@pytest.mark.parametrize("alert_id", ["..", "../_sim/stats", "a/b", "../../_sim/config",
                                      "%2e%2e", "..%2F_sim%2Fstats", "x?$top=1"])
def test_ids_never_reach_another_route(api, sim, alert_id):
    response = api.get(f"/api/alerts/{quote(alert_id, safe='')}/ips")
    assert_mde_error(response, 404, "ResourceNotFound")
    # Raw, unnormalised request line with dot segments: still one id segment, never /_sim.
    context = ssl.create_default_context(cafile=sim.ca_bundle)
    connection = http.client.HTTPSConnection("127.0.0.1", sim.info["port"], context=context,
                                             timeout=10)
    try:
        connection.request("GET", "/api/alerts/../_sim/stats",
                           headers={"Authorization": f"Bearer {api.token()}"})
        raw = connection.getresponse()
        assert raw.status == 404
        assert json.loads(raw.read())["error"]["code"] == "ResourceNotFound"
    finally:
        connection.close()


def test_limited_client_gets_403_on_ips_but_can_list(api, sim):
    token = api.token(sim.info["limited_client_id"], sim.info["limited_client_secret"])
    assert api.get("/api/alerts", {"$top": "1"}, token=token).status_code == 200
    error = assert_mde_error(api.get("/api/alerts/x/ips", token=token), 403, "Forbidden")
    assert "Ip.Read.All" in error["message"]


def test_advance_moves_alerts_forward_and_rewrites_the_ground_truth(api, sim):
    before = sim.ground_truth()
    chosen = [i for i, f in before["alerts"].items() if f["ips_status"] == "empty"][:1] + \
             [i for i, f in before["alerts"].items() if f["ips_status"] == "ok"][:1]
    result = sim.advance(ids=chosen, to="2026-03-01T05:00:00.1234567Z", add_ip=True)
    assert [c["id"] for c in result["advanced"]] == chosen
    after_file = json.loads(open(sim.info["ground_truth"]).read())
    assert after_file["version"] > before["version"]
    for alert_id in chosen:
        fact = after_file["alerts"][alert_id]
        assert fact["lastUpdateTime"] == "2026-03-01T05:00:00.1234567Z"
        assert [v["lastUpdateTime"] for v in fact["versions"]] == [
            before["alerts"][alert_id]["lastUpdateTime"], fact["lastUpdateTime"]]
        assert set(before["alerts"][alert_id]["ips"]) < set(fact["ips"])
        served = api.get(f"/api/alerts/{alert_id}/ips").json()["value"]
        assert sorted({canonical(v["id"]) for v in served} - {None}) == fact["ips"]
    moved = api.list_all({"$filter": "lastUpdateTime ge 2026-03-01T05:00:00Z"})
    assert sorted(a["id"] for a in moved) == sorted(chosen)
    # An older 'to' never moves an alert backwards.
    again = sim.advance(ids=chosen[:1], to="2026-03-01T00:00:00Z")["advanced"][0]
    assert parse_iso(again["to"]) == parse_iso(again["from"]) + 1


def test_vanish_and_invalid_rates_change_at_run_time(api, sim):
    listed = api.list_all()
    sim.configure(vanish_rate=1.0)
    try:
        some = listed[0]["id"]
        assert_mde_error(api.get(f"/api/alerts/{some}/ips"), 404)
        truth = json.loads(open(sim.info["ground_truth"]).read())["alerts"]
        assert all(f["ips_status"] == "not_found" for f in truth.values())
    finally:
        sim.configure(vanish_rate=0.08)
    assert sim.ground_truth()["alerts"] == json.loads(open(sim.info["ground_truth"]).read())["alerts"]
    sim.configure(invalid_ip_rate=1.0)
    try:
        truth = sim.ground_truth()["alerts"]
        with_ips = [i for i, f in truth.items() if f["ips_status"] == "ok"]
        assert with_ips and all(truth[i]["invalid_ips"] for i in with_ips)
        served = [v["id"] for v in api.get(f"/api/alerts/{with_ips[0]}/ips").json()["value"]]
        assert [s for s in served if canonical(s) is None] == truth[with_ips[0]]["invalid_ips"]
    finally:
        sim.configure(invalid_ip_rate=0.2)
