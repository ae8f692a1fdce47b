"""The status document as text (``make status``): times in UTC to the second, rates in
whole calls, a reason beside every part that could not be read, and missing hours
counted from the first hour the tenant loaded."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

BAR_WIDTH = 30


def bar(share: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(share * width)))
    return "[" + "#" * filled + "." * (width - filled) + f"] {share * 100:5.1f}%"


def when(value: str | float | None) -> str:
    """An ISO time or epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC (no microseconds)."""
    if value is None:
        return "none"
    moment = (datetime.fromtimestamp(value, timezone.utc) if isinstance(value, (int, float))
              else datetime.fromisoformat(value).astimezone(timezone.utc))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def rate(value: float) -> str:
    """Calls per hour as a person says them: whole calls with thousands separators
    (1499.583 -> "1,500": the limiter's 1 s margin is no news), one decimal under 10."""
    if abs(value) >= 10:
        return f"{round(value):,}"
    return f"{round(value, 1):g}"


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _budget_lines(budget: dict[str, Any] | None, why: str | None) -> list[str]:
    if budget is None:
        return [f"  budget: not read ({why or 'no reason given'})"]
    lines = [f"  budget ({budget['ledger_key']}):"]
    if not budget["ledger_exists"]:
        lines.append(f"    no ledger at {budget['ledger_path']} yet: no run on this host has spent budget")
    for w in budget["windows"]:
        lines.append(
            f"    {int(w['seconds']):>5d} s window: {w['calls']:>6,d} / {w['effective_limit']:<6,d} "
            f"{bar(w['calls'] / w['effective_limit'], 20)}  backfill {w['backfill_calls']:,d} / {w['backfill_limit']:,d}"
        )
    minutes = budget["per_minute"]
    lines.append(f"    sustained rate: {rate(budget['sustained_calls_per_hour'])} calls/hour")
    lines.append(f"    last 24 h: {minutes['calls_24h']:,} calls, {minutes['throttled_24h']:,} answered 429")
    if budget["blocked_until"]:
        lines.append(f"    BLOCKED by a 429 until {when(budget['blocked_until'])} ({budget['blocked_seconds_left']:.0f} s left)")
    if budget.get("backfills_held_until"):
        lines.append(f"    an hourly load waits for the budget: backfills get no call until {when(budget['backfills_held_until'])}")
    return lines


def _backfill_lines(backfills: list[dict[str, Any]], why: str | None) -> list[str]:
    if why:
        return [f"  backfills: not read ({why})"]
    if not backfills:
        return ["  backfills: none in progress"]
    lines = ["  backfills:"]
    for b in backfills:
        kind = "estimated" if b["is_estimate"] else "from listings"
        lines += [
            f"    #{b['id']} {when(b['from_date'])} -> {when(b['to_date'])}{' (paused)' if b['is_paused'] else ''}",
            f"      {bar(b['progress'])}  {b['hours_done']} done, {b['hours_failed']} failed, "
            f"{b['hours_left']} left of {count(b['hours_total'], 'hour')}",
            f"      IP calls left: {b['ip_calls_left']:,} ({kind}); ETA {when(b['eta'])} "
            f"at {rate(b['calls_per_hour_for_backfill'])} calls/hour",
        ]
    return lines


def _missing_lines(lake: dict[str, Any]) -> list[str]:
    """Holes since the first hour the tenant loaded (not since the retention window's start)."""
    since = lake.get("since_first_loaded") or {}
    first, counted_from = since.get("first_loaded_hour"), since.get("counted_from")
    if first is None:
        return []
    label = (f"since first load {when(first)}" if first == counted_from else
             f"since the retention window's first hour {when(counted_from)} (first load {when(first)} is older)")
    ranges = since["missing_ranges_total"]
    newest = ", the newest 3" if ranges > 3 else ""
    lines = [f"    {label}: {count(since['hours_committed'], 'hour')} committed, {since['hours_missing']:,} missing"
             + (f" in {count(ranges, 'range')}{newest}:" if ranges else "")]
    shown = [r for r in lake["missing_ranges"] if r[0] >= counted_from][-3:]
    lines += [f"      missing {when(start)} -> {when(end)}" for start, end in shown]
    return lines


def retention_text(days: int | None) -> str:
    """The lake's retention setting in words (Variable mde_lake_retention_days)."""
    if days is None:
        return "retention: keeps everything (Variable mde_lake_retention_days unset)"
    return f"retention: keeps today and the {days} days before it, UTC (Variable mde_lake_retention_days = {days})"


def _lake_lines(lake: dict[str, Any] | None, why: str | None) -> list[str]:
    if lake is None:
        return [f"  lake: could not be read ({why or 'no reason given'})"]
    lines = [f"  lake ({lake['root']}):"]
    if lake["latest_committed_hour"] is None:
        lines.append("    no hour committed yet")
    else:
        lag = f" (lag {lake['lag_hours']:.1f} h)" if lake["lag_hours"] is not None else ""
        lines.append(f"    latest committed hour: {when(lake['latest_committed_hour'])}{lag}")
    lines += _missing_lines(lake)
    lines.append(f"    oldest day kept: {lake.get('oldest_day_kept') or 'none'} ({retention_text(lake.get('lake_retention_days'))})")
    pending = lake.get("hours_pending_commit") or []
    if pending:  # an interrupted commit: the next run (or compaction) finishes it
        lines.append(f"    {count(len(pending), 'hour')} pending commit (left out of the views until the next run finishes it): "
                     + ", ".join(when(hour) for hour in pending[:5]) + (" ..." if len(pending) > 5 else ""))
    if lake["rows_per_day"]:
        lines.append("    last days:   date        hours   alerts  alert_ips")
        for day in lake["rows_per_day"][-7:]:
            lines.append(f"                 {day['date']}  {day['hours']:>5d} {day['alerts']:>8,d} {day['alert_ips']:>10,d}")
    return lines


def _connections_hint(status: dict[str, Any]) -> list[str]:
    """Tenants of the Variable whose connection this process lacks (``make run`` keeps its
    connections in its own processes): where their figures can be seen by id."""
    lacking = [t["conn_id"] for t in status["tenants"] if t.get("name") and t["tenant_id"] is None
               and "AirflowNotFoundException" in (t.get("unavailable") or {}).get("tenant_id", "")]
    if not lacking:
        return []
    return [f"hint: set {', '.join('AIRFLOW_CONN_' + conn.upper() for conn in lacking)} to see "
            f"{'that tenant' if len(lacking) == 1 else 'those tenants'} by name, or run `make status` without "
            "AIRFLOW_VAR_MDE_TENANTS to see every tenant the budget ledger and the lake hold, by id"]


def render(status: dict[str, Any]) -> str:
    """The document as text: times in UTC to the second, a reason beside every part not read."""
    named = any(tenant.get("name") for tenant in status["tenants"])
    lines = [f"MDE alert IPs{'' if named else ', DAG ' + status['dag_id']}: status at {when(status['generated_at'])} UTC "
             "(all times in UTC)"]
    if status.get("tenants_from") == "ledger_and_lake":
        lines.append("tenants: every tenant the budget ledger and the lake hold (none configured in this process; "
                     "default rate limits)")
    shown = set()
    for tenant in status["tenants"]:
        why = tenant.get("unavailable") or {}
        shown.update(why.values())
        name = (f"{tenant['name']} (DAG {tenant['dag_id']}, connection {tenant['conn_id']}): "
                if tenant.get("name") else "")
        tenant_id = tenant["tenant_id"] or f"id unknown ({why.get('tenant_id', 'no reason given')})"
        lines.append(f"tenant {name}{tenant_id}")
        lines += (_budget_lines(tenant["budget"], why.get("budget")) + _backfill_lines(tenant["backfills"], why.get("backfills"))
                  + _lake_lines(tenant["lake"], why.get("lake")))
    lines += [f"note: {error}" for error in status["errors"] if error not in shown]  # the rest: not said yet
    lines += _connections_hint(status)
    return "\n".join(lines)
