"""Interval listing against the HTTPS simulator, compared with its ground truth.

The simulator serves OData paging like the service (no nextLink with $top, ties in
(lastUpdateTime, id) order), bursts of up to 25 alerts at one exact 7-digit instant,
some of them exactly on hour boundaries, and enforces tight rate limits that the
client's limiter must respect (no 429 expected).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from mde_pipeline.api.listing import list_interval
from mde_pipeline.common.timestamps import format_timestamp, parse_timestamp
from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig

pytestmark = pytest.mark.slow

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)
HOURS = [(T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)) for h in range(3)]
TIGHT = [[10, 1], [50, 5]]
SIM = {
    "alerts": 150,
    "start": "2026-01-05T00:00:00Z",
    "end": "2026-01-05T03:00:00Z",
    "burst_share": 0.6,
    "rate_limits": TIGHT,
    "seed": 4,
}


def simulator_client(sim, tmp_path) -> MdeClient:
    conn = json.loads(
        sim.connection_uri(
            ca_bundle=sim.ca_bundle,
            rate_limit_ledger_dir=str(tmp_path / "ledger"),
                timeout=10,
        )
    )
    config = MdeConnectionConfig.from_parts(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn["extra"], conn_id="sim"
    )
    return MdeClient(config)


def truth_versions(truth: dict, start: datetime, end: datetime) -> set[tuple[str, int]]:
    low, high = parse_timestamp(start.isoformat()), parse_timestamp(end.isoformat())
    return {
        (alert_id, ticks)
        for alert_id, alert in truth["alerts"].items()
        if low <= (ticks := parse_timestamp(alert["lastUpdateTime"])) < high
    }


def listed_versions(alerts: list[dict]) -> list[tuple[str, int]]:
    return [(a["id"], parse_timestamp(a["lastUpdateTime"])) for a in alerts]


def assert_no_throttling(sim) -> None:
    stats = sim.stats()
    assert stats["throttled"] == 0, stats
    for client in stats["clients"]:
        for window in client["windows"]:
            assert window["all"]["max_calls"] <= window["limit"], window


@pytest.mark.parametrize("simulator", [SIM], indirect=True)
def test_each_hour_lists_exactly_the_ground_truth(simulator, tmp_path):
    truth = simulator.ground_truth()
    boundary_alerts = [
        a for a in truth["alerts"].values() if parse_timestamp(a["lastUpdateTime"]) % (3600 * 10**7) == 0
    ]
    assert boundary_alerts, "the seed should put a burst exactly on an hour boundary"

    with simulator_client(simulator, tmp_path) as client:
        everything = []
        for page_size in (7, 10_000):  # 7: bursts of up to 25 force $skip inside a timestamp
            for start, end in HOURS:
                listing = list_interval(client, start, end, page_size)
                listed = listed_versions(listing.alerts)
                assert len(listed) == len(set(listed))
                assert set(listed) == truth_versions(truth, start, end), (page_size, start)
                assert listing.stats.group_resyncs == 0
                if page_size == 10_000:
                    assert listing.stats.requests == 1
                    everything.extend(listed)
                # Every field the service sends is kept.
                for alert in listing.alerts[:3]:
                    assert {"id", "incidentId", "title", "severity", "mitreTechniques", "comments"} <= set(alert)
    assert sorted(everything) == sorted((i, parse_timestamp(a["lastUpdateTime"])) for i, a in truth["alerts"].items())
    assert_no_throttling(simulator)


@pytest.mark.parametrize("simulator", [SIM], indirect=True)
def test_filter_literals_are_exact_at_the_seventh_digit(simulator, tmp_path):
    truth = simulator.ground_truth()
    # An interval that starts exactly at one alert's 7-digit time and ends exactly at
    # another's: the first is in, the second is out.
    times = sorted({parse_timestamp(a["lastUpdateTime"]) for a in truth["alerts"].values()})
    low, high = times[10], times[20]
    with simulator_client(simulator, tmp_path) as client:
        listing = list_interval(client, format_timestamp(low), format_timestamp(high), 10_000)
    listed = {t for _, t in listed_versions(listing.alerts)}
    assert min(listed) == low and high not in listed
    assert set(listed_versions(listing.alerts)) == {
        (i, t) for i, a in truth["alerts"].items() if low <= (t := parse_timestamp(a["lastUpdateTime"])) < high
    }


class AdvancingClient:
    """The real client; before chosen requests the simulator updates alerts (to now)."""

    def __init__(self, client, sim, before):
        self.client, self.sim, self.before = client, sim, before
        self.requests = []

    @property
    def tenant_id(self):
        return self.client.tenant_id

    def list_alerts_page(self, **params):
        self.before(self, params)
        self.requests.append(params)
        return self.client.list_alerts_page(**params)

    def get_next_link(self, url):
        return self.client.get_next_link(url)


@pytest.mark.parametrize("simulator", [SIM], indirect=True)
def test_updates_while_paging_are_neither_lost_nor_repeated(simulator, tmp_path):
    before_truth = simulator.ground_truth()
    advanced = []

    def analyst_updates(client, params):
        if not client.requests:
            return
        cursor = parse_timestamp(params["filter"].split(" ")[2])
        group = sorted(
            i for i, a in client.sim.ground_truth()["alerts"].items() if parse_timestamp(a["lastUpdateTime"]) == cursor
        )
        # The dangerous ones first: two alerts already read at the cursor timestamp
        # while $skip counts positions there (the one-alert overlap absorbs a single
        # move; two would make a blind skip jump over an unread alert). Then some
        # alerts anywhere in the data.
        ids = group[:2] if params["skip"] > 0 else []
        ids += [i for i in sorted(before_truth["alerts"])[len(client.requests) * 7 :: 40][:2] if i not in ids]
        advanced.extend(change["id"] for change in client.sim.advance(ids=ids)["advanced"])

    listings = {}
    with simulator_client(simulator, tmp_path) as client:
        for start, end in HOURS:
            listing = list_interval(AdvancingClient(client, simulator, analyst_updates), start, end, page_size=7)
            listings[(start, end)] = listing
        # The next interval, after the run: everything updated "now".
        now = datetime.now(timezone.utc)
        tail = (HOURS[-1][1], now + timedelta(hours=1))
        listings[tail] = list_interval(client, *tail, page_size=10_000)

    truth = simulator.ground_truth()
    assert len(set(advanced)) >= 20
    assert sum(l.stats.group_resyncs for l in listings.values()) >= 1

    seen = {}
    for (start, end), listing in listings.items():
        listed = listed_versions(listing.alerts)
        assert len({i for i, _ in listed}) == len(listed), "an alert twice in one interval"
        for alert_id, ticks in listed:
            history = {parse_timestamp(v["lastUpdateTime"]) for v in truth["alerts"][alert_id]["versions"]}
            assert ticks in history, "a version that never existed"
            assert (alert_id, ticks) not in seen, "one version listed twice"
            seen[(alert_id, ticks)] = (start, end)
            current = parse_timestamp(truth["alerts"][alert_id]["lastUpdateTime"])
            if ticks != current:  # an older version only if the alert has left this interval
                assert current >= parse_timestamp(end.isoformat())
    for alert_id, alert in truth["alerts"].items():
        assert (alert_id, parse_timestamp(alert["lastUpdateTime"])) in seen, f"{alert_id} lost"
    assert_no_throttling(simulator)


@pytest.mark.parametrize("simulator", [{**SIM, "next_link": True, "default_top": 10}], indirect=True)
def test_next_links_from_the_service_are_followed(simulator, tmp_path):
    truth = simulator.ground_truth()
    with simulator_client(simulator, tmp_path) as client:
        listing = list_interval(client, HOURS[0][0], HOURS[-1][1], page_size=9)
    assert listing.stats.next_link_pages >= 10
    assert sorted(listed_versions(listing.alerts)) == sorted(truth_versions(truth, HOURS[0][0], HOURS[-1][1]))
    assert_no_throttling(simulator)
