"""Conversion of the service's records into the lake's Arrow schemas."""

from __future__ import annotations

import json

from datetime import datetime, timedelta, timezone

import pendulum
import pyarrow as pa
import pytest

from mde_pipeline.lake import schema
from mde_pipeline.lake.records import alert_ip_records, alert_record, check_interval, interval_tables, to_table
from mde_pipeline.lake.schema import (
    ALERT_IPS,
    ALERT_IPS_SCHEMA,
    ALERTS,
    ALERTS_SCHEMA,
    LakeSchemaError,
    empty_table,
    parse_timestamp,
)

UTC = timezone.utc
START = datetime(2024, 5, 6, 7, tzinfo=UTC)
HOUR = timedelta(hours=1)

FULL_ALERT = {
    "id": "da638000000000000000_-123456789",
    "incidentId": 1234,
    "investigationId": 99,
    "assignedTo": "secop@contoso.com",
    "severity": "High",
    "status": "New",
    "classification": "TruePositive",
    "determination": "Malware",
    "investigationState": "Running",  # not a lake column: ignored
    "detectionSource": "WindowsDefenderAv",
    "detectorId": "17e10bbc-3a68-474a-8aad-faef14d43952",
    "category": "Execution",
    "threatFamilyName": "Mikatz",
    "threatName": "HackTool:Win32/Mikatz",
    "title": "Suspicious process",
    "description": "A process did something",
    "alertCreationTime": "2024-05-06T07:01:02.1234567Z",
    "firstEventTime": "2024-05-06T06:59:00Z",
    "lastEventTime": "2024-05-06T07:00:59.9999999Z",
    "lastUpdateTime": "2024-05-06T07:30:00.0000001Z",
    "resolvedTime": None,
    "machineId": "111e6dd8c833c8a052ea231ec1b19adaf497b625",
    "computerDnsName": "host1.contoso.com",
    "rbacGroupName": "Servers",
    "aadTenantId": "a839b112-1253-6432-9bf6-94542403f21c",
    "relatedUser": {"userName": "alice", "domainName": "CONTOSO"},
    "comments": [
        {"comment": "looking", "createdBy": "bob@contoso.com", "createdTime": "2024-05-06T07:10:00.7654321Z"},
        {"comment": None, "createdBy": None, "createdTime": None},
    ],
    "evidence": [{"entityType": "Ip", "ipAddress": "10.0.0.1"}],
    "mitreTechniques": ["T1059.001", "T1003"],
}

MINIMAL_ALERT = {"id": "636688558380765161_2136280442", "lastUpdateTime": "2024-05-06T07:59:59.9999999Z"}


