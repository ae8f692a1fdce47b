"""The HTML of ``/mde``: the status document as tables, plus Plotly charts.

Figures are rendered on the server (every number carries a ``data-testid``, so the
browser test and a curious operator read the same DOM); the two charts per tenant are
drawn by Plotly.js (served by the app from the ``plotly`` wheel, no CDN) from the same
document, embedded as JSON. The page reloads itself every 60 s.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from typing import Any

from mde_pipeline.airflow.status.text import rate, retention_text


def _text(value: Any) -> str:
    return escape("—" if value is None else str(value))


def _cell(testid: str, value: Any) -> str:
    return f'<td data-testid="{escape(testid)}">{_text(value)}</td>'


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _budget(index: int, budget: dict[str, Any] | None, why: str | None) -> str:
    if budget is None:
        return f'<p data-testid="t{index}-budget-unavailable">Not shown: {_text(why or "no budget ledger found")}.</p>'
    rows = "".join(
        f"<tr><th>{_text(w['limit'])} calls / {_text(int(w['seconds']))} s</th>"
        + _cell(f"t{index}-window-{int(w['seconds'])}-calls", w["calls"])
        + _cell(f"t{index}-window-{int(w['seconds'])}-limit", w["effective_limit"])
        + f"<td>{w['used_share'] * 100:.0f}%</td>"
        + _cell(f"t{index}-window-{int(w['seconds'])}-backfill", f"{w['backfill_calls']} / {w['backfill_limit']}")
        + "</tr>"
        for w in budget["windows"]
    )
    per_minute = budget["per_minute"]
    blocked = (
        f'<p class="warn">Blocked by a 429 until <span data-testid="t{index}-blocked-until">'
        f"{_text(_when(budget['blocked_until']))}</span> ({budget['blocked_seconds_left']:.0f} s left)</p>"
        if budget["blocked_until"] else f'<p data-testid="t{index}-blocked-until">No block in force.</p>'
    )
    held = (
        f'<p>An hourly load waits for the budget: backfills get no call until <span data-testid="t{index}-backfills-held">'
        f"{_text(_when(budget['backfills_held_until']))}</span>.</p>"
        if budget.get("backfills_held_until") else ""
    )
    return (
        "<table><tr><th>window</th><th>calls now</th><th>limit (effective)</th><th>used</th>"
        "<th>of them backfill / may hold</th></tr>"
        f"{rows}</table>{blocked}{held}"
        f'<p>Last 24 h: <span data-testid="t{index}-calls-24h">{_text(per_minute["calls_24h"])}</span> calls, '
        f'<span data-testid="t{index}-throttled-24h">{_text(per_minute["throttled_24h"])}</span> answered 429. '
        f"Sustained rate: {_text(rate(budget['sustained_calls_per_hour']))} calls/hour.</p>"
        f'<div id="t{index}-budget-chart" class="chart"></div>'
    )


def _bar(progress: float) -> str:
    return f'<div class="bar"><div style="width:{progress * 100:.1f}%"></div></div>'


def _backfills(index: int, backfills: list[dict[str, Any]]) -> str:
    if not backfills:
        return '<p data-testid="t{}-no-backfill">No backfill in progress.</p>'.format(index)
    rows = "".join(
        f"<tr><td>{_text(b['id'])}</td><td>{_text(b['from_date'][:16])} → {_text(b['to_date'][:16])}</td>"
        + _cell(f"t{index}-backfill-{b['id']}-done", b["hours_done"])
        + _cell(f"t{index}-backfill-{b['id']}-failed", b["hours_failed"])
        + _cell(f"t{index}-backfill-{b['id']}-left", b["hours_left"])
        + _cell(f"t{index}-backfill-{b['id']}-ip-calls-left", b["ip_calls_left"])
        + f"<td>{'estimate' if b['is_estimate'] else 'from listings'}</td>"
        + _cell(f"t{index}-backfill-{b['id']}-eta", b["eta"][:16])
        + f"<td>{_bar(b['progress'])}</td></tr>"
        for b in backfills
    )
    return (
        "<table><tr><th>id</th><th>hours</th><th>done</th><th>failed</th><th>left</th>"
        "<th>IP calls left</th><th>basis</th><th>ETA (UTC)</th><th>progress</th></tr>"
        f"{rows}</table>"
    )


def _lake(index: int, lake: dict[str, Any] | None, why: str | None) -> str:
    if lake is None:
        return f'<p data-testid="t{index}-lake-unavailable">The lake could not be read: {_text(why or "see errors")}.</p>'
    ranges = "".join(f"<li>{_text(a[:13])} → {_text(b[:13])}</li>" for a, b in lake["missing_ranges"][-10:])
    late = lake.get("late_alerts")
    since = lake.get("since_first_loaded") or {}
    return (
        f"<p>Root: <code>{_text(lake['root'])}</code></p><table>"
        f"<tr><th>latest committed hour</th>{_cell(f't{index}-latest-hour', lake['latest_committed_hour'])}</tr>"
        f"<tr><th>lag (hours after its end)</th>{_cell(f't{index}-lag-hours', lake['lag_hours'])}</tr>"
        f"<tr><th>hours committed in the retention window</th>{_cell(f't{index}-hours-committed', lake['hours_committed'])}</tr>"
        f"<tr><th>hours missing in the retention window</th>{_cell(f't{index}-hours-missing', lake['hours_missing'])}</tr>"
        f"<tr><th>hours missing since the first loaded hour ({_text(since.get('first_loaded_hour'))})</th>"
        f"{_cell(f't{index}-hours-missing-since-first-loaded', since.get('hours_missing'))}</tr>"
        f"<tr><th>oldest day kept</th>{_cell(f't{index}-oldest-day-kept', lake.get('oldest_day_kept'))}</tr>"
        f"<tr><th>lake retention (Variable mde_lake_retention_days)</th>"
        f"{_cell(f't{index}-lake-retention', retention_text(lake.get('lake_retention_days')))}</tr>"
        f"<tr><th>late alerts found by look-backs</th>{_cell(f't{index}-late-alerts', 'not tracked yet' if late is None else late)}</tr>"
        "</table>"
        + (f"<details><summary>{lake['missing_ranges_total']} missing ranges (newest 10)</summary><ul>{ranges}</ul></details>"
           if ranges else "")
        + f'<div id="t{index}-rows-chart" class="chart"></div>'
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2937}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d1d5db;padding:.25rem .6rem;text-align:left}
.chart{width:100%;max-width:1100px;height:300px}.warn{color:#b91c1c;font-weight:600}
.bar{width:160px;height:12px;background:#e5e7eb}.bar div{height:12px;background:#2563eb}
.errors{color:#b91c1c}
"""

