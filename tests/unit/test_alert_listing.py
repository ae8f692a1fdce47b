"""Interval listing with the lastUpdateTime cursor, against an in-memory OData fake.

The fake implements the part of ``GET /api/alerts`` the listing uses ($filter on
lastUpdateTime ge/lt, $orderby, $top, $skip, optional server-side nextLink) with its own
timestamp parser, and can move alerts' lastUpdateTime forward between requests the way
the real service does when an analyst touches an alert while we page. The simulator
tests (tests/integration/test_listing_simulator.py) check the same against HTTPS.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from mde_pipeline.api.listing import ListingNotAdvancingError, list_interval
from mde_pipeline.common.timestamps import format_timestamp, parse_timestamp, ticks_to_datetime, to_ticks
from mde_pipeline.api.errors import MdeMalformedResponseError

TICK = 1  # 100 ns
SECOND = 10_000_000
HOUR = 3600 * SECOND

# --------------------------------------------------------------------------- the fake


def _fake_parse(text: str) -> int:
    """The fake's own reading of an OData literal (independent of the code under test)."""
    whole, _, rest = text.partition(".")
    if rest:
        digits, zone = rest[:-1], rest[-1]
    else:
        whole, zone, digits = whole[:-1], whole[-1], ""
    assert zone == "Z", text
    assert len(digits) <= 7, text
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * SECOND + int(digits.ljust(7, "0") or 0)


def _fake_format(ticks: int, trim: bool) -> str:
    seconds, fraction = divmod(ticks, SECOND)
    base = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:07d}"
    if trim:  # the service sometimes writes fewer digits ("...:57.72Z")
        digits = digits.rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


_FILTER = re.compile(r"^lastUpdateTime ge (\S+) and lastUpdateTime lt (\S+)$")


class FakeAlertsApi:
    """In-memory /api/alerts with OData paging, versions history and update hooks."""

    tenant_id = "tenant-of-the-fake"

    def __init__(self, alerts: dict[str, int], *, shuffle_ties: bool = False, ignore_skip: bool = False, seed: int = 1):
        self.ticks = dict(alerts)
        self.order = {alert_id: index for index, alert_id in enumerate(alerts)}  # stable tie order
        self.history = {(alert_id, ticks) for alert_id, ticks in alerts.items()}
        self.served: set[tuple[str, int]] = set()
        self.requests: list[dict] = []
        self.before_request = None  # callable(api, request) run before answering each request
        self.shuffle_ties = shuffle_ties
        self.ignore_skip = ignore_skip
        self.random = random.Random(seed)

    def move(self, alert_id: str, new_ticks: int) -> None:
        assert new_ticks > self.ticks[alert_id], "updates only move lastUpdateTime forward"
        self.ticks[alert_id] = new_ticks
        self.history.add((alert_id, new_ticks))

    def alert_json(self, alert_id: str) -> dict:
        ticks = self.ticks[alert_id]
        return {
            "id": alert_id,
            "incidentId": 7,
            "title": f"Suspicious activity {alert_id}",
            "severity": "High",
            "lastUpdateTime": _fake_format(ticks, trim=hash(alert_id) % 2 == 0),
            "alertCreationTime": "2024-01-01T00:00:00.1234567Z",
            "mitreTechniques": ["T1059.001"],
            "comments": [],
        }

    def ordered(self, ge: int, lt: int) -> list[str]:
        if self.shuffle_ties:
            key = lambda a: (self.ticks[a], self.random.random())  # noqa: E731
        else:
            key = lambda a: (self.ticks[a], self.order[a])  # noqa: E731
        return sorted((a for a, t in self.ticks.items() if ge <= t < lt), key=key)

    def list_alerts_page(self, *, filter, top, skip=0, orderby="lastUpdateTime asc", expand=None):
        assert orderby == "lastUpdateTime asc"
        assert 1 <= top <= 10_000 and skip >= 0
        match = _FILTER.match(filter)
        assert match, filter
        ge, lt = _fake_parse(match.group(1)), _fake_parse(match.group(2))
        request = {"ge": ge, "lt": lt, "top": top, "skip": skip, "filter": filter}
        if self.before_request:  # updates that land between the previous answer and this one
            self.before_request(self, request)
        self.requests.append(request)
        ids = self.ordered(ge, lt)
        start = 0 if self.ignore_skip else skip
        page = ids[start : start + top]
        self.served.update((a, self.ticks[a]) for a in page)
        return {"@odata.context": "https://fake/api/$metadata#Alerts", "value": [self.alert_json(a) for a in page]}

    def get_next_link(self, url):  # pragma: no cover - this fake never sends one
        raise AssertionError("no nextLink was sent")


