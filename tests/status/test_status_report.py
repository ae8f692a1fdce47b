"""The status document over a prepared lake and ledger: every figure equals the data."""

from __future__ import annotations

import json
import re
import sqlite3
from html import escape
from datetime import datetime, timedelta, timezone

import pytest

from mde_pipeline.airflow.status.page import render_page
from mde_pipeline.airflow.status.report import SCHEMA_VERSION, build_status, reason
from mde_pipeline.airflow.status.text import rate, render, when
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, SqliteLedger
from mde_pipeline.api.rate_limiter import RateLimiter
from mde_pipeline.api.windows import Window
from mde_pipeline.lake.lake_status import LakeStatusCache
from mde_pipeline.lake.location import resolve_lake_location
from status_data import TENANT, connection, prepare

NOW = datetime(2026, 3, 10, 14, 25, 30, tzinfo=timezone.utc)


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    expected = prepare(tmp_path, NOW)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", connection(expected))
    return expected


def backfill(hours_left: list[datetime]):
    def active(dag_id):
        assert dag_id == "mde_alert_ips"
        return [{"id": 7, "from_date": "2026-03-01T00:00:00+00:00", "to_date": "2026-03-02T00:00:00+00:00",
                 "is_paused": False, "created_at": "2026-03-09T00:00:00+00:00", "hours_total": 24,
                 "hours_done": 20, "hours_failed": 1, "hours_left": len(hours_left), "hours_running": 1,
                 "hours_skipped": 0, "intervals_left": [h.isoformat() for h in hours_left]}]
    return active


def status_of(expected, **kwargs):
    kwargs.setdefault("backfills", backfill([]))
    return build_status(now=NOW, location=resolve_lake_location(expected.lake_root), cache=LakeStatusCache(), **kwargs)


def test_budget_figures_equal_the_ledger(prepared):
    status = status_of(prepared)
    assert status["schema_version"] == SCHEMA_VERSION and status["errors"] == []
    [tenant] = status["tenants"]
    budget = tenant["budget"]
    assert tenant["tenant_id"] == TENANT and budget["ledger_key"] == prepared.key
    minute, hour = budget["windows"]
    assert (minute["seconds"], minute["limit"], minute["effective_limit"], minute["calls"]) == (60, 100, 100, prepared.calls_minute)
    assert (hour["seconds"], hour["limit"], hour["calls"]) == (3600, 1500, prepared.calls_hour)
    assert budget["per_minute"]["calls_24h"] == prepared.calls_24h
    assert budget["per_minute"]["throttled_24h"] == prepared.throttled_24h
    assert budget["blocked_until"] == pytest.approx(prepared.blocked_until)
    assert budget["sustained_calls_per_hour"] == pytest.approx(1500 * 3600 / 3601, abs=1e-3)
    assert [w["backfill_calls"] for w in budget["windows"]] == prepared.backfill_calls
    assert [w["backfill_limit"] for w in budget["windows"]] == prepared.backfill_limits
    assert budget["backfills_held_until"] == pytest.approx(prepared.backfills_held_until)


def test_budget_figures_come_from_a_shared_redis_ledger_too(tmp_path, monkeypatch):
    from local_redis import PASSWORD, RedisServer
    from mde_pipeline.api.redis_ledger import RedisLedger
    from status_data import fill_ledger

    expected = prepare(tmp_path, NOW, ledger_now=False)
    with RedisServer(tmp_path / "redis") as server:
        ledger = RedisLedger(server.url)
        fill_ledger(expected, NOW, ledger)
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
        monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", connection(expected, rate_limit_ledger=server.url))
        status = status_of(expected)
        ledger.close()
    assert status["errors"] == []
    budget = status["tenants"][0]["budget"]
    assert [w["calls"] for w in budget["windows"]] == [expected.calls_minute, expected.calls_hour]
    assert [w["backfill_calls"] for w in budget["windows"]] == expected.backfill_calls
    assert [w["backfill_limit"] for w in budget["windows"]] == expected.backfill_limits
    assert budget["backfills_held_until"] == pytest.approx(expected.backfills_held_until)
    assert (budget["per_minute"]["calls_24h"], budget["per_minute"]["throttled_24h"]) == (expected.calls_24h, 3)
    assert budget["blocked_until"] == pytest.approx(expected.blocked_until)
    assert PASSWORD not in budget["ledger_path"] and budget["ledger_path"].startswith("redis://")


