"""``make status``: the operator's view in the terminal (the same document as ``/mde``).

    python -m mde_pipeline.airflow.status.cli [--json] [--lake ROOT] [--ledger-dir DIR]

Reads the budget ledger and the lake directly, and Airflow's metadata DB when this
process has one (``make status`` uses the repo's ``.airflow/``, the home of ``make run``
and ``make ui``). One section per tenant of Variable ``mde_tenants`` (here: only from
``AIRFLOW_VAR_MDE_TENANTS``), each from its connection ``mde_<name>`` and its lake
partition. Without tenants and without connection ``mde_default`` in this process,
every budget the ledger holds and every tenant the lake holds are shown (default limits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

from mde_pipeline.api.ledgers import LEDGER_FILE_NAME

BAR_WIDTH = 30


def bar(share: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(share * width)))
    return "[" + "#" * filled + "." * (width - filled) + f"] {share * 100:5.1f}%"


def _budget_lines(budget: dict[str, Any] | None) -> list[str]:
    if budget is None:
        return ["  budget: no ledger found"]
    lines = [f"  budget ({budget['ledger_key']}):"]
    for w in budget["windows"]:
        lines.append(
            f"    {int(w['seconds']):>5d} s window: {w['calls']:>5d} / {w['effective_limit']:<5d} "
            f"{bar(w['calls'] / w['effective_limit'], 20)}"
        )
    minutes = budget["per_minute"]
    lines.append(f"    last 24 h: {minutes['calls_24h']} calls, {minutes['throttled_24h']} answered 429")
    if budget["blocked_until"]:
        until = datetime.fromtimestamp(budget["blocked_until"], timezone.utc).isoformat(timespec="seconds")
        lines.append(f"    BLOCKED by a 429 until {until} ({budget['blocked_seconds_left']:.0f} s left)")
    return lines


def _backfill_lines(backfills: list[dict[str, Any]]) -> list[str]:
    if not backfills:
        return ["  backfills: none in progress"]
    lines = ["  backfills:"]
    for b in backfills:
        kind = "estimated" if b["is_estimate"] else "from listings"
        lines += [
            f"    #{b['id']} {b['from_date'][:16]} -> {b['to_date'][:16]}{' (paused)' if b['is_paused'] else ''}",
            f"      {bar(b['progress'])}  {b['hours_done']} done, {b['hours_failed']} failed, "
            f"{b['hours_left']} left of {b['hours_total']} hours",
            f"      IP calls left: {b['ip_calls_left']} ({kind}); ETA {b['eta'][:16]} UTC "
            f"at {b['calls_per_hour_for_backfill']:.0f} calls/hour",
        ]
    return lines


def _lake_lines(lake: dict[str, Any] | None) -> list[str]:
    if lake is None:
        return ["  lake: could not be read"]
    lines = [
        f"  lake ({lake['root']}):",
        f"    latest committed hour: {lake['latest_committed_hour'] or 'none'}"
        + (f" (lag {lake['lag_hours']} h)" if lake["lag_hours"] is not None else ""),
        f"    retention window: {lake['hours_committed']} hours committed, {lake['hours_missing']} missing"
        + (f" in {lake['missing_ranges_total']} ranges" if lake["missing_ranges_total"] else ""),
    ]
    for start, end in lake["missing_ranges"][-3:]:
        lines.append(f"      missing {start[:13]} -> {end[:13]}")
    if lake["rows_per_day"]:
        lines.append("    last days:   date        hours   alerts  alert_ips")
        for day in lake["rows_per_day"][-7:]:
            lines.append(f"                 {day['date']}  {day['hours']:>5d} {day['alerts']:>8d} {day['alert_ips']:>10d}")
    return lines


def render(status: dict[str, Any]) -> str:
    lines = [f"MDE alert IPs: status at {status['generated_at'][:19]} UTC (DAG {status['dag_id']})"]
    for tenant in status["tenants"]:
        name = f"{tenant['name']} ({tenant['dag_id']}, connection {tenant['conn_id']}): " if tenant.get("name") else ""
        lines.append(f"tenant {name}{tenant['tenant_id'] or '(unknown)'}")
        lines += _budget_lines(tenant["budget"]) + _backfill_lines(tenant["backfills"]) + _lake_lines(tenant["lake"])
    for error in status["errors"]:
        lines.append(f"note: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the status document (docs/OPERATORS.md)")
    parser.add_argument("--lake", help="lake root (default: Variable mde_lake_root, then <repo>/lake)")
    parser.add_argument("--ledger-dir", help="budget ledger directory (default: the connection's, then $AIRFLOW_HOME/mde_rate_ledger)")
    args = parser.parse_args(argv)

    from mde_pipeline.airflow.lake_location import configured_lake_location
    from mde_pipeline.airflow.status.report import build_status

    location = configured_lake_location(args.lake) if args.lake else None
    ledger = os.path.join(args.ledger_dir, LEDGER_FILE_NAME) if args.ledger_dir else None
    status = build_status(location=location, ledger_path=ledger)
    print(json.dumps(status, indent=1) if args.json else render(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