class NextLinkAlertsApi(FakeAlertsApi):
    """A service that pages by itself with @odata.nextLink (server page size fixed)."""

    def __init__(self, alerts, server_page: int):
        super().__init__(alerts)
        self.server_page = server_page
        self.snapshot: list[str] = []
        self.links_followed = 0

    def list_alerts_page(self, *, filter, top, skip=0, orderby="lastUpdateTime asc", expand=None):
        match = _FILTER.match(filter)
        ge, lt = _fake_parse(match.group(1)), _fake_parse(match.group(2))
        self.requests.append({"ge": ge, "lt": lt, "top": top, "skip": skip, "filter": filter})
        self.snapshot = self.ordered(ge, lt)[skip : skip + top]
        return self._chunk(0)

    def get_next_link(self, url):
        self.links_followed += 1
        return self._chunk(int(url.rsplit("=", 1)[1]))

    def _chunk(self, offset):
        body = {"value": [self.alert_json(a) for a in self.snapshot[offset : offset + self.server_page]]}
        if offset + self.server_page < len(self.snapshot):
            body["@odata.nextLink"] = f"https://fake/api/alerts?$skiptoken={offset + self.server_page}"
        return body


# --------------------------------------------------------------------------- helpers

H0 = parse_timestamp("2024-03-10T13:00:00Z")
H1 = H0 + HOUR
H2 = H1 + HOUR


def busy_hour(count: int, seed: int = 7) -> dict[str, int]:
    """``count`` alerts in [H0, H1) with heavy timestamp collisions.

    About half share one of 400 timestamps (with 7-digit fractions), a bulk update of
    3,000 alerts shares one timestamp (larger than a 1,000 page), and alerts sit at
    exactly H0 and one tick before H1.
    """
    rng = random.Random(seed)
    popular = sorted(rng.randrange(H0, H1) for _ in range(400))
    bulk = H0 + 1800 * SECOND + 1234567
    alerts = {}
    for index in range(count):
        alert_id = f"da{638000000000000000 + index}_{rng.randrange(-2**31, 2**31)}"
        if index < 3000:
            ticks = bulk
        elif index < 3010:
            ticks = H0
        elif index < 3020:
            ticks = H1 - TICK
        elif index % 2:
            ticks = rng.choice(popular)
        else:
            ticks = rng.randrange(H0, H1)
        alerts[alert_id] = ticks
    return alerts


def versions(listing: list[dict]) -> list[tuple[str, int]]:
    return [(alert["id"], parse_timestamp(alert["lastUpdateTime"])) for alert in listing]


def assert_exact_once_per_version(api: FakeAlertsApi, intervals: dict[tuple[int, int], list[dict]]) -> None:
    """Union over consecutive intervals: every alert's current version exactly once, in
    the interval that holds it; an older version only if it was really served and the
    alert has since moved to a later interval; never one id twice in an interval."""
    all_versions = Counter()
    for (start, end), listing in intervals.items():
        listed = versions(listing)
        ids = Counter(alert_id for alert_id, _ in listed)
        assert not [a for a, n in ids.items() if n > 1], "an alert listed twice in one interval"
        for alert_id, ticks in listed:
            assert start <= ticks < end
            assert (alert_id, ticks) in api.history, "listed a version that never existed"
            all_versions[(alert_id, ticks)] += 1
            current = api.ticks[alert_id]
            if ticks != current:
                assert (alert_id, ticks) in api.served
                assert current >= end, f"{alert_id}: an older version listed while the current one is in the interval"
    assert not [v for v, n in all_versions.items() if n > 1]
    covered_start, covered_end = min(s for s, _ in intervals), max(e for _, e in intervals)
    missing = [
        (alert_id, ticks)
        for alert_id, ticks in api.ticks.items()
        if covered_start <= ticks < covered_end and (alert_id, ticks) not in all_versions
    ]
    assert not missing, f"{len(missing)} current alert versions lost, e.g. {missing[:3]}"


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "text, expected_literal",
    [
        ("2020-01-26T20:33:57.7220239Z", "2020-01-26T20:33:57.7220239Z"),
        ("2020-01-26T20:33:57.722Z", "2020-01-26T20:33:57.7220000Z"),
        ("2020-01-26T20:33:57Z", "2020-01-26T20:33:57Z"),
        ("2020-01-26T20:33:57.0000001Z", "2020-01-26T20:33:57.0000001Z"),
        ("2020-01-26T22:33:57.7220239+02:00", "2020-01-26T20:33:57.7220239Z"),
        ("2020-01-26 20:33:57+00:00", "2020-01-26T20:33:57Z"),  # how Airflow renders data_interval_start
        ("2020-01-26T20:33:57.123456+00:00", "2020-01-26T20:33:57.1234560Z"),
    ],
)
def test_timestamps_round_trip_at_100ns(text, expected_literal):
    assert format_timestamp(parse_timestamp(text)) == expected_literal


