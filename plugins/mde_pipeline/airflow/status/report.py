"""The status document behind ``/mde/api/status`` and ``make status`` (docs/OPERATORS.md).

One function, :func:`build_status`, reads three sources and never fails as a whole: a
source that cannot be read (no connection, no metadata DB, a lake root that does not
open) leaves its section empty and adds a line to ``errors``.

ETA arithmetic: a backfill's remaining calls are its hours' IP calls (exact for hours
whose listing is already staged, else the recent committed hours' mean alerts per hour,
flagged as an estimate) plus one listing call per hour not listed yet. They are spent at
the sustained rate of the budget (the tightest window, 1,500/h by default) minus what
the hourly schedule itself needs (recent alerts per hour + one listing call).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from mde_pipeline.airflow import settings
from mde_pipeline.api.budget_status import budget_status, ledger_keys, redis_budget_status, sustained_calls_per_hour
from mde_pipeline.api.ledger_backends import safe_ledger_display
from mde_pipeline.api.redis_ledger import RedisLedger, is_redis_url
from mde_pipeline.api.tls import trust_bundle
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, default_ledger_dir
from mde_pipeline.api.windows import effective_windows, parse_rate_limits
from mde_pipeline.common.redaction import redact
from mde_pipeline.lake.lake_status import KEY_FORMAT, LakeStatusCache, lake_status
from mde_pipeline.lake.location import LakeLocation

SCHEMA_VERSION = 1
DAG_ID = "mde_alert_ips"

_CACHE = LakeStatusCache()


def _error(errors: list[str], source: str, exc: BaseException) -> None:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    errors.append(f"{source}: {type(exc).__name__}: {redact(first_line)}"[:300])


def _budgets(conn_id: str, now: float, errors: list[str], ledger_path: str | None) -> list[dict[str, Any]]:
    """One budget per tenant: the connection's, else every key the ledger holds."""
    config = None
    try:
        from mde_pipeline.airflow.hooks import MdeHook

        config = MdeHook(conn_id).get_config()
    except Exception as exc:  # no connection in this process: show what the ledger has
        _error(errors, f"connection {conn_id}", exc)
    if config is not None and is_redis_url(config.rate_limit_ledger):
        windows = config.rate_limits
        eff = effective_windows(windows, share=config.rate_limit_share, margin=config.rate_limit_margin_seconds)
        ledger = RedisLedger(config.rate_limit_ledger, ca_file=trust_bundle(config.ca_bundle))
        try:
            where = safe_ledger_display(config.rate_limit_ledger)
            budget = redis_budget_status(ledger, where, config.budget_key, windows, eff, now)
        except Exception as exc:  # Redis down: the section is empty, the error says why
            _error(errors, "budget ledger (Redis)", exc)
            budget = None
        finally:
            ledger.close()
        return [{"tenant_id": config.tenant_id, "budget": budget}]
    if config is not None:
        path = ledger_path or os.path.join(default_ledger_dir(config.rate_limit_ledger_dir), LEDGER_FILE_NAME)
        windows = config.rate_limits
        eff = effective_windows(windows, share=config.rate_limit_share, margin=config.rate_limit_margin_seconds)
        return [{"tenant_id": config.tenant_id, "budget": budget_status(path, config.budget_key, windows, eff, now)}]
    path = ledger_path or os.path.join(default_ledger_dir(), LEDGER_FILE_NAME)
    windows = parse_rate_limits(None)
    eff = effective_windows(windows, share=1.0, margin=0.0)
    return [
        {"tenant_id": key.split(":", 1)[0], "budget": budget_status(path, key, windows, eff, now)}
        for key in ledger_keys(path)
    ]


def _backfill_figures(backfill: dict[str, Any], staged: dict[str, int], lake: dict[str, Any] | None,
                      calls_per_hour: float, now: datetime) -> dict[str, Any]:
    recent = (lake or {}).get("alerts_per_hour_recent")
    exact = estimated = listing_calls = estimated_hours = 0
    for start in backfill.pop("intervals_left"):
        key = datetime.fromisoformat(start).astimezone(timezone.utc).strftime(KEY_FORMAT)
        if key in staged:
            exact += staged[key]
        else:
            listing_calls += 1
            estimated_hours += 1
            estimated += round(recent or 0)
    # The hourly schedule keeps its share: its own alerts plus one listing call an hour.
    rate = max(1.0, calls_per_hour - (recent or 0) - 1)
    calls_left = exact + estimated + listing_calls
    eta_seconds = calls_left / rate * 3600 if calls_left else 0.0
    return {
        **backfill,
        "ip_calls_left": exact + estimated,
        "ip_calls_left_exact": exact,
        "ip_calls_left_estimated": estimated,
        "is_estimate": estimated_hours > 0,
        "estimate_basis": None if not estimated_hours else (
            f"{recent} alerts/hour (mean of recent committed hours) x {estimated_hours} hours not listed yet"
            if recent is not None else "no committed hour to estimate from"
        ),
        "listing_calls_left": listing_calls,
        "calls_per_hour_for_backfill": round(rate, 2),
        "eta_seconds": round(eta_seconds),
        "eta": (now + timedelta(seconds=eta_seconds)).isoformat() if calls_left else now.isoformat(),
        "progress": round((backfill["hours_done"] + backfill["hours_failed"]) / backfill["hours_total"], 4)
        if backfill["hours_total"] else 1.0,
    }


def build_status(
    *,
    now: datetime | None = None,
    conn_id: str = settings.MDE_CONN_ID,
    dag_id: str = DAG_ID,
    location: LakeLocation | None = None,
    ledger_path: str | None = None,
    backfills: Callable[[str], list[dict[str, Any]]] | None = None,
    cache: LakeStatusCache | None = None,
) -> dict[str, Any]:
    """The status document; see docs/OPERATORS.md for its shape (``schema_version`` 1)."""
    began = time.monotonic()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    errors: list[str] = []
    cache = cache or _CACHE
    lake = staged = None
    try:
        if location is None:
            from mde_pipeline.airflow.lake_location import configured_lake_location

            location = configured_lake_location()
        lake = lake_status(location, cache, now)
        staged = cache.staged_listings(location)
    except Exception as exc:
        _error(errors, "lake", exc)
    try:
        if backfills is None:
            from mde_pipeline.airflow.status.backfills import active_backfills as backfills
        running = backfills(dag_id)
    except Exception as exc:
        _error(errors, "Airflow metadata (backfills)", exc)
        running = []
    tenants = _budgets(conn_id, now.timestamp(), errors, ledger_path)
    if not tenants:
        tenants = [{"tenant_id": None, "budget": None}]
    for tenant in tenants:
        budget = tenant["budget"]
        rate = budget["sustained_calls_per_hour"] if budget else sustained_calls_per_hour(parse_rate_limits(None))
        tenant["backfills"] = [_backfill_figures(dict(b, intervals_left=list(b["intervals_left"])), staged or {}, lake, rate, now)
                               for b in running]
        tenant["lake"] = lake
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now.isoformat(),
        "dag_id": dag_id,
        "tenants": tenants,
        "errors": errors,
        "took_seconds": round(time.monotonic() - began, 4),
    }
