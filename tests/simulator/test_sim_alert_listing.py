"""GET /api/alerts: OData filters, ordering and paging return each alert exactly once."""
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from simhttp import Api, assert_mde_error
from mde_simulator.process import SimulatorProcess
from mde_simulator.timeutil import format_ticks, parse_iso

START, END = "2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z"
ALERT_FIELDS = {
    "id", "incidentId", "investigationId", "title", "description", "severity", "status",
    "category", "detectionSource", "threatFamilyName", "threatName", "classification",
    "determination", "machineId", "computerDnsName", "rbacGroupName", "aadTenantId",
    "mitreTechniques", "alertCreationTime", "firstEventTime", "lastEventTime",
    "lastUpdateTime", "resolvedTime", "assignedTo", "relatedUser", "comments"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("listing"), alerts=300, seed=7,
                          start=START, end=END, burst_share=0.4,
                          rate_limits=[[100000, 1]]) as process:
        yield process


@pytest.fixture(scope="module")
def api(sim):
    client = Api(sim)
    yield client
    client.close()


@pytest.fixture(scope="module")
def truth(sim):
    return sim.ground_truth()["alerts"]


def ids(alerts):
    return [a["id"] for a in alerts]


def key(alert):
    return parse_iso(alert["lastUpdateTime"]), alert["id"]