def test_seventh_digit_orders_timestamps_a_microsecond_datetime_cannot():
    a, b = parse_timestamp("2020-01-26T20:33:57.7220239Z"), parse_timestamp("2020-01-26T20:33:57.7220238Z")
    assert a - b == 1
    truncated = datetime(2020, 1, 26, 20, 33, 57, 722023, tzinfo=timezone.utc)
    assert ticks_to_datetime(a) == ticks_to_datetime(b) == truncated


@pytest.mark.parametrize(
    "bad", ["2020-01-26T20:33:57.72202391Z", "2020-01-26T20:33:57", "2020-02-30T00:00:00Z", "yesterday", "", None]
)
def test_bad_timestamps_are_errors(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_interval_bounds_from_datetimes():
    moment = datetime(2024, 3, 10, 13, 0, 0, 5, tzinfo=timezone.utc)
    assert to_ticks(moment) == H0 + 50
    assert to_ticks(moment.astimezone(timezone(timedelta(hours=-5)))) == H0 + 50
    with pytest.raises(ValueError, match="timezone-aware"):
        to_ticks(datetime(2024, 3, 10, 13))


# --------------------------------------------------------------------------- paging


@pytest.mark.parametrize("page_size", [1000, 10_000])
def test_pages_25000_alerts_with_equal_timestamps_exactly(page_size):
    alerts = busy_hour(25_000)
    api = FakeAlertsApi(alerts)
    listing = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size)

    assert sorted(versions(listing.alerts)) == sorted(alerts.items())
    assert versions(listing.alerts) == sorted(versions(listing.alerts), key=lambda v: (v[1], v[0]))
    # Each request stays under $top and the cursor only moves forward.
    assert all(r["top"] == page_size for r in api.requests)
    assert [r["ge"] for r in api.requests] == sorted(r["ge"] for r in api.requests)
    assert listing.stats.group_resyncs == 0
    # The 3,000-alert group at one timestamp is larger than a 1,000 page: $skip grows inside it.
    if page_size == 1000:
        assert max(r["skip"] for r in api.requests) >= 2000
    # All fields of the entity are kept.
    first = listing.alerts[0]
    assert first == api.alert_json(first["id"])


@pytest.mark.parametrize("churn_in_bulk_group", [False, True])
def test_updates_during_paging_lose_nothing_and_repeat_nothing(churn_in_bulk_group):
    alerts = busy_hour(25_000, seed=11)
    bulk_ticks = Counter(alerts.values()).most_common(1)[0][0]
    movable = sorted(a for a, t in alerts.items() if churn_in_bulk_group or t != bulk_ticks)
    next_hour = {f"next{i}": H1 + i * 997 * SECOND for i in range(50)}
    api = FakeAlertsApi({**alerts, **next_hour})
    rng = random.Random(3)
    moved = {"within": 0, "out": 0, "read_group": 0}

    def analysts_at_work(api: FakeAlertsApi, request: dict) -> None:
        if not api.requests:
            return
        ids = rng.sample(movable, 40)
        for alert_id in ids[:20]:  # updated, still inside the hour (later in the order)
            # Stamped later than the cursor: an update gets the current time, never a past one.
            low = max(api.ticks[alert_id], request["ge"]) + 1
            if low < H1:
                api.move(alert_id, rng.randrange(low, H1))
                moved["within"] += 1
        for alert_id in ids[20:]:  # updated "now": past the end of the interval
            if api.ticks[alert_id] < H1:
                api.move(alert_id, rng.randrange(H1, H2))
                moved["out"] += 1
        # The dangerous case: an alert already read at the cursor timestamp moves away
        # just before a request whose $skip counts positions in that group (3 times).
        if request["skip"] > 0 and moved["read_group"] < 3:
            group = api.ordered(request["ge"], request["ge"] + 1)
            api.move(group[0], rng.randrange(H1, H2))
            moved["read_group"] += 1

    api.before_request = analysts_at_work
    during = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=1000)
    api.before_request = None
    after = list_interval(api, ticks_to_datetime(H1), ticks_to_datetime(H2), page_size=1000)

    assert moved["within"] > 100 and moved["out"] > 100 and moved["read_group"] == 3
    assert during.stats.group_resyncs >= 1  # a change under $skip was noticed
    assert during.stats.versions_superseded > 0  # re-listed later in the same interval
    assert_exact_once_per_version(api, {(H0, H1): during.alerts, (H1, H2): after.alerts})


