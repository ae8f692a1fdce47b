"""The operator's view in a real browser, served by a real Airflow API server.

A headless Chromium (tests/support/browser.py) loads ``/mde/`` from the api-server of an
isolated Airflow home whose lake and budget ledger the test prepared
(tests/status/status_data.py), next to a real backfill (created through the REST API,
its tasks held back by an empty pool). The figures in the DOM must equal the prepared data; the screenshot is saved under the test's tmp path.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from local_airflow import fresh_home, lake_env
from local_scheduler import AirflowServices
from status_data import connection, fill_ledger, prepare
from tests.support.browser import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_status_page_shows_the_prepared_figures(tmp_path, template_db, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    now = datetime.now(timezone.utc)
    expected = prepare(tmp_path, now, ledger_now=False)
    home = fresh_home(
        template_db, tmp_path / "airflow",
        AIRFLOW_CONN_MDE_DEFAULT=connection(expected), **lake_env(expected.lake_root),
    )
    home.import_pools()
    with AirflowServices(home) as airflow:
        airflow.set_pool("mde_api", 0)  # the backfill's tasks wait: its figures stay put
        airflow.wait_for_dag("mde_alert_ips")
        hour = now.replace(minute=0, second=0, microsecond=0)
        backfill = airflow.create_backfill("mde_alert_ips", hour - timedelta(hours=100), hour - timedelta(hours=98))
        airflow.wait_for(
            lambda: len(airflow.query("SELECT 1 FROM dag_run WHERE backfill_id = ?", (backfill["id"],))) == 3,
            120, "the backfill's three runs",
        )
        base = f"http://127.0.0.1:{airflow.api_port}"
        assert http_status(f"{base}/mde/api/status") == 401  # the REST API's credentials, or nothing
        token = airflow._token()
        fill_ledger(expected, datetime.now(timezone.utc))
        assert http_status(f"{base}/mde/api/status", token) == 200

        browser.get(f"{base}/mde/")
        assert "/auth/login" in browser.current_url  # not logged in: Airflow's login page
        browser.add_cookie({"name": "_token", "value": token, "path": "/"})  # what the login sets
        browser.get(f"{base}/mde/")
        WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == 2)
        shot = tmp_path / "mde_status.png"
        browser.save_screenshot(str(shot))
        print(f"\nscreenshot: {shot}")

        def shown(testid: str) -> str:
            return browser.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text

        status = json.loads(browser.find_element(By.ID, "status-json").get_attribute("textContent"))
        assert status["errors"] == [], status["errors"]
        assert shown("t0-window-60-calls") == str(expected.calls_minute)
        assert shown("t0-window-3600-calls") == str(expected.calls_hour)
        assert shown("t0-window-3600-limit") == "1500"
        assert shown("t0-calls-24h") == str(expected.calls_24h)
        assert shown("t0-throttled-24h") == str(expected.throttled_24h)
        assert shown("t0-blocked-until") == datetime.fromtimestamp(expected.blocked_until, timezone.utc).isoformat(timespec="seconds")
        assert shown("t0-latest-hour") == expected.latest_hour.isoformat()
        assert shown("t0-hours-committed") == str(expected.hours_committed)
        assert shown("t0-hours-missing") == str(expected.hours_missing)
        b = backfill["id"]
        assert (shown(f"t0-backfill-{b}-done"), shown(f"t0-backfill-{b}-failed"), shown(f"t0-backfill-{b}-left")) == ("0", "0", "3")
        assert shown(f"t0-backfill-{b}-ip-calls-left") == str(3 * round(expected.alerts_per_hour_recent))
        days = {d["date"]: {k: d[k] for k in ("hours", "alerts", "alert_ips")} for d in status["tenants"][0]["lake"]["rows_per_day"]}
        assert days == expected.rows_per_day
        assert shot.stat().st_size > 10_000