def test_lake_figures_equal_what_was_committed(prepared):
    lake = status_of(prepared)["tenants"][0]["lake"]
    assert lake["latest_committed_hour"] == prepared.latest_hour.isoformat()
    assert lake["hours_committed"] == prepared.hours_committed
    assert lake["hours_missing"] == prepared.hours_missing
    assert {d["date"]: {k: d[k] for k in ("hours", "alerts", "alert_ips")} for d in lake["rows_per_day"]} == prepared.rows_per_day
    assert lake["alerts_per_hour_recent"] == prepared.alerts_per_hour_recent
    hour = NOW.replace(minute=0, second=0, microsecond=0)
    gaps = [r for r in lake["missing_ranges"] if r[0] > (hour - timedelta(hours=49)).isoformat()]
    assert gaps == [[(hour - timedelta(hours=h)).isoformat(), (hour - timedelta(hours=h - 1)).isoformat()] for h in (17, 5)]


def test_backfill_calls_left_use_staged_listings_and_estimate_the_rest(prepared):
    from mde_pipeline.lake.staging import write_staging_json

    location = resolve_lake_location(prepared.lake_root).for_tenant(TENANT)  # where list_alerts stages
    listed = datetime(2026, 3, 1, 22, tzinfo=timezone.utc)
    write_staging_json(location, listed, "backfill__x", "listing", {"alerts": [{"id": str(i)} for i in range(40)]})
    left = [listed, listed + timedelta(hours=1)]
    [run] = status_of(prepared, backfills=backfill(left))["tenants"][0]["backfills"]
    estimate = round(prepared.alerts_per_hour_recent)
    assert (run["ip_calls_left_exact"], run["ip_calls_left_estimated"]) == (40, estimate)
    assert run["is_estimate"] and run["listing_calls_left"] == 1
    rate = 1500 * 3600 / 3601 - prepared.alerts_per_hour_recent - 1
    assert run["eta_seconds"] == round((40 + estimate + 1) / rate * 3600)
    assert run["progress"] == pytest.approx(21 / 24, abs=1e-4)
    assert "intervals_left" not in run


def test_a_source_that_fails_is_an_error_line_not_a_failure(prepared):
    def broken(dag_id):
        raise RuntimeError("no metadata DB")

    status = status_of(prepared, backfills=broken)
    assert status["errors"] == ["Airflow metadata (backfills): RuntimeError: no metadata DB"]
    assert status["tenants"][0]["backfills"] == [] and status["tenants"][0]["lake"] is not None


def test_day_figures_are_cached_until_the_day_changes(prepared, monkeypatch):
    from mde_pipeline.lake import lake_status

    cache, location = LakeStatusCache(), resolve_lake_location(prepared.lake_root).for_tenant(TENANT)
    calls = []
    real = lake_status._day_figures
    monkeypatch.setattr(lake_status, "_day_figures", lambda *a: calls.append(a[2]) or real(*a))
    cache.table_figures(location, "alerts")
    first = len(calls)
    cache.table_figures(location, "alerts")
    assert first >= 2 and len(calls) == first  # nothing changed: no footer read
    from lake_data import sample_interval
    from mde_pipeline.lake.commit import commit_interval

    hour = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    commit_interval(location, hour, sample_interval(hour, alerts=2, tenant=TENANT))
    cache.table_figures(location, "alerts")
    assert calls[first:] == [hour.strftime("%Y-%m-%d")]