def test_ties_in_any_order_are_safe_when_groups_fit_half_a_page():
    # A service that orders equal timestamps differently on every request: groups of
    # up to half a page are re-read from $skip=0, so no skip depends on that order.
    rng = random.Random(5)
    times = [H0 + second * SECOND + rng.randrange(SECOND) for second in range(100)]
    alerts = {f"a{i}": times[i % 100] for i in range(2000)}
    assert max(Counter(alerts.values()).values()) == 20
    api = FakeAlertsApi(alerts, shuffle_ties=True)
    listing = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=100).alerts
    assert sorted(versions(listing)) == sorted(alerts.items())


def test_boundaries_at_the_seventh_digit():
    start = parse_timestamp("2020-01-26T20:00:00.0000001Z")
    end = parse_timestamp("2020-01-26T21:00:00.7220239Z")
    alerts = {
        "before": start - TICK,
        "at_start": start,
        "inside": start + 1234567,
        "last_tick": end - TICK,
        "at_end": end,
    }
    api = FakeAlertsApi(alerts)
    listing = list_interval(api, "2020-01-26T20:00:00.0000001Z", "2020-01-26T21:00:00.7220239Z", 10).alerts
    assert [a["id"] for a in listing] == ["at_start", "inside", "last_tick"]
    assert api.requests[0]["filter"] == (
        "lastUpdateTime ge 2020-01-26T20:00:00.0000001Z and lastUpdateTime lt 2020-01-26T21:00:00.7220239Z"
    )


def test_whole_second_bounds_from_airflow():
    api = FakeAlertsApi({"x": H0, "y": H1})
    listing = list_interval(api, "2024-03-10 13:00:00+00:00", "2024-03-10 14:00:00+00:00").alerts
    assert [a["id"] for a in listing] == ["x"]
    assert api.requests[0]["filter"] == (
        "lastUpdateTime ge 2024-03-10T13:00:00Z and lastUpdateTime lt 2024-03-10T14:00:00Z"
    )
    assert api.requests[0]["top"] == 10_000


def test_group_larger_than_several_pages_at_one_timestamp():
    alerts = {f"bulk{i:05d}": H0 + 5 for i in range(2_345)}
    alerts.update({f"after{i}": H0 + 10 + i for i in range(7)})
    api = FakeAlertsApi(alerts)
    listing = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=500).alerts
    assert sorted(versions(listing)) == sorted(alerts.items())
    skips = [r["skip"] for r in api.requests]
    assert skips == sorted(skips) and skips[-1] >= 1900
    assert all(r["ge"] == H0 + 5 for r in api.requests[1:])


def test_an_empty_interval_is_one_request():
    api = FakeAlertsApi({"other": H1 + 5})
    assert list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1)).alerts == []
    assert len(api.requests) == 1


def test_exactly_full_pages_end_cleanly():
    alerts = {f"a{i}": H0 + i for i in range(30)}
    api = FakeAlertsApi(alerts)
    listing = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=10).alerts
    assert len(listing) == 30
    assert len(api.requests) <= 5


def test_next_link_is_followed_when_the_service_sends_one():
    alerts = busy_hour(1000)
    api = NextLinkAlertsApi(alerts, server_page=64)
    listing = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=10_000)
    assert sorted(versions(listing.alerts)) == sorted(alerts.items())
    assert api.links_followed == 15  # ceil(1000 / 64) - 1
    assert len(api.requests) == 1
    assert listing.stats.next_link_pages == 15