def test_listing_returns_every_alert_once_with_all_fields(api, truth):
    alerts = api.list_all()
    assert sorted(ids(alerts)) == sorted(truth)
    for alert in alerts:
        assert ALERT_FIELDS <= set(alert)
        assert "evidence" not in alert
        assert re.fullmatch(r"(da)?\d{18}_-?\d+", alert["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", alert["lastUpdateTime"])
        assert alert["lastUpdateTime"] == truth[alert["id"]]["lastUpdateTime"]
        assert parse_iso(START) <= parse_iso(alert["lastUpdateTime"]) < parse_iso(END)
        assert isinstance(alert["mitreTechniques"], list)
    # Bursts: many alerts share one exact lastUpdateTime.
    stamps = [a["lastUpdateTime"] for a in alerts]
    assert max(stamps.count(s) for s in set(stamps)) >= 5


def test_hourly_ge_lt_intervals_partition_the_alerts(api, truth):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    seen = []
    on_edges = 0
    for hour in range(6):
        low = (start + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
        high = (start + timedelta(hours=hour + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        page = api.list_all({"$filter": f"lastUpdateTime ge {low} and lastUpdateTime lt {high}"})
        for alert in page:
            assert parse_iso(low) <= parse_iso(alert["lastUpdateTime"]) < parse_iso(high)
            on_edges += alert["lastUpdateTime"] == low.replace("Z", ".0000000Z")
        seen += ids(page)
    assert sorted(seen) == sorted(truth)          # nothing lost, nothing twice
    assert on_edges > 0, "the data should have alerts exactly on an interval edge"


def test_operators_are_exact_at_the_seventh_fractional_digit(api, truth):
    alert_id, fact = next((i, f) for i, f in truth.items()
                          if not f["lastUpdateTime"].endswith("0000000Z"))
    stamp = fact["lastUpdateTime"]
    ticks = parse_iso(stamp)
    before, after = format_ticks(ticks - 1), format_ticks(ticks + 1)

    def listed(expression):
        return alert_id in ids(api.list_all({"$filter": expression}))

    assert listed(f"lastUpdateTime ge {stamp}")
    assert not listed(f"lastUpdateTime gt {stamp}")
    assert listed(f"lastUpdateTime le {stamp}")
    assert not listed(f"lastUpdateTime lt {stamp}")
    assert listed(f"lastUpdateTime gt {before} and lastUpdateTime lt {after}")
    assert not listed(f"lastUpdateTime gt {before} and lastUpdateTime lt {stamp}")
    assert listed(f"lastUpdateTime eq {stamp}")
    # The same instant written with an offset, in quotes, or in lower case 'and'/'AND'.
    shifted = (datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S") + timedelta(hours=2))
    with_offset = shifted.strftime("%Y-%m-%dT%H:%M:%S") + stamp[19:27] + "+02:00"
    assert listed(f"lastUpdateTime ge {with_offset} AND lastUpdateTime le '{stamp}'")


def test_whole_second_literals_without_fraction(api, truth):
    whole = [i for i, f in truth.items() if f["lastUpdateTime"].endswith(".0000000Z")]
    assert whole, "the data should have alerts on whole seconds"
    stamp = truth[whole[0]]["lastUpdateTime"].replace(".0000000Z", "Z")
    assert whole[0] in ids(api.list_all({"$filter": f"lastUpdateTime ge {stamp}"}))
    assert whole[0] not in ids(api.list_all({"$filter": f"lastUpdateTime gt {stamp}"}))


def test_skip_paging_across_equal_timestamps_is_exact(api):
    everything = api.list_all({"$orderby": "lastUpdateTime asc"})
    assert [key(a) for a in everything] == sorted(key(a) for a in everything)
    pages, skip, size = [], 0, 7
    while True:
        response = api.get("/api/alerts", {"$orderby": "lastUpdateTime", "$top": size,
                                           "$skip": skip})
        page = response.json()["value"]
        assert "@odata.nextLink" not in response.json()   # never, unless next-link mode
        if not page:
            break
        pages.append(page)
        skip += size
    flat = [a for page in pages for a in page]
    assert ids(flat) == ids(everything)
    split_bursts = sum(1 for left, right in zip(pages, pages[1:])
                       if left[-1]["lastUpdateTime"] == right[0]["lastUpdateTime"])
    assert split_bursts > 0, "some page boundary should fall inside a burst"


def test_descending_order_and_default_order(api):
    descending = api.list_all({"$orderby": "lastUpdateTime desc"})
    stamps = [parse_iso(a["lastUpdateTime"]) for a in descending]
    assert stamps == sorted(stamps, reverse=True)
    for left, right in zip(descending, descending[1:]):   # ties by id, ascending
        if left["lastUpdateTime"] == right["lastUpdateTime"]:
            assert left["id"] < right["id"]
    default = api.list_all()
    created = [parse_iso(a["alertCreationTime"]) for a in default]
    assert created == sorted(created, reverse=True)


def test_top_limits_and_bad_queries_answer_400(api):
    assert len(api.get("/api/alerts", {"$top": "10000"}).json()["value"]) == 300
    assert len(api.get("/api/alerts", {"$top": "0"}).json()["value"]) == 0
    error = assert_mde_error(api.get("/api/alerts", {"$top": "10001"}), 400, "BadRequest")
    assert "10000" in error["message"]
    for params in ({"$top": "-1"}, {"$top": "ten"}, {"$skip": "-5"},
                   {"$filter": "lastUpdateTime ge 2026-01-01"},
                   {"$filter": "lastUpdateTime ge 2026-01-01T00:00:00.12345678Z"},
                   {"$filter": "lastUpdateTime gt"},
                   {"$filter": "noSuchField eq 'x'"},
                   {"$filter": "(lastUpdateTime ge 2026-01-01T00:00:00Z"},
                   {"$orderby": "title"}, {"$expand": "machine"}, {"$count": "true"}):
        assert_mde_error(api.get("/api/alerts", params), 400)
    duplicated = api.session.get(f"{api.sim.base_url}/api/alerts?$top=1&$top=2",
                                 headers={"Authorization": f"Bearer {api.token()}"})
    assert_mde_error(duplicated, 400)


def test_default_page_size_and_next_link_mode(api, sim, truth):
    sim.configure(default_top=50)
    try:
        response = api.get("/api/alerts")
        assert len(response.json()["value"]) == 50
        assert "@odata.nextLink" not in response.json()
        sim.configure(next_link=True)
        url = f"{sim.base_url}/api/alerts?$orderby=lastUpdateTime&$top=40"
        collected, links = [], 0
        while url:
            body = api.session.get(url, headers={"Authorization": f"Bearer {api.token()}"}).json()
            collected += body["value"]
            url = body.get("@odata.nextLink")
            links += url is not None
        assert sorted(ids(collected)) == sorted(truth)
        assert len(collected) == len(truth) and links == 7     # 300 / 40 -> 8 pages
        exact = api.get("/api/alerts", {"$top": "300"}).json()
        assert "@odata.nextLink" not in exact                  # nothing remains
    finally:
        sim.configure(default_top=10000, next_link=False)


def test_expand_evidence_and_path_without_api_prefix(api, truth):
    expanded = api.list_all({"$expand": "evidence"})
    assert all(isinstance(a["evidence"], list) for a in expanded)
    ip_entities = [e for a in expanded for e in a["evidence"] if e["entityType"] == "Ip"]
    assert ip_entities and all(e["ipAddress"] for e in ip_entities)
    bare = api.get("/alerts", {"$top": "10000"})
    assert bare.status_code == 200
    assert sorted(ids(bare.json()["value"])) == sorted(truth)
    assert bare.json()["@odata.context"].endswith("$metadata#Alerts")


def test_other_filter_fields_and_single_alert(api, truth):
    high = api.list_all({"$filter": "severity eq 'High' and status ne 'Resolved'"})
    assert high and all(a["severity"] == "High" and a["status"] != "Resolved" for a in high)
    either = api.list_all({"$filter": "severity eq 'High' or severity eq 'Low'"})
    assert {a["severity"] for a in either} == {"High", "Low"}
    some = next(iter(truth))
    single = api.get(f"/api/alerts/{some}")
    assert single.status_code == 200 and single.json()["id"] == some
    assert_mde_error(api.get(f"/api/alerts/{uuid.uuid4()}"), 404, "ResourceNotFound")
