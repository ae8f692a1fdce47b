"""--advance-rate: alerts move forward while a client pages (the hazard of $skip paging)."""
import time

import pytest

from mde_simulator.timeutil import parse_iso


@pytest.mark.parametrize("simulator", [{"alerts": 60, "advance_rate": 0.5, "seed": 3,
                                        "start": "2026-03-01T00:00:00Z",
                                        "end": "2026-03-01T01:00:00Z"}], indirect=True)
def test_listed_alerts_move_to_now_at_the_asked_rate(api, simulator):
    first = {a["id"]: a["lastUpdateTime"] for a in api.list_all()}
    simulator.configure(advance_rate=0.0)   # freeze, then look at what moved
    second = {a["id"]: a["lastUpdateTime"] for a in api.list_all()}
    assert set(first) == set(second)
    moved = [i for i in first if second[i] != first[i]]
    assert 18 <= len(moved) <= 42, len(moved)   # about half of 60 (seeded, so fixed)
    now = time.time()
    for alert_id in moved:
        assert parse_iso(second[alert_id]) > parse_iso(first[alert_id])
        assert abs(parse_iso(second[alert_id]) / 1e7 - now) < 120
    truth = simulator.ground_truth()["alerts"]
    assert {i: f["lastUpdateTime"] for i, f in truth.items()} == second
    assert all(len(truth[i]["versions"]) == 2 for i in moved)
    # The file follows shortly (rewrites are coalesced).
    import json
    deadline = time.time() + 10
    while True:
        on_disk = json.loads(open(simulator.info["ground_truth"]).read())["alerts"]
        if {i: f["lastUpdateTime"] for i, f in on_disk.items()} == second:
            break
        assert time.time() < deadline, "ground_truth.json was not rewritten"
        time.sleep(0.1)