def test_a_next_link_loop_is_an_error():
    class Looping(NextLinkAlertsApi):
        def get_next_link(self, url):
            body = super().get_next_link(url)
            body["@odata.nextLink"] = url
            return body

    api = Looping({f"a{i}": H0 + i for i in range(10)}, server_page=3)
    with pytest.raises(ListingNotAdvancingError, match="same @odata.nextLink"):
        list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1)).alerts


def test_a_service_ignoring_skip_stops_with_an_error_instead_of_looping():
    alerts = {f"bulk{i}": H0 + 5 for i in range(50)}
    api = FakeAlertsApi(alerts, ignore_skip=True)
    with pytest.raises(ListingNotAdvancingError, match="does not honour \\$skip"):
        list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=10).alerts
    assert len(api.requests) == 2


def test_a_read_alert_leaving_the_group_under_skip_is_noticed():
    # 30 alerts share one timestamp, pages of 10 ($skip inside the group). Just before
    # the request with $skip=9, the first alert read is updated and leaves the hour:
    # every position shifts down by one, and that skip would jump over "g10".
    alerts = {f"g{i:02d}": H0 + 5 for i in range(30)}
    api = FakeAlertsApi(alerts)

    def update_first_read(api, request):
        if request["skip"] == 9 and api.ticks["g00"] < H1:
            api.move("g00", H1 + 1)

    api.before_request = update_first_read
    listing = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=10)
    assert [a["id"] for a in listing.alerts] == [f"g{i:02d}" for i in range(30)]  # g00 at its old version
    assert listing.stats.group_resyncs == 1
    assert [r["skip"] for r in api.requests] == [0, 9, 4, 13, 22]


def test_a_group_that_keeps_changing_under_skip_is_still_listed_exactly():
    # A bulk group where, before every request, the first alert still in it is updated.
    alerts = {f"bulk{i:04d}": H0 + 5 for i in range(3000)}
    alerts.update({f"later{i}": H0 + 6 + i for i in range(10)})
    api = FakeAlertsApi(alerts)

    def churn(api, request):
        group = api.ordered(H0 + 5, H0 + 6)
        if group:
            api.move(group[0], H1 + len(api.requests))

    api.before_request = churn
    during = list_interval(api, ticks_to_datetime(H0), ticks_to_datetime(H1), page_size=100)
    api.before_request = None
    after = list_interval(api, ticks_to_datetime(H1), ticks_to_datetime(H2), page_size=100)
    assert during.stats.group_resyncs > 10
    assert_exact_once_per_version(api, {(H0, H1): during.alerts, (H1, H2): after.alerts})


@pytest.mark.parametrize(
    "page, message",
    [
        ({"value": [{"id": "a", "lastUpdateTime": "2024-03-10T12:59:59.9999999Z"}]}, "outside the requested"),
        ({"value": [{"id": "a", "lastUpdateTime": "2024-03-10T14:00:00Z"}]}, "outside the requested"),
        ({"value": [{"id": "a", "lastUpdateTime": None}]}, "bad lastUpdateTime"),
        ({"value": [{"lastUpdateTime": "2024-03-10T13:00:00Z"}]}, "without an id"),
        (
            {
                "value": [
                    {"id": "b", "lastUpdateTime": "2024-03-10T13:30:00Z"},
                    {"id": "a", "lastUpdateTime": "2024-03-10T13:10:00Z"},
                ]
            },
            "not ordered",
        ),
        ({"values": []}, "no 'value' list"),
        ({"value": ["a"]}, "non-object"),
    ],
)
def test_answers_that_break_the_cursor_contract_are_errors(page, message):
    class Canned:
        def list_alerts_page(self, **kwargs):
            return page

    with pytest.raises(MdeMalformedResponseError, match=message):
        list_interval(Canned(), ticks_to_datetime(H0), ticks_to_datetime(H1))


@pytest.mark.parametrize("page_size", [0, 1, 10_001])
def test_page_size_within_the_services_top(page_size):
    with pytest.raises(ValueError, match="page_size"):
        list_interval(FakeAlertsApi({}), ticks_to_datetime(H0), ticks_to_datetime(H1), page_size)


def test_reversed_interval_is_an_error():
    with pytest.raises(ValueError, match="reversed"):
        list_interval(FakeAlertsApi({}), ticks_to_datetime(H1), ticks_to_datetime(H0))