SCRIPT = """
const status = JSON.parse(document.getElementById('status-json').textContent);
const layout = (title) => ({title: {text: title}, margin: {t: 40, l: 50, r: 20, b: 40}, barmode: 'group'});
status.tenants.forEach((tenant, i) => {
  const b = tenant.budget;
  if (b && document.getElementById(`t${i}-budget-chart`)) {
    const rows = b.per_minute.rows, x = rows.map(r => new Date(r[0] * 1000));
    Plotly.newPlot(`t${i}-budget-chart`, [
      {x, y: rows.map(r => r[1]), type: 'bar', name: 'calls'},
      {x, y: rows.map(r => r[2]), type: 'bar', name: '429s', marker: {color: '#dc2626'}}],
      layout('Calls and 429s per minute, last 24 h'), {responsive: true, displaylogo: false});
  }
  const lake = tenant.lake;
  if (lake && document.getElementById(`t${i}-rows-chart`)) {
    const d = lake.rows_per_day;
    Plotly.newPlot(`t${i}-rows-chart`, [
      {x: d.map(r => r.date), y: d.map(r => r.alerts), type: 'bar', name: 'alerts'},
      {x: d.map(r => r.date), y: d.map(r => r.alert_ips), type: 'bar', name: 'alert_ips'}],
      layout('Rows per day'), {responsive: true, displaylogo: false});
  }
});
setTimeout(() => location.reload(), 60000);
"""


def _heading(tenant: dict[str, Any]) -> str:
    """``<code>tenant id</code>``, after the tenant's name and before its DAG (Variable mde_tenants)."""
    if not tenant.get("name"):
        return f"<code>{_text(tenant['tenant_id'])}</code>"
    return f"{_text(tenant['name'])} <code>{_text(tenant['tenant_id'])}</code> (DAG <code>{_text(tenant['dag_id'])}</code>)"


def render_page(status: dict[str, Any], base: str) -> str:
    """The page; ``base`` is where the app is mounted (``/mde``), for its own links."""
    base = base.rstrip("/")
    sections = "".join(
        f'<section data-testid="tenant-{i}"><h2>Tenant {_heading(t)}</h2>'
        f"<h3>API budget</h3>{_budget(i, t['budget'], t.get('unavailable', {}).get('budget'))}"
        f"<h3>Backfills</h3>{_backfills(i, t['backfills'])}"
        f"<h3>Lake</h3>{_lake(i, t['lake'], t.get('unavailable', {}).get('lake'))}</section>"
        for i, t in enumerate(status["tenants"])
    )
    errors = "".join(f"<li>{_text(e)}</li>" for e in status["errors"])
    # "</" inside the embedded JSON must not close the script element.
    data = json.dumps(status).replace("</", "<\\/")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>MDE alert IPs: status</title>'
        f"<style>{STYLE}</style><script src=\"{escape(base)}/static/plotly.min.js\"></script></head><body>"
        f"<h1>MDE alert IPs: operator's view</h1><p>Generated at "
        f'<span data-testid="generated-at">{_text(status["generated_at"])}</span> '
        f"(schema {status['schema_version']}; JSON at <a href=\"{escape(base)}/api/status\">{escape(base)}/api/status</a>).</p>"
        + (f'<ul class="errors" data-testid="errors">{errors}</ul>' if errors else "")
        + sections
        + f'<script type="application/json" id="status-json">{data}</script><script>{SCRIPT}</script></body></html>'
    )
