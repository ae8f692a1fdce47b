"""The DAG's staging area, on a local lake and on Azurite."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from lake_data import duckdb_read, same_rows, sample_interval, sample_listing

from mde_pipeline.lake.schema import ALERT_IPS
from mde_pipeline.lake.staging import (
    StagingNotFoundError,
    clear_staging,
    list_staging,
    read_staging,
    read_staging_json,
    sanitize_run_id,
    write_staging,
    write_staging_json,
)
from mde_pipeline.lake.writer import commit_interval, committed_intervals

START = datetime(2024, 7, 1, 5, tzinfo=timezone.utc)
SCHEDULED = "scheduled__2024-07-01T05:00:00+00:00"
BACKFILL = "backfill__2024-07-01T05:00:00+00:00"


@pytest.fixture(params=["local", pytest.param("abfs", marks=pytest.mark.slow)])
def location(request):
    return request.getfixturevalue(f"{request.param}_location")


def test_staged_table_round_trip(location):
    table = sample_interval(START)[ALERT_IPS]
    uri = write_staging(location, START, SCHEDULED, "ips-0000", table)
    assert uri == location.uri(f"_staging/20240701T05/{sanitize_run_id(SCHEDULED)}/ips-0000.parquet")
    assert read_staging(location, START, SCHEDULED, "ips-0000").equals(table)


def test_staged_json_round_trip_keeps_the_services_strings(location):
    listed, results = sample_listing(START)
    listed[0]["title"] = "ünïcode \u2028 and \"quotes\""
    write_staging_json(location, START, SCHEDULED, "listing", {"alerts": listed, "listed_at": "2024-07-01T06:00:00.1234567Z"})
    document = read_staging_json(location, START, SCHEDULED, "listing")
    assert document == {"alerts": listed, "listed_at": "2024-07-01T06:00:00.1234567Z"}
    assert document["alerts"][0]["lastUpdateTime"].endswith("Z") and len(document["alerts"][0]["lastUpdateTime"]) == 28


def test_rewriting_a_staged_name_replaces_it(location):
    write_staging(location, START, SCHEDULED, "ips-0001", pa.table({"x": [1, 2, 3]}))
    write_staging(location, START, SCHEDULED, "ips-0001", pa.table({"x": [4]}))
    assert read_staging(location, START, SCHEDULED, "ips-0001").to_pylist() == [{"x": 4}]
    assert list_staging(location, START, SCHEDULED) == ["ips-0001"]


def test_runs_of_one_interval_are_isolated_and_cleared_separately(location):
    for run_id, rows in ((SCHEDULED, [1]), (BACKFILL, [2, 2])):
        for name in ("ips-0000", "ips-0001"):
            write_staging(location, START, run_id, name, pa.table({"x": rows}))
    write_staging_json(location, START, SCHEDULED, "listing", [])
    assert list_staging(location, START, SCHEDULED) == ["ips-0000", "ips-0001"]
    assert list_staging(location, START, SCHEDULED, suffix=".json") == ["listing"]
    assert read_staging(location, START, BACKFILL, "ips-0001").num_rows == 2
    clear_staging(location, START, SCHEDULED)
    assert list_staging(location, START, SCHEDULED) == []
    assert list_staging(location, START, BACKFILL) == ["ips-0000", "ips-0001"]
    clear_staging(location, START)  # every run of the interval
    assert list_staging(location, START, BACKFILL) == []
    clear_staging(location, START)  # clearing nothing is fine


def test_missing_staged_files_are_clear_errors(location):
    with pytest.raises(StagingNotFoundError, match="ips-0009"):
        read_staging(location, START, SCHEDULED, "ips-0009")
    with pytest.raises(StagingNotFoundError, match="listing"):
        read_staging_json(location, START, SCHEDULED, "listing")
    assert list_staging(location, START + timedelta(hours=5), SCHEDULED) == []


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "_x", "x" * 200, None])
def test_bad_staging_names_are_refused(local_location, name):
    with pytest.raises(ValueError):
        write_staging(local_location, START, SCHEDULED, name, pa.table({"x": [1]}))


def test_staging_is_invisible_to_table_readers(location):
    write_staging(location, START, SCHEDULED, "alert_ips", sample_interval(START)[ALERT_IPS])
    committed = sample_interval(START - timedelta(hours=1), seed=4)
    commit_interval(location, START - timedelta(hours=1), committed)
    assert committed_intervals(location, ALERT_IPS) == [START - timedelta(hours=1)]
    assert same_rows(duckdb_read(location, ALERT_IPS).drop_columns(["date"]).cast(committed[ALERT_IPS].schema), committed[ALERT_IPS])
