"""Hourly commits to fail or kill at each step (tests/lake/test_lake_commit_record.py, lake_child.py).

Each scenario prepares a lake (``setup``) and then makes one commit (``commit``), the one
the tests fail or kill. ``truth(scenario)`` is what the hour holds when the same setup and
commit ran without a fault, on a scratch local lake: the exact content every faulted run
must reach once the next writer has recovered.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import pyarrow as pa
from lake_data import TENANT, sample_listing

from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.schema import SCHEMAS

HOUR = datetime(2024, 2, 29, 22, tzinfo=timezone.utc)
OTHER_HOUR = HOUR + timedelta(hours=1)  # same day: a next writer of the day
DAY = "2024-02-29"
# Every step of commit_log, in order (commit_log.commit_checkpoint names).
STEPS = ["staged", "recorded", "applied alert_ips", "applied alerts", "unrecorded"]


def _tables(listed, results, *, listed_at, found_at=None):
    return interval_tables(listed, results, tenant_id=TENANT, interval_start=HOUR, listed_at=listed_at, found_by_lookback_at=found_at)


_LISTED, _RESULTS = sample_listing(HOUR, alerts=12, ips_per_alert=3, seed=41)
ON_TIME = 8  # the first 8 versions were listed by the hour's own run; the rest came late


def _errors(results):
    """The same results with every answer an 'error' (an outage during a rerun)."""
    return [{**r, "status": "error", "ips": [], "invalid_ip_values": [], "error": "HTTP 500"} for r in results]


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Callable
    commit: Callable


def _own_hour(location):
    commit_interval(location, HOUR, _tables(_LISTED[:ON_TIME], _RESULTS[:ON_TIME], listed_at=HOUR + timedelta(hours=1)))
    commit_interval(location, OTHER_HOUR, interval_tables(*sample_listing(OTHER_HOUR, seed=42), tenant_id=TENANT,
                                                          interval_start=OTHER_HOUR, listed_at=OTHER_HOUR + timedelta(hours=1)))  # fmt: skip


def _lookback(location):
    """The issue's case: a look-back adds the hour's late versions (with their IPs)."""
    found = HOUR + timedelta(hours=2, minutes=5)
    tables = _tables(_LISTED[ON_TIME:], _RESULTS[ON_TIME:], listed_at=found, found_at=found)
    return commit_interval(location, HOUR, tables, keep_versions=True, only_if_committed=True)


def _rerun_in_an_outage(location):
    """A rerun listing every version while the service answers 500: the held answers stay,
    the late versions come in as 'error'."""
    rerun = HOUR + timedelta(hours=9)
    return commit_interval(location, HOUR, _tables(_LISTED, _errors(_RESULTS), listed_at=rerun), keep_versions=True)


def _refetch(location):
    """A refetch listing fewer versions with new answers: the hour loses versions (the
    case no order of the two writes covers: readers must leave a half-written hour out)."""
    rerun = HOUR + timedelta(hours=10)
    fresh = [{**r, "fetched_at": rerun.isoformat()} for r in _RESULTS[:5]]
    return commit_interval(location, HOUR, _tables(_LISTED[:5], fresh, listed_at=rerun))


def _compacted_setup(location):
    _own_hour(location)
    for table in SCHEMAS:
        compact_day(location, table, DAY)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("lookback", _own_hour, _lookback),
        Scenario("rerun_in_an_outage", _own_hour, _rerun_in_an_outage),
        Scenario("refetch", _own_hour, _refetch),
        Scenario("compacted_lookback", _compacted_setup, _lookback),
    )
}


def hour_rows(location, hour: datetime = HOUR) -> dict[str, pa.Table]:
    return {table: read_interval(location, table, hour) for table in SCHEMAS}


def truth(scenario: Scenario) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """(the hour before the commit, the hour after it), both without a fault."""
    with tempfile.TemporaryDirectory() as root:
        location = resolve_lake_location(f"{root}/lake").for_tenant(TENANT)
        scenario.setup(location)
        before = hour_rows(location)
        scenario.commit(location)
        return before, hour_rows(location)