def test_every_tenant_of_the_variable_has_its_budget_and_its_lake_partition(tmp_path, monkeypatch):
    # Two tenants, one lake root, one ledger file: each section holds only its own figures.
    ours = prepare(tmp_path, NOW, tenant="tenant-one", client="client-one", seed=1)
    theirs = prepare(tmp_path, NOW, tenant="tenant-two", client="client-two", seed=2)
    assert ours.rows_per_day != theirs.rows_per_day  # else the test could not tell them apart
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_VAR_MDE_TENANTS", '["one", "two"]')
    monkeypatch.setenv("AIRFLOW_CONN_MDE_ONE", connection(ours, tenant="tenant-one", client="client-one"))
    monkeypatch.setenv("AIRFLOW_CONN_MDE_TWO", connection(theirs, tenant="tenant-two", client="client-two"))
    asked = []
    status = build_status(now=NOW, location=resolve_lake_location(ours.lake_root),
                          backfills=lambda dag_id: asked.append(dag_id) or [])
    assert status["errors"] == [] and asked == ["mde_alert_ips_one", "mde_alert_ips_two"]
    one, two = status["tenants"]
    for entry, expected, name in ((one, ours, "one"), (two, theirs, "two")):
        assert (entry["name"], entry["conn_id"], entry["dag_id"]) == (name, f"mde_{name}", f"mde_alert_ips_{name}")
        assert entry["tenant_id"] == f"tenant-{name}" and entry["budget"]["ledger_key"] == expected.key
        lake = entry["lake"]
        assert {d["date"]: {k: d[k] for k in ("hours", "alerts", "alert_ips")} for d in lake["rows_per_day"]} == expected.rows_per_day
        assert lake["alerts_per_hour_recent"] == expected.alerts_per_hour_recent
    html = render_page(status, "/mde")
    assert "mde_alert_ips_two" in html and "<code>tenant-one</code>" in html