def fetch_result(alert, status="ok", ips=(), invalid=(), fetched_at="2024-05-06T08:05:00.123456+00:00"):
    """The shape mde_pipeline.api.fetch.fetch_batch_ips returns (common.fetch_result.FetchResult)."""
    return {
        "alert_id": alert["id"],
        "last_update_time": alert["lastUpdateTime"],
        "status": status,
        "ips": [list(pair) for pair in ips],
        "invalid_ip_values": list(invalid),
        "fetched_at": fetched_at,
    }


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2020-01-26T20:33:57.7220239Z", datetime(2020, 1, 26, 20, 33, 57, 722023, tzinfo=UTC)),
        ("2020-01-26T20:33:57.9999999Z", datetime(2020, 1, 26, 20, 33, 57, 999999, tzinfo=UTC)),  # truncated, not rounded
        ("2020-01-26T20:33:57.72Z", datetime(2020, 1, 26, 20, 33, 57, 720000, tzinfo=UTC)),
        ("2020-01-26T20:33:57Z", datetime(2020, 1, 26, 20, 33, 57, tzinfo=UTC)),
        ("2020-01-26T20:33:57", datetime(2020, 1, 26, 20, 33, 57, tzinfo=UTC)),  # the service's times are UTC
        ("2020-01-26T22:33:57.1+02:00", datetime(2020, 1, 26, 20, 33, 57, 100000, tzinfo=UTC)),
        ("2020-01-26T18:03:57-0230", datetime(2020, 1, 26, 20, 33, 57, tzinfo=UTC)),
        (" 2020-01-26 20:33:57.0000001z ", datetime(2020, 1, 26, 20, 33, 57, tzinfo=UTC)),
    ],
)
def test_service_timestamps_parse_to_utc_microseconds(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_aware_datetimes_are_converted_to_plain_utc():
    moment = pendulum.datetime(2024, 1, 1, 12, tz="America/New_York")
    parsed = parse_timestamp(moment)
    assert parsed == datetime(2024, 1, 1, 17, tzinfo=UTC)
    assert type(parsed) is datetime


@pytest.mark.parametrize(
    "value",
    # More than 7 fractional digits: the one parser (common.timestamps) refuses them; the
    # lake's own parser used to truncate them.
    [datetime(2024, 1, 1), "2024-13-01T00:00:00Z", "2024-01-01", "now", 1704067200, b"2024", "2020-01-26T20:33:57.000000001Z"],
)
def test_bad_timestamps_are_errors(value):
    with pytest.raises(LakeSchemaError):
        parse_timestamp(value)


def test_timestamp_errors_name_the_field():
    with pytest.raises(LakeSchemaError, match="^alert x: lastUpdateTime: "):
        parse_timestamp("2024-13-01T00:00:00Z", field="alert x: lastUpdateTime")


def test_null_timestamp_stays_null():
    assert parse_timestamp(None) is None


# --------------------------------------------------------------------------- alerts rows


def test_full_alert_becomes_snake_case_row():
    record = alert_record(
        FULL_ALERT,
        tenant_id="tenant-1",
        interval_start=START,
        listed_at="2024-05-06T08:00:01.5Z",
        ips_status="ok",
        ip_count=2,
        invalid_ip_values=["not-an-ip"],
        fetched_at="2024-05-06T08:05:00Z",
    )
    table = to_table(ALERTS, [record])
    assert table.schema == ALERTS_SCHEMA
    row = table.to_pylist()[0]
    assert row["alert_id"] == FULL_ALERT["id"]
    assert row["incident_id"] == 1234 and row["investigation_id"] == 99
    assert row["detection_source"] == "WindowsDefenderAv"
    assert row["threat_family_name"] == "Mikatz"
    assert row["computer_dns_name"] == "host1.contoso.com"
    assert row["aad_tenant_id"] == FULL_ALERT["aadTenantId"]
    assert row["related_user_name"] == "alice" and row["related_user_domain"] == "CONTOSO"
    assert row["mitre_techniques"] == ["T1059.001", "T1003"]
    assert row["alert_creation_time"] == datetime(2024, 5, 6, 7, 1, 2, 123456, tzinfo=UTC)
    assert row["last_update_time"] == datetime(2024, 5, 6, 7, 30, 0, 0, tzinfo=UTC)
    assert row["resolved_time"] is None
    assert row["comments"] == [
        {"comment": "looking", "created_by": "bob@contoso.com", "created_time": datetime(2024, 5, 6, 7, 10, 0, 765432, tzinfo=UTC)},
        {"comment": None, "created_by": None, "created_time": None},
    ]
    assert row["ips_status"] == "ok" and row["ip_count"] == 2 and row["invalid_ip_values"] == ["not-an-ip"]
    assert row["interval_start"] == START
    assert row["listed_at"] == datetime(2024, 5, 6, 8, 0, 1, 500000, tzinfo=UTC)
    assert "evidence" not in row and "investigation_state" not in row


def test_minimal_alert_has_nulls_and_null_lists():
    record = alert_record(MINIMAL_ALERT, tenant_id="t", interval_start=START, listed_at=START, ips_status="not_found", ip_count=0)
    row = to_table(ALERTS, [record]).to_pylist()[0]
    assert row["mitre_techniques"] is None and row["comments"] is None and row["invalid_ip_values"] is None
    assert row["related_user_name"] is None and row["incident_id"] is None and row["fetched_at"] is None


def row_of(alert, **overrides):
    options = dict(tenant_id="t", interval_start=START, listed_at=START, ips_status="ok", ip_count=0)
    return alert_record(alert, **{**options, **overrides})


def test_numeric_ids_as_strings_are_accepted_and_other_values_recorded_as_problems():
    record = row_of({**MINIMAL_ALERT, "incidentId": "42"}, ips_status="empty")
    assert record["incident_id"] == 42 and record["field_problems"] is None
    for bad in (True, "4x2", 4.5, 2**70):
        record = row_of({**MINIMAL_ALERT, "incidentId": bad}, ips_status="empty")
        assert record["incident_id"] is None
        (problem,) = record["field_problems"]
        assert problem.startswith("incidentId: expected an integer")


@pytest.mark.parametrize("change", [{"id": None}, {"id": 5}, {"lastUpdateTime": "yesterday"}])
def test_an_alert_without_its_identity_is_an_error(change):
    with pytest.raises(LakeSchemaError, match="id|lastUpdateTime"):
        row_of({**FULL_ALERT, **change})


@pytest.mark.parametrize(
    "change, columns, message",
    [
        ({"mitreTechniques": "T1003"}, ["mitre_techniques"], "mitreTechniques: expected a list"),
        ({"comments": {"comment": "x"}}, ["comments"], "comments: expected a list"),
        ({"relatedUser": "alice"}, ["related_user_name", "related_user_domain"], "relatedUser: expected an object"),
        ({"severity": 3}, ["severity"], "severity: expected a string, got int"),
        ({"incidentId": 12.5}, ["incident_id"], "incidentId: expected an integer, got 12.5"),
        ({"alertCreationTime": "2024-05-06"}, ["alert_creation_time"], "alertCreationTime: not an ISO 8601"),
        ({"firstEventTime": 1714980000}, ["first_event_time"], "firstEventTime: expected an ISO 8601"),
        ({"resolvedTime": "9999-12-31T23:59:59-05:00"}, ["resolved_time"], "resolvedTime: timestamp out of range"),
    ],
)
def test_a_field_that_does_not_fit_is_null_recorded_and_kept_in_raw(change, columns, message):
    record = row_of({**FULL_ALERT, **change})
    assert [record[c] for c in columns] == [None] * len(columns)
    (problem,) = record["field_problems"]
    assert problem.startswith(message)
    assert json.loads(record["raw"]) == json.loads(json.dumps({**FULL_ALERT, **change}))
    assert to_table(ALERTS, [record]).num_rows == 1  # the row lands


def test_missing_last_update_time_is_refused_by_the_table():
    record = alert_record({"id": "x"}, tenant_id="t", interval_start=START, listed_at=START, ips_status="ok", ip_count=0)
    with pytest.raises(LakeSchemaError, match="last_update_time"):
        to_table(ALERTS, [record])


def test_unknown_ips_status_is_an_error():
    with pytest.raises(LakeSchemaError, match="ips_status"):
        alert_record(MINIMAL_ALERT, tenant_id="t", interval_start=START, listed_at=START, ips_status="failed", ip_count=0)


# --------------------------------------------------------------------------- alert_ips rows


def test_alert_ip_rows_carry_alert_attributes_and_versions():
    rows = alert_ip_records(row_of(FULL_ALERT), [["10.1.2.3", 4], ["2001:db8::1", 6], "10.1.2.3"], fetched_at="2024-05-06T08:05:00Z")
    table = to_table(ALERT_IPS, rows)
    assert table.schema == ALERT_IPS_SCHEMA
    assert table.column("ip").to_pylist() == ["10.1.2.3", "2001:db8::1"]  # distinct
    assert table.column("ip_version").to_pylist() == [4, 6]
    assert table.column("ip_version").type == pa.int8()
    assert table.column("ip_scope").to_pylist() == ["private", "documentation"]
    first = table.to_pylist()[0]
    assert first["alert_last_update_time"] == datetime(2024, 5, 6, 7, 30, tzinfo=UTC)
    assert first["incident_id"] == 1234 and first["severity"] == "High" and first["machine_id"] == FULL_ALERT["machineId"]


@pytest.mark.parametrize(
    "ip, message",
    [
        ("2001:DB8::1", "not canonical"),
        ("2001:db8:0::1", "not canonical"),
        ("fe80::1%eth0", "not canonical"),
        (" 10.0.0.1", "not an IP"),
        ("10.0.0.0/8", "not an IP"),
        ("host.example", "not an IP"),
        (17, "expected an IP string"),
        ([17, 4], "expected a string"),
        (["10.0.0.1"], "expected an IP string"),
    ],
)
def test_non_canonical_ips_never_reach_the_lake(ip, message):
    with pytest.raises(LakeSchemaError, match=message):
        alert_ip_records(row_of(FULL_ALERT), [ip], fetched_at=START)


def test_ip_version_must_match_the_address():
    with pytest.raises(LakeSchemaError, match="IPv4, not IPv6"):
        alert_ip_records(row_of(FULL_ALERT), [["10.0.0.1", 6]], fetched_at=START)


# --------------------------------------------------------------------------- tables


def test_to_table_rejects_unknown_columns_and_unknown_tables():
    with pytest.raises(LakeSchemaError, match="unknown columns"):
        to_table(ALERT_IPS, [{"tenant_id": "t", "alertId": "x"}])
    with pytest.raises(LakeSchemaError, match="unknown lake table"):
        to_table("ips", [])


def test_to_table_rejects_values_of_the_wrong_type():
    rows = alert_ip_records(row_of(FULL_ALERT), ["10.0.0.1"], fetched_at=START)
    rows[0]["ip_version"] = 400  # does not fit int8
    with pytest.raises(LakeSchemaError, match="do not fit"):
        to_table(ALERT_IPS, rows)


@pytest.mark.parametrize("name, expected", [(ALERTS, ALERTS_SCHEMA), (ALERT_IPS, ALERT_IPS_SCHEMA)])
def test_empty_tables_have_the_full_schema(name, expected):
    table = empty_table(name)
    assert table.num_rows == 0 and table.schema == expected
    assert to_table(name, []).schema == expected


def test_schemas_match_the_design():
    """docs/DESIGN.md "Schemas": names, order, types, required columns."""
    ts = "timestamp[us, tz=UTC]"
    assert [(f.name, str(f.type), f.nullable) for f in ALERT_IPS_SCHEMA] == [
        ("tenant_id", "string", False), ("alert_id", "string", False), ("ip", "string", False),
        ("ip_version", "int8", False), ("alert_last_update_time", ts, False), ("alert_creation_time", ts, True),
        ("severity", "string", True), ("incident_id", "int64", True), ("machine_id", "string", True),
        ("interval_start", ts, False), ("fetched_at", ts, False), ("found_by_lookback_at", ts, True),
        ("ip_scope", "string", True),
    ]  # fmt: skip
    required = [f.name for f in ALERTS_SCHEMA if not f.nullable]
    assert required == ["tenant_id", "alert_id", "last_update_time", "ips_status", "ip_count", "interval_start", "listed_at"]
    assert str(ALERTS_SCHEMA.field("comments").type) == f"list<item: struct<comment: string, created_by: string, created_time: {ts}>>"
    assert str(ALERTS_SCHEMA.field("mitre_techniques").type) == "list<item: string>"
    assert ALERTS_SCHEMA.field("ip_count").type == pa.int32()
    assert len(ALERTS_SCHEMA) == 38
    added = ["ips_error", "field_problems", "raw", "found_by_lookback_at"]
    assert ALERTS_SCHEMA.names[-4:] == added  # appended, all optional
    assert not any(ALERTS_SCHEMA.field(n).nullable is False for n in added)
    for field in list(ALERTS_SCHEMA) + list(ALERT_IPS_SCHEMA):
        if pa.types.is_timestamp(field.type):
            assert field.type == pa.timestamp("us", tz="UTC"), field.name


def test_a_file_from_before_the_added_columns_reads_with_nulls_there():
    old = empty_table(ALERTS).drop_columns(["ips_error", "field_problems", "raw", "found_by_lookback_at"])
    upgraded = schema.conform(ALERTS, old)
    assert upgraded.schema == ALERTS_SCHEMA
    for added in (["found_by_lookback_at", "ip_scope"], ["ip_scope"]):
        assert schema.conform(ALERT_IPS, empty_table(ALERT_IPS).drop_columns(added)).schema == ALERT_IPS_SCHEMA
    with pytest.raises(LakeSchemaError, match="missing"):
        schema.conform(ALERTS, empty_table(ALERTS).drop_columns(["raw", "title"]))


def new_ip_rows(ips: list[str]) -> pa.Table:
    return to_table(ALERT_IPS, alert_ip_records(row_of(FULL_ALERT), ips, fetched_at="2024-05-06T08:05:00Z"))


def test_new_ip_rows_carry_their_scope():
    table = new_ip_rows(["8.8.8.8", "10.0.0.1", "100.64.0.1", "fe80::1", "2606:4700::1", "127.0.0.1"])
    assert dict(zip(table.column("ip").to_pylist(), table.column("ip_scope").to_pylist())) == {
        "8.8.8.8": "global", "10.0.0.1": "private", "100.64.0.1": "shared", "fe80::1": "link_local",
        "2606:4700::1": "global", "127.0.0.1": "loopback",
    }  # fmt: skip
    assert table.column("ip_scope").null_count == 0


def test_conform_computes_ip_scope_for_rows_from_before_the_column():
    """An old file's rows get ip_scope from ip wherever the lake rewrites them (merge,
    compaction, the IP index all read through conform); a value already there stays."""
    new = new_ip_rows(["8.8.8.8", "10.0.0.1", "8.8.4.4"])
    old = pa.concat_tables([new.slice(0, 1), new.slice(1)]).drop_columns(["ip_scope"])  # two chunks
    assert schema.conform(ALERT_IPS, old).column("ip_scope").to_pylist() == ["global", "private", "global"]
    index = new.schema.get_field_index("ip_scope")
    kept = new.set_column(index, new.schema.field(index), pa.array(["private", None, None], pa.string()))
    assert schema.conform(ALERT_IPS, kept).column("ip_scope").to_pylist() == ["private", "private", "global"]
    assert schema.conform(ALERT_IPS, empty_table(ALERT_IPS).drop_columns(["ip_scope"])).num_rows == 0
    broken = old.set_column(2, "ip", pa.array(["8.8.8.8", "not an ip", "8.8.4.4"]))
    with pytest.raises(LakeSchemaError, match="alert_ips: ip: .*not an ip"):
        schema.conform(ALERT_IPS, broken.append_column(new.schema.field(index), pa.nulls(3, pa.string())))


def test_conform_reports_type_and_column_differences():
    table = empty_table(ALERT_IPS)
    wrong_type = table.set_column(3, "ip_version", pa.array([], pa.int64()))
    with pytest.raises(LakeSchemaError, match="ip_version: int64"):
        schema.conform(ALERT_IPS, wrong_type)
    with pytest.raises(LakeSchemaError, match="missing"):
        schema.conform(ALERT_IPS, table.drop_columns(["ip"]))


# --------------------------------------------------------------------------- intervals


def test_interval_tables_from_listing_and_fetch_results():
    alerts = [FULL_ALERT, MINIMAL_ALERT, {**MINIMAL_ALERT, "id": "gone", "lastUpdateTime": "2024-05-06T07:00:00Z"}]
    results = [
        fetch_result(FULL_ALERT, ips=[("10.0.0.1", 4), ("2001:db8::1", 6)], invalid=["x.y"]),
        fetch_result(MINIMAL_ALERT, status="empty"),
        fetch_result(alerts[2], status="not_found"),
    ]
    tables = interval_tables(alerts, reversed(results), tenant_id="t", interval_start=START, listed_at="2024-05-06T08:00:00Z")
    assert tables[ALERTS].schema == ALERTS_SCHEMA and tables[ALERT_IPS].schema == ALERT_IPS_SCHEMA
    by_id = {row["alert_id"]: row for row in tables[ALERTS].to_pylist()}
    assert {k: (v["ips_status"], v["ip_count"], v["invalid_ip_values"]) for k, v in by_id.items()} == {
        FULL_ALERT["id"]: ("ok", 2, ["x.y"]),
        MINIMAL_ALERT["id"]: ("empty", 0, []),
        "gone": ("not_found", 0, []),
    }
    assert by_id["gone"]["fetched_at"] == datetime(2024, 5, 6, 8, 5, 0, 123456, tzinfo=UTC)
    assert tables[ALERT_IPS].column("ip").to_pylist() == ["10.0.0.1", "2001:db8::1"]
    check_interval(tables, START, HOUR)  # consistent by construction


def test_interval_tables_refuse_a_listed_alert_without_ip_result():
    with pytest.raises(LakeSchemaError, match="no IP result for listed alert"):
        interval_tables([FULL_ALERT, MINIMAL_ALERT], [fetch_result(FULL_ALERT)], tenant_id="t", interval_start=START, listed_at=START)


def test_interval_tables_refuse_a_result_without_listed_alert():
    with pytest.raises(LakeSchemaError, match="without a listed alert"):
        interval_tables([FULL_ALERT], [fetch_result(FULL_ALERT), fetch_result(MINIMAL_ALERT)], tenant_id="t", interval_start=START, listed_at=START)


def test_interval_tables_match_results_by_alert_version():
    newer = {**FULL_ALERT, "lastUpdateTime": "2024-05-06T07:45:00Z"}
    with pytest.raises(LakeSchemaError, match="no IP result"):
        interval_tables([newer], [fetch_result(FULL_ALERT)], tenant_id="t", interval_start=START, listed_at=START)


def test_interval_tables_refuse_duplicate_results_and_ips_on_a_404():
    with pytest.raises(LakeSchemaError, match="two IP results"):
        interval_tables([FULL_ALERT], [fetch_result(FULL_ALERT)] * 2, tenant_id="t", interval_start=START, listed_at=START)
    with pytest.raises(LakeSchemaError, match="status 'not_found' with 1 IPs"):
        interval_tables([FULL_ALERT], [fetch_result(FULL_ALERT, status="not_found", ips=[("10.0.0.1", 4)])], tenant_id="t", interval_start=START, listed_at=START)


def test_interval_tables_need_a_tenant():
    with pytest.raises(LakeSchemaError, match="tenant_id"):
        interval_tables([], [], tenant_id="", interval_start=START, listed_at=START)


def test_empty_interval_gives_empty_tables_with_full_schema():
    tables = interval_tables([], [], tenant_id="t", interval_start=START, listed_at=START)
    assert tables[ALERTS].num_rows == 0 and tables[ALERTS].schema == ALERTS_SCHEMA
    assert tables[ALERT_IPS].num_rows == 0 and tables[ALERT_IPS].schema == ALERT_IPS_SCHEMA
    check_interval(tables, START, HOUR)


# --------------------------------------------------------------------------- check_interval


def _tables(**changes):
    alerts = [FULL_ALERT, MINIMAL_ALERT]
    results = [fetch_result(FULL_ALERT, ips=[("10.0.0.1", 4), ("10.0.0.2", 4)]), fetch_result(MINIMAL_ALERT, status="empty")]
    return interval_tables(alerts, results, tenant_id="t", interval_start=START, listed_at=START)


def test_check_interval_refuses_rows_of_another_interval():
    tables = _tables()
    with pytest.raises(LakeSchemaError, match="interval_start"):
        check_interval(tables, START + HOUR, HOUR)


def test_check_interval_refuses_alert_versions_outside_the_interval():
    late = {**MINIMAL_ALERT, "lastUpdateTime": "2024-05-06T08:00:00Z"}  # the next interval's first instant
    tables = interval_tables([late], [fetch_result(late, status="empty")], tenant_id="t", interval_start=START, listed_at=START)
    with pytest.raises(LakeSchemaError, match="outside"):
        check_interval(tables, START, HOUR)


def test_check_interval_refuses_duplicate_rows():
    tables = _tables()
    doubled = {ALERTS: tables[ALERTS], ALERT_IPS: pa.concat_tables([tables[ALERT_IPS], tables[ALERT_IPS].slice(0, 1)])}
    with pytest.raises(LakeSchemaError, match="duplicate rows"):
        check_interval(doubled, START, HOUR)
    doubled = {ALERTS: pa.concat_tables([tables[ALERTS], tables[ALERTS].slice(1, 1)]), ALERT_IPS: tables[ALERT_IPS]}
    with pytest.raises(LakeSchemaError, match="duplicate rows"):
        check_interval(doubled, START, HOUR)


def test_check_interval_refuses_ip_rows_that_disagree_with_ip_count():
    tables = _tables()
    with pytest.raises(LakeSchemaError, match="ip_count differs"):
        check_interval({ALERTS: tables[ALERTS], ALERT_IPS: tables[ALERT_IPS].slice(0, 1)}, START, HOUR)
    with pytest.raises(LakeSchemaError, match="without their alert"):
        check_interval({ALERTS: tables[ALERTS].slice(1, 1), ALERT_IPS: tables[ALERT_IPS]}, START, HOUR)


def test_check_interval_needs_both_tables():
    with pytest.raises(LakeSchemaError, match="all tables"):
        check_interval({ALERTS: _tables()[ALERTS]}, START, HOUR)
