"""lake/layout.py: file names of the lake and the staging area (the identity a rerun relies
on), day and month names, and the listings that read the layout back."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pendulum
import pytest

from mde_pipeline.lake.schema import LakeSchemaError
from mde_pipeline.lake.layout import (
    compacted_file_name,
    compaction_staging_directory,
    day_directory,
    day_has_data,
    day_lock_name,
    day_of,
    days_with_interval_files,
    fully_compacted_files,
    index_directory,
    interval_file,
    interval_key,
    interval_start_of,
    parse_interval_file,
    parse_interval_key,
    list_day,
    lock_file,
    month_of,
    partition_date,
    sanitize_run_id,
    staging_path,
    table_days,
)

UTC = timezone.utc


def test_interval_file_names_come_from_the_interval_alone():
    start = datetime(2024, 3, 9, 7, tzinfo=UTC)
    assert interval_file("alert_ips", start) == "alert_ips/date=2024-03-09/interval=20240309T07.parquet"
    assert interval_file("alerts", start) == "alerts/date=2024-03-09/interval=20240309T07.parquet"
    assert interval_key(start) == "20240309T07"
    assert partition_date(start) == "2024-03-09"


def test_interval_start_in_another_zone_or_as_text_names_the_same_utc_file():
    in_utc = datetime(2024, 3, 9, 23, tzinfo=UTC)
    in_plus_two = pendulum.datetime(2024, 3, 10, 1, tz="Europe/Copenhagen")  # 00:00 UTC on 10 March
    assert interval_file("alerts", in_utc) == "alerts/date=2024-03-09/interval=20240309T23.parquet"
    assert interval_file("alerts", in_plus_two) == "alerts/date=2024-03-10/interval=20240310T00.parquet"
    assert interval_file("alerts", "2024-03-09T23:00:00Z") == interval_file("alerts", in_utc)
    assert interval_file("alerts", "2024-03-10T00:00:00+01:00") == interval_file("alerts", in_utc)


@pytest.mark.parametrize(
    "value, message",
    [
        (datetime(2024, 3, 9, 7, 30, tzinfo=UTC), "whole hour"),
        (datetime(2024, 3, 9, 7, 0, 0, 1, tzinfo=UTC), "whole hour"),
        (datetime(2024, 3, 9, 7), "naive"),
        (None, "required"),
        ("yesterday", "ISO 8601"),
    ],
)
def test_interval_start_must_be_an_aware_whole_hour(value, message):
    with pytest.raises(LakeSchemaError, match=message):
        interval_start_of(value)


def test_unknown_table_has_no_file_name():
    with pytest.raises(LakeSchemaError, match="unknown lake table"):
        interval_file("alert_ip", datetime(2024, 1, 1, tzinfo=UTC))


def test_interval_file_names_parse_back():
    start = datetime(2024, 12, 31, 23, tzinfo=UTC)
    assert parse_interval_file(interval_file("alerts", start)) == start
    assert parse_interval_file("abfs://c/p/alerts/date=2024-12-31/interval=20241231T23.parquet") == start
    assert parse_interval_key("20241231T23") == start
    for other in (".interval=20241231T23.parquet.abc.tmp", "interval=20241231T23.parquet.tmp", "part-0.parquet"):
        with pytest.raises(LakeSchemaError):
            parse_interval_file(other)


def test_file_names_sort_in_time_order():
    starts = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(0, 24 * 40, 7)]
    names = [interval_file("alert_ips", s) for s in starts]
    assert sorted(names) == names


# --------------------------------------------------------------------------- run ids

AIRFLOW_RUN_IDS = [
    "scheduled__2024-01-01T00:00:00+00:00",
    "backfill__2024-01-01T00:00:00+00:00",
    "manual__2024-01-01T00:00:00.123456+00:00",
    "asset_triggered__2024-01-01T00:00:00+00:00_aBc123",
    "my run/with slashes/../and dots",
    "run with ünïcode and spaces",
    "a:b",
    "a_b",
    "a_3Ab",
    "..",
    ".",
]


@pytest.mark.parametrize("run_id", AIRFLOW_RUN_IDS)
def test_sanitised_run_id_is_one_safe_path_segment(run_id):
    segment = sanitize_run_id(run_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", segment), segment
    assert segment not in (".", "..")
    assert len(segment) <= 120


def test_sanitising_is_one_to_one():
    segments = [sanitize_run_id(run_id) for run_id in AIRFLOW_RUN_IDS]
    assert len(set(segments)) == len(AIRFLOW_RUN_IDS)
    assert sanitize_run_id("scheduled__2024-01-01T00:00:00+00:00") == "scheduled_5F_5F2024-01-01T00_3A00_3A00_2B00_3A00"


def test_long_run_ids_are_cut_with_a_hash_that_keeps_them_apart():
    first, second = "manual__" + "x" * 240 + "1", "manual__" + "x" * 240 + "2"
    assert len(sanitize_run_id(first)) <= 120
    assert sanitize_run_id(first) != sanitize_run_id(second)
    assert sanitize_run_id(first) == sanitize_run_id(first)


@pytest.mark.parametrize("run_id", ["", None, 3])
def test_run_id_is_required(run_id):
    with pytest.raises(ValueError):
        sanitize_run_id(run_id)


def test_staging_paths():
    start = datetime(2024, 1, 2, 3, tzinfo=UTC)
    run_id = "scheduled__2024-01-02T03:00:00+00:00"
    assert staging_path(start) == "_staging/20240102T03"
    assert staging_path(start, run_id) == f"_staging/20240102T03/{sanitize_run_id(run_id)}"
    assert staging_path(start, run_id, "ips-0001.parquet").endswith("/ips-0001.parquet")


# --------------------------------------------------------------------------- days, months, listings


def test_day_and_month_names():
    assert day_of(datetime(2024, 3, 9, 23, 59, tzinfo=UTC)) == "2024-03-09"
    assert day_of(pendulum.datetime(2024, 3, 10, 0, 30, tz="Europe/Copenhagen")) == "2024-03-09"
    assert day_of("2024-03-09") == "2024-03-09" and month_of("2024-03-09") == "2024-03"
    assert day_directory("alert_ips", "2024-03-09") == "alert_ips/date=2024-03-09"
    assert day_lock_name("2024-03-09") == "date=2024-03-09" and lock_file("date=2024-03-09") == "_locks/date=2024-03-09.lock"
    assert index_directory("2024-03") == "_ip_index/month=2024-03"
    assert compaction_staging_directory("alerts", "2024-03-09") == "_staging/compaction/alerts/date=2024-03-09"
    assert compacted_file_name("abc", 1) == "compacted-abc-001.parquet"
    with pytest.raises(LakeSchemaError, match="not a date"):
        day_of("2024-3-9x")
    with pytest.raises(LakeSchemaError, match="not a month"):
        index_directory("2024-3")


def _touch(location, *relative):
    import os

    for path in relative:
        full = location.path(path)
        os.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        open(full, "wb").close()


def test_listings_of_days_and_their_files(local_location):
    _touch(
        local_location,
        "alert_ips/date=2024-03-09/interval=20240309T07.parquet",
        "alert_ips/date=2024-03-09/.interval=20240309T08.parquet.abc.tmp",
        "alert_ips/date=2024-03-10/compacted-abc-000.parquet",
        "alert_ips/date=2024-03-10/_compaction.json",
        "alert_ips/date=2024-04-01/_compaction.json",
        "alert_ips/date=2024-04-01/compacted-def-000.parquet",
        "alert_ips/date=2024-04-01/interval=20240401T00.parquet",  # a half-finished swap
        "alert_ips/not-a-day/x.parquet",
    )
    (open(local_location.path("alert_ips/date=2024-03-10/_compaction.json"), "w")).write('{"intervals": {}}')
    (open(local_location.path("alert_ips/date=2024-04-01/_compaction.json"), "w")).write('{"intervals": {}}')
    assert table_days(local_location, "alert_ips") == ["2024-03-09", "2024-03-10", "2024-04-01"]
    assert table_days(local_location, "alert_ips", "2024-03") == ["2024-03-09", "2024-03-10"]
    assert table_days(local_location, "alerts") == []
    assert day_has_data(local_location, "alert_ips", "2024-03-09") and not day_has_data(local_location, "alerts", "2024-03-09")
    assert fully_compacted_files(local_location, "alert_ips", "2024-03-10") == ["compacted-abc-000.parquet"]
    assert fully_compacted_files(local_location, "alert_ips", "2024-03-09") is None
    assert fully_compacted_files(local_location, "alert_ips", "2024-04-01") is None
    assert days_with_interval_files(local_location, "alert_ips") == ["2024-03-09", "2024-04-01"]
    day = list_day(local_location, "alert_ips", "2024-03-09")
    assert list(day.interval_files) == ["20240309T07"] and not day.is_compacted and len(day.other_files) == 1
    compacted = list_day(local_location, "alert_ips", "2024-03-10")
    assert compacted.is_compacted and compacted.manifest["intervals"] == {} and len(compacted.live_files) == 2
    assert list_day(local_location, "alerts", "2024-03-10").live_files == []