def test_a_bad_tenants_variable_is_an_error_line_and_the_default_tenant_is_shown(prepared, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_MDE_TENANTS", '["ok", "not ok"]')
    status = status_of(prepared)
    assert len(status["errors"]) == 1 and status["errors"][0].startswith("Variable mde_tenants: TenantsConfigError")
    [tenant] = status["tenants"]
    assert tenant["tenant_id"] == TENANT and tenant["dag_id"] == "mde_alert_ips" and tenant["lake"] is not None


def test_without_a_connection_every_tenant_of_the_ledger_and_the_lake_is_shown(tmp_path, monkeypatch):
    ours = prepare(tmp_path, NOW, tenant="tenant-one", client="client-one", seed=1)
    prepare(tmp_path, NOW, tenant="tenant-two", client="client-two", seed=2, ledger_now=False)  # lake only
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MDE_DEFAULT", raising=False)
    status = status_of(ours, ledger_path=str(ours.ledger_dir / LEDGER_FILE_NAME))
    # mde_default is not used (the ledger and the lake stand in for it): no error about it.
    assert status["errors"] == [] and status["tenants_from"] == "ledger_and_lake"
    one, two = status["tenants"]
    assert (one["tenant_id"], one["budget"]["ledger_key"]) == ("tenant-one", ours.key)
    assert (two["tenant_id"], two["budget"]) == ("tenant-two", None)
    assert two["unavailable"]["budget"].startswith("no calls of this tenant in the budget ledger")
    assert "mde_default" not in render(status)
    assert one["lake"]["rows_per_day"] != two["lake"]["rows_per_day"] and two["lake"]["hours_committed"] > 0


def test_the_page_shows_the_figures(prepared):
    status = status_of(prepared, backfills=backfill([datetime(2026, 3, 1, 5, tzinfo=timezone.utc)]))
    html = render_page(status, "/mde")
    assert f'data-testid="t0-window-60-calls">{prepared.calls_minute}<' in html
    assert f'data-testid="t0-hours-missing">{prepared.hours_missing}<' in html
    assert 'data-testid="t0-hours-missing-since-first-loaded">2<' in html and "calls/hour" in html
    assert 'src="/mde/static/plotly.min.js"' in html and 'data-testid="t0-backfill-7-left">1<' in html
    assert 'data-testid="t0-backfills-held">2026-03-10T14:26:33+00:00' in html


def test_the_limiter_keeps_a_bounded_per_minute_history(tmp_path):
    ledger = SqliteLedger(tmp_path / LEDGER_FILE_NAME)

    class Clock:
        t = 1_000_000.0

        def now(self):
            return self.t

        def sleep(self, seconds):
            self.t += seconds

    clock = Clock()
    limiter = RateLimiter([Window(1000, 60)], key="k", ledger=ledger, clock=clock, margin_seconds=0)
    for _ in range(3):
        limiter.acquire()
    limiter.record_throttle(5)
    clock.t += 25 * 3600  # a day later: the old minutes go with the next write
    limiter.acquire()
    rows = sqlite3.connect(tmp_path / LEDGER_FILE_NAME).execute("SELECT minute, calls, throttled FROM minutes").fetchall()
    assert rows == [(int(clock.t // 60), 1, 0)]


# ---- make status as text (status.text), and the figures it is made of ------------------------

def test_missing_hours_count_from_the_first_loaded_hour(prepared):
    lake = status_of(prepared)["tenants"][0]["lake"]
    first = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=48)
    assert lake["since_first_loaded"] == {
        "first_loaded_hour": first.isoformat(), "counted_from": first.isoformat(),
        "hours_committed": 46, "hours_missing": 2, "missing_ranges_total": 2,
    }
    assert lake["hours_missing"] == prepared.hours_missing  # the retention window's count is kept


def test_an_hour_older_than_the_retention_window_counts_from_the_window(prepared):
    from lake_data import sample_interval
    from mde_pipeline.lake.commit import commit_interval

    old = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(days=200)
    location = resolve_lake_location(prepared.lake_root).for_tenant(TENANT)
    commit_interval(location, old, sample_interval(old, alerts=1, tenant=TENANT))
    lake = status_of(prepared)["tenants"][0]["lake"]
    since = lake["since_first_loaded"]
    assert since["first_loaded_hour"] == old.isoformat()
    assert since["counted_from"] == lake["retention_window"]["first_hour"]
    assert since["hours_missing"] == lake["hours_missing"] == prepared.hours_missing
    assert (f"since the retention window's first hour {when(since['counted_from'])} (first load {when(old.isoformat())} is older): "
            f"{since['hours_committed']} hours committed, {since['hours_missing']:,} missing in") in render(status_of(prepared))


def test_the_text_reads_plainly(prepared):
    status = status_of(prepared, backfills=backfill([datetime(2026, 3, 1, 5, tzinfo=timezone.utc)]))
    assert status["tenants"][0]["backfills"][0]["eta"].count(".") == 1  # microseconds in the JSON
    text = render(status)
    assert "since first load 2026-03-08 14:00:00: 46 hours committed, 2 missing in 2 ranges:" in text
    assert "missing 2026-03-09 21:00:00 -> 2026-03-09 22:00:00" in text  # the hours skipped on purpose
    assert "missing 2026-03-10 09:00:00 -> 2026-03-10 10:00:00" in text
    assert str(prepared.hours_missing) not in text  # the retention window's count is not the headline
    assert "sustained rate: 1,500 calls/hour" in text and "at 1,494 calls/hour" in text  # 1499.58, 1494.39
    assert "latest committed hour: 2026-03-10 13:00:00 (lag 0.4 h)" in text
    # NOW is 14:25:30; the load's minute frees at 14:26:28.5, plus the 5 s grace.
    assert "an hourly load waits for the budget: backfills get no call until 2026-03-10 14:26:33" in text
    assert "#7 2026-03-01 00:00:00 -> 2026-03-02 00:00:00" in text
    assert not re.search(r"\d\d:\d\d:\d\d\.\d|\+00:00", text)  # times to the second
    assert "note:" not in text and "unknown" not in text


def test_every_part_not_read_has_its_reason_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_VAR_MDE_TENANTS", '["a"]')
    monkeypatch.delenv("AIRFLOW_CONN_MDE_A", raising=False)
    (tmp_path / "lake").mkdir()

    def broken(dag_id):
        raise RuntimeError("metadata DB refused Bearer abc.def-secret-token\nsecond line")

    status = build_status(now=NOW, location=resolve_lake_location(tmp_path / "lake"), backfills=broken)
    text = render(status)
    missing = "connection mde_a: AirflowNotFoundException: The conn_id `mde_a` isn't defined"
    assert f"tenant a (DAG mde_alert_ips_a, connection mde_a): id unknown ({missing})" in text
    assert f"  budget: not read ({missing})" in text
    assert "  lake: could not be read (its partition is named by the tenant id, unknown without connection mde_a)" in text
    assert "  backfills: not read (Airflow metadata (backfills): RuntimeError: metadata DB refused Bearer ***)" in text
    assert "secret-token" not in text + json.dumps(status) and "second line" not in text
    assert "note:" not in text  # each error is said once, beside what it left out
    assert status["errors"] == [missing, "Airflow metadata (backfills): RuntimeError: metadata DB refused Bearer ***"]
    assert "mde_default" not in text + json.dumps(status)  # a connection the configuration does not use
    html = render_page(status, "/mde")
    assert f'data-testid="t0-budget-unavailable">Not shown: {escape(missing)}.<' in html
    assert 'data-testid="t0-lake-unavailable">The lake could not be read: its partition is named by the tenant id' in html


def test_the_default_connection_is_named_when_nothing_stands_in_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MDE_DEFAULT", raising=False)
    (tmp_path / "lake").mkdir()
    status = build_status(now=NOW, location=resolve_lake_location(tmp_path / "lake"),
                          ledger_path=str(tmp_path / LEDGER_FILE_NAME), backfills=lambda dag_id: [])
    assert status["tenants_from"] == "configuration"
    assert [e.split(":")[0] for e in status["errors"]] == ["connection mde_default"]
    assert render(status).splitlines()[1].startswith("tenant id unknown (connection mde_default: AirflowNotFoundException")


def test_a_reason_is_one_short_redacted_line():
    exc = ValueError("cannot open AccountKey=c2VjcmV0a2V5;EndpointSuffix=x\nTraceback line")
    assert reason("lake", exc) == "lake: ValueError: cannot open AccountKey=***;EndpointSuffix=x"
    assert len(reason("lake", ValueError("x" * 1000))) == 300


def test_times_and_rates_as_the_text_shows_them():
    assert (rate(1499.583), rate(1500.0), rate(12345.5), rate(12.25), rate(2.46), rate(3.0), rate(0.04)) == (
        "1,500", "1,500", "12,346", "12", "2.5", "3", "0")
    assert when("2026-03-10T14:25:30.123456+00:00") == "2026-03-10 14:25:30"
    assert when("2026-03-10T16:25:30+02:00") == "2026-03-10 14:25:30"
    assert when(NOW.timestamp() + 0.75) == "2026-03-10 14:25:30" and when(None) == "none"


def test_an_hour_left_half_written_is_pending_not_committed_nor_missing(prepared, monkeypatch):
    """A commit that failed after its commit record: the status counts the hour as
    pending (JSON and text), neither committed nor missing, until the next writer."""
    from lake_data import sample_interval

    from mde_pipeline.lake import commit_log
    from mde_pipeline.lake.commit import commit_interval, recover_pending_commits
    from mde_pipeline.lake.commit_log import LakeCommitPending

    location = resolve_lake_location(prepared.lake_root).for_tenant(TENANT)
    hour = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    before = status_of(prepared)["tenants"][0]["lake"]

    def fail(step):
        if step == "applied alert_ips":
            raise OSError("injected")

    monkeypatch.setattr(commit_log, "commit_checkpoint", fail)
    with pytest.raises(LakeCommitPending):
        commit_interval(location, hour, sample_interval(hour, alerts=2, tenant=TENANT))
    monkeypatch.undo()
    lake = status_of(prepared)["tenants"][0]["lake"]
    assert lake["hours_pending_commit"] == [hour.isoformat()]
    assert hour.isoformat() not in str(before["missing_ranges"])  # a committed hour, rerun
    assert (lake["hours_committed"], lake["hours_missing"]) == (before["hours_committed"] - 1, before["hours_missing"])
    assert f"1 hour pending commit (left out of the views until the next run finishes it): {when(hour.isoformat())}" in render(
        status_of(prepared))
    recover_pending_commits(location)
    assert status_of(prepared)["tenants"][0]["lake"]["hours_pending_commit"] == []


# ---- issue #21: make status reads plainly, tried as a new user ----------------------------------

def demo_lake(root, hours: int = 3, tenant: str = "demo-tenant", now: datetime = NOW) -> datetime:
    """What `make run` leaves: the last ``hours`` complete hours before ``now``, through the
    pipeline's writer; returns the first hour loaded."""
    from lake_data import sample_interval
    from mde_pipeline.lake.commit import commit_interval

    location = resolve_lake_location(root).for_tenant(tenant)
    last = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    first = last - timedelta(hours=hours - 1)
    for back in range(hours):
        start = first + timedelta(hours=back)
        commit_interval(location, start, sample_interval(start, alerts=2, seed=back, tenant=tenant))
    return first


def spent(ledger_dir, key: str, calls: int, now: datetime = NOW) -> None:
    ledger = SqliteLedger(ledger_dir / LEDGER_FILE_NAME)
    for i in range(calls):
        assert ledger.reserve(key, now.timestamp() - 600 - i, [Window(10_000, 3600.0)]).wait_seconds == 0
    ledger.close()


def test_a_three_hour_demo_reads_plainly_without_its_connection(tmp_path, monkeypatch):
    # After `make run`: a lake of three hours and a ledger, no connection in this process.
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MDE_DEFAULT", raising=False)
    first = demo_lake(tmp_path / "lake")
    spent(tmp_path, "demo-tenant:demo-client", 42)
    status = build_status(now=NOW, location=resolve_lake_location(tmp_path / "lake"), cache=LakeStatusCache(),
                          ledger_path=str(tmp_path / LEDGER_FILE_NAME), backfills=lambda dag_id: [])
    text = render(status)
    assert status["errors"] == [] and status["tenants_from"] == "ledger_and_lake" and "mde_default" not in text
    assert f"since first load {when(first.isoformat())}: 3 hours committed, 0 missing\n" in text + "\n"
    lake = status["tenants"][0]["lake"]
    assert lake["hours_missing"] == 180 * 24 - 3  # the JSON keeps the retention window's count
    assert "4317" not in text and "4,317" not in text and "range" not in text
    assert "3600 s window:     42 / 1,500" in text and "sustained rate: 1,500 calls/hour" in text
    assert not re.search(r"\d\d:\d\d:\d\d\.\d|\+00:00|\d\.\d{2,} calls", text)
    assert "unknown" not in text and "note:" not in text and "hint:" not in text


def test_a_tenant_whose_connection_is_missing_is_the_only_connection_named(tmp_path, monkeypatch):
    # Tenants one and two; only mde_one is in this process: two's reasons name mde_two, and
    # nothing names mde_default, which the configuration does not use.
    ours = prepare(tmp_path, NOW, tenant="tenant-one", client="client-one", seed=1)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_VAR_MDE_TENANTS", '["one", "two"]')
    monkeypatch.setenv("AIRFLOW_CONN_MDE_ONE", connection(ours, tenant="tenant-one", client="client-one"))
    monkeypatch.delenv("AIRFLOW_CONN_MDE_TWO", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MDE_DEFAULT", raising=False)
    status = status_of(ours, backfills=lambda dag_id: [])
    text = render(status)
    missing = "connection mde_two: AirflowNotFoundException: The conn_id `mde_two` isn't defined"
    assert status["errors"] == [missing] and "mde_default" not in text + json.dumps(status)
    one, two = status["tenants"]
    assert one["unavailable"] == {} and one["lake"]["since_first_loaded"]["hours_committed"] == 46
    assert two["unavailable"] == {"tenant_id": missing, "budget": missing,
                                  "lake": "its partition is named by the tenant id, unknown without connection mde_two"}
    assert f"tenant two (DAG mde_alert_ips_two, connection mde_two): id unknown ({missing})" in text
    assert text.splitlines()[-1].startswith("hint: set AIRFLOW_CONN_MDE_TWO to see that tenant by name, or run `make status` "
                                            "without AIRFLOW_VAR_MDE_TENANTS")
    assert "note:" not in text and "MDE_ONE" not in text


def test_a_ledger_that_does_not_read_is_a_reason_beside_the_budget(prepared):
    (prepared.ledger_dir / LEDGER_FILE_NAME).write_bytes(b"not a SQLite database, " * 100)
    status = status_of(prepared)
    [tenant] = status["tenants"]
    why = f"budget ledger {prepared.ledger_dir / LEDGER_FILE_NAME}: DatabaseError: file is not a database"
    assert tenant["budget"] is None and tenant["unavailable"] == {"budget": why} and status["errors"] == [why]
    assert tenant["lake"]["hours_committed"] == prepared.hours_committed  # the rest is still shown
    text = render(status)
    assert f"  budget: not read ({why})" in text and "note:" not in text


def test_without_a_connection_the_ledger_says_why_it_shows_no_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_VAR_MDE_TENANTS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MDE_DEFAULT", raising=False)
    demo_lake(tmp_path / "lake", hours=1)
    ledger = tmp_path / "ledger" / LEDGER_FILE_NAME

    def text_of() -> tuple[dict, str]:
        status = build_status(now=NOW, location=resolve_lake_location(tmp_path / "lake"), cache=LakeStatusCache(),
                              ledger_path=str(ledger), backfills=lambda dag_id: [])
        return status, render(status)

    status, text = text_of()  # no ledger file: no run on this host has spent budget
    assert status["errors"] == [] and "mde_default" not in text
    assert f"  budget: not read (no budget ledger at {ledger} yet: no run on this host has spent budget)" in text
    ledger.parent.mkdir()
    ledger.write_bytes(b"garbage " * 100)  # a ledger that does not read: its error, beside the budget
    status, text = text_of()
    why = f"budget ledger {ledger}: DatabaseError: file is not a database"
    assert status["errors"] == [why] and f"  budget: not read ({why})" in text and "note:" not in text
    assert "since first load" in text  # the lake is still read


def test_a_domain_name_tenant_id_says_why_the_lake_is_not_read(prepared, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", connection(prepared, tenant="contoso.onmicrosoft.com"))
    status = status_of(prepared)
    [tenant] = status["tenants"]
    assert tenant["unavailable"]["lake"] == (
        "its partition is named by the tenant's GUID; extra tenant_id of mde_default is a domain name")
    text = render(status)
    assert "id unknown (connection mde_default: extra tenant_id 'contoso.onmicrosoft.com' is a domain name" in text
    assert "  lake: could not be read (its partition is named by the tenant's GUID;" in text


def test_make_status_after_a_demo_run_as_a_process(tmp_path):
    """`make status` as the process it is (the Makefile's command, a home without the run's
    connections), after a three-hour `make run`: plainly, then with the run's tenants."""
    import subprocess
    import sys

    from local_airflow import REPO, base_env

    now = datetime.now(timezone.utc)
    first = demo_lake(tmp_path / "lake", now=now)
    (tmp_path / "ledger").mkdir()
    spent(tmp_path / "ledger", "demo-tenant:demo-client", 96, now=now)
    env = {**base_env(tmp_path / "airflow"), "PYTHONPATH": str(REPO / "plugins")}

    def make_status(**extra: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "mde_pipeline.airflow.status.cli", "--lake", str(tmp_path / "lake"),
                               "--ledger-dir", str(tmp_path / "ledger")], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    text = make_status()
    assert "mde_default" not in text and "note:" not in text and "unknown" not in text
    assert re.search(rf"since first load {when(first.isoformat())}: 3 hours committed, [01] missing\n", text)  # [01]: an hour may end meanwhile
    assert "sustained rate: 1,500 calls/hour" in text and "last 24 h: 96 calls" in text
    assert "  backfills: not read (Airflow metadata (backfills): FileNotFoundError: no metadata DB at " in text
    assert not re.search(r"\d\d:\d\d:\d\d\.\d|\+00:00", text)

    text = make_status(AIRFLOW_VAR_MDE_TENANTS='["east", "west"]')
    for name in ("east", "west"):
        why = f"connection mde_{name}: AirflowNotFoundException: The conn_id `mde_{name}` isn't defined"
        assert f"tenant {name} (DAG mde_alert_ips_{name}, connection mde_{name}): id unknown ({why})" in text
        assert f"  budget: not read ({why})" in text
        assert f"  lake: could not be read (its partition is named by the tenant id, unknown without connection mde_{name})" in text
    assert "mde_default" not in text and "note:" not in text
    assert "hint: set AIRFLOW_CONN_MDE_EAST, AIRFLOW_CONN_MDE_WEST to see those tenants by name" in text


def test_oldest_day_kept_and_the_retention_setting_are_shown(prepared, monkeypatch):
    """Unset: the lake keeps everything, and says so; set: the days; a bad value: an
    error naming the Variable, the rest of the document as usual."""
    monkeypatch.delenv("AIRFLOW_VAR_MDE_LAKE_RETENTION_DAYS", raising=False)
    status = status_of(prepared)
    lake = status["tenants"][0]["lake"]
    assert lake["oldest_day_kept"] == lake["rows_per_day"][0]["date"] and lake["lake_retention_days"] is None
    assert f"oldest day kept: {lake['oldest_day_kept']} (retention: keeps everything" in render(status)
    page = render_page(status, "/mde")
    assert f'data-testid="t0-oldest-day-kept">{lake["oldest_day_kept"]}<' in page and "keeps everything" in page

    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_RETENTION_DAYS", "30")
    status = status_of(prepared)
    assert status["tenants"][0]["lake"]["lake_retention_days"] == 30 and status["errors"] == []
    assert "keeps today and the 30 days before it" in render(status)

    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_RETENTION_DAYS", "a month")
    status = status_of(prepared)
    assert status["tenants"][0]["lake"]["lake_retention_days"] is None
    assert any("mde_lake_retention_days" in error and "a month" in error for error in status["errors"])
