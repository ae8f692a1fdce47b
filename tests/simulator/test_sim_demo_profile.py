"""Profile ``demo`` (`make run`, `make ui`): a tenant's shape, deterministic per seed, on the
simulator's clock; its ground truth says what a pipeline lands (the failing /ips as
``error``). The default profile (``flat``) is what every other test sees, unchanged."""
import collections

import pytest

from mde_simulator.alerts import AlertStore
from mde_simulator.demo import IOC_ADDRESSES, LATE_MINUTES
from mde_simulator.timeutil import parse_iso

START, END = "2026-04-01T00:00:00Z", "2026-04-01T03:00:00Z"
DEMO = {"alerts": 90, "seed": 1, "start": START, "end": END, "profile": "demo", "now": START}
MINUTE = 60 * 10**7


def store(seed: int, profile: str = "demo") -> AlertStore:
    return AlertStore(seed=seed, count=90, start=parse_iso(START), end=parse_iso(END), tenant_id="t",
                      burst_share=0.3, empty_ips_rate=0.05, missing_ips_rate=0.05, invalid_ip_rate=0.05,
                      vanish_rate=0.03, profile=profile)


def played(seed: int) -> AlertStore:
    alerts = store(seed)
    alerts.apply_due(parse_iso(END))
    return alerts


def test_the_shape_of_a_tenant_deterministic_per_seed():
    alerts = played(1)
    truth = alerts.ground_truth()["alerts"]
    assert truth == played(1).ground_truth()["alerts"] and truth != played(2).ground_truth()["alerts"]
    named = collections.defaultdict(set)
    devices = collections.defaultdict(set)
    for alert_id, t in truth.items():
        for ip in t["ips"]:
            named[ip].add(alert_id)
            devices[ip].add(alerts.get(alert_id).fields["machineId"])
    counts = sorted((len(a) for a in named.values()), reverse=True)
    assert counts[0] >= 10 and counts.count(1) > len(counts) / 2  # busy hosts, a long tail
    for ioc in IOC_ADDRESSES:
        assert len(named[ioc]) >= 3 and len(devices[ioc]) >= 2
        assert {alerts.get(a).fields["severity"] for a in named[ioc]} == {"High"}
    changed = [t["versions"] for t in truth.values() if len(t["versions"]) > 1]
    assert len(changed) >= 5
    assert [t["ips_status"] for t in truth.values()].count("error") == 1
    assert sum("late_minutes" in t for t in truth.values()) >= 1
    assert [f for f in alerts.poison_fields.values() if "incidentId" in f] == [{"incidentId": 12.5}]


def test_the_flat_profile_is_the_default_and_has_no_clock():
    assert store(1, "flat").pending() == 0 and len(store(1, "flat")) == 90
    with pytest.raises(ValueError):
        store(1, "lumpy")


@pytest.mark.parametrize("simulator", [DEMO], indirect=True)
def test_alerts_and_their_versions_happen_on_the_clock(api, simulator):
    assert simulator.ground_truth()["alerts"] == {} and api.list_all() == []  # nothing has happened yet
    simulator.configure(now="2026-04-01T01:05:00Z")  # the first hour's run
    first = {a["id"]: a for a in api.list_all()}
    truth = simulator.ground_truth()["alerts"]
    assert first and set(first) <= set(truth)
    late = {a for a, t in truth.items() if "late_minutes" in t}
    assert set(truth) - set(first) == {a for a in late if parse_iso(truth[a]["lastUpdateTime"])
                                       + int(LATE_MINUTES * MINUTE) > parse_iso("2026-04-01T01:05:00Z")}

    simulator.configure(now="2026-04-01T03:05:00Z")
    final = simulator.ground_truth()["alerts"]
    assert len(final) == 90 and {a["id"] for a in api.list_all()} == set(final)
    changed = {a: t for a, t in final.items() if len(t["versions"]) > 1}
    listed = {a["id"]: a for a in api.list_all()}
    # Listed at 01:05 as one version, now as a later one; the truth keeps both.
    moved = [a for a in changed if a in first and first[a]["lastUpdateTime"] != listed[a]["lastUpdateTime"]]
    assert moved and all(first[a]["lastUpdateTime"] in [v["lastUpdateTime"] for v in final[a]["versions"]] for a in moved)
    assert {listed[a]["status"] for a in changed} - {"New"}  # InProgress, Resolved
    assert any(listed[a]["classification"] for a in changed)

    (failing,) = [a for a, t in final.items() if t["ips_status"] == "error"]
    assert final[failing]["ips"] == [] and api.get(f"/api/alerts/{failing}/ips").status_code == 500
    (poisoned,) = [a for a in listed if listed[a]["incidentId"] == 12.5]
    assert final[poisoned]["ips_status"] == "ok"
    assert any("newField" in a for a in listed.values())
