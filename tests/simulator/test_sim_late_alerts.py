"""Late visibility (issue 11): a share of alerts is listable only some minutes after its
lastUpdateTime, on the simulator's clock (real time, or `now` set by a test); the ground
truth holds them all along; alerts updated into a later hour follow the same rule."""
import pytest

from mde_simulator.timeutil import parse_iso

HOUR = "2026-04-01T00:00:00Z"
MINUTE = 60 * 10**7


@pytest.mark.parametrize("simulator", [{"alerts": 200, "seed": 5, "start": HOUR, "end": "2026-04-01T01:00:00Z",
                                        "late_share": 0.2, "late_minutes": 90}], indirect=True)
def test_late_alerts_appear_after_their_delay_and_the_truth_is_unchanged(api, simulator):
    truth = simulator.ground_truth()["alerts"]
    assert len(truth) == 200
    simulator.configure(now="2026-04-01T01:05:00Z")  # the hour closed 5 minutes ago
    early = {a["id"]: a["lastUpdateTime"] for a in api.list_all()}
    hidden = set(truth) - set(early)
    assert 20 <= len(hidden) <= 60, len(hidden)  # about 20% of 200 (seeded: fixed)
    now = parse_iso("2026-04-01T01:05:00Z")
    assert all(parse_iso(truth[i]["lastUpdateTime"]) + 90 * MINUTE > now for i in hidden)
    assert simulator.settings()["late_share"] == 0.2

    simulator.configure(now="2026-04-01T02:31:00Z")
    assert {a["id"] for a in api.list_all()} == set(truth)  # all listable now
    assert simulator.ground_truth()["alerts"].keys() == truth.keys()

    # Updated into a later hour: a late alert is hidden again until its new time + 30 min.
    late = sorted(hidden)[0]
    simulator.advance(ids=[late], to="2026-04-01T02:10:00Z")
    simulator.configure(now="2026-04-01T02:20:00Z")
    assert late not in {a["id"] for a in api.list_all()}
    simulator.configure(now="2026-04-01T03:41:00Z")
    (moved,) = [a for a in api.list_all() if a["id"] == late]
    assert moved["lastUpdateTime"].startswith("2026-04-01T02:10:00")
    versions = simulator.ground_truth()["alerts"][late]["versions"]
    assert [v["lastUpdateTime"] for v in versions][0] == truth[late]["lastUpdateTime"]

    simulator.configure(now=None, late_share=0.0)
    assert simulator.settings()["now"] is None
    with pytest.raises(Exception):
        simulator.configure(late_minutes=-1)
