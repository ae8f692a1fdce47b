"""The status document behind ``/mde/api/status`` and ``make status`` (docs/OPERATORS.md).

One function, :func:`build_status`, reads three sources and never fails as a whole: a
source that cannot be read (no connection, no metadata DB, a lake root that does not
open) leaves its section empty and adds a line to ``errors``. One entry per tenant of
Variable ``mde_tenants`` (mde_pipeline.airflow.tenants): its connection's budget, its
DAG's backfills, its partition of the lake (``tenant_id=<id>``).

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
from mde_pipeline.airflow.tenants import DEFAULT_TENANT_DAG, TENANTS_VARIABLE, TenantDag, configured_tenant_dags
from mde_pipeline.api.budget_status import budget_status, ledger_keys, redis_budget_status, sustained_calls_per_hour
from mde_pipeline.api.ledger_backends import safe_ledger_display
from mde_pipeline.api.redis_ledger import RedisLedger, is_redis_url
from mde_pipeline.api.tls import trust_bundle
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, default_ledger_dir
from mde_pipeline.api.windows import effective_windows, parse_rate_limits
from mde_pipeline.common.redaction import redact
from mde_pipeline.lake.lake_status import KEY_FORMAT, LakeStatusCache, lake_status
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.common.tenant_ids import offline_tenant_id
from mde_pipeline.lake.tenants import check_canonical_tenants, check_not_legacy, lake_tenants, replace_tenant

SCHEMA_VERSION = 1
DAG_ID = settings.DAG_ID  # without Variable mde_tenants; else one DAG per tenant

_CACHES: dict[str | None, LakeStatusCache] = {}


def reason(source: str, exc: BaseException, limit: int = 300) -> str:
    """``<source>: <exception type>: <first line of its message, redacted>``, at most ``limit`` chars."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{source}: {type(exc).__name__}: {redact(first_line)}"[:limit]


def _error(errors: list[str], source: str, exc: BaseException) -> str:
    line = reason(source, exc)
    if line not in errors:  # the same source failing for every tenant: one line
        errors.append(line)
    return line


def _config_of(conn_id: str) -> tuple[Any, str | None]:
    """The tenant's connection, parsed (no network call), or None and why not."""
    try:
        from mde_pipeline.airflow.hooks import MdeHook

        return MdeHook(conn_id).get_config(), None
    except Exception as exc:  # no connection in this process
        return None, reason(f"connection {conn_id}", exc)


def _budget(config: Any, now: float, errors: list[str], ledger_path: str | None,
            unavailable: dict[str, str]) -> dict[str, Any] | None:
    """The budget of one connection (client id + tenant), from its ledger."""
    windows = config.rate_limits
    eff = effective_windows(windows, share=config.rate_limit_share, margin=config.rate_limit_margin_seconds)
    if is_redis_url(config.rate_limit_ledger):
        ledger = RedisLedger(config.rate_limit_ledger, ca_file=trust_bundle(config.ca_bundle))
        try:
            where = safe_ledger_display(config.rate_limit_ledger)
            return redis_budget_status(ledger, where, config.budget_key, windows, eff, now, config.scheduled_reserve_share)
        except Exception as exc:  # Redis down: the section is empty, the error says why
            unavailable["budget"] = _error(errors, "budget ledger (Redis)", exc)
            return None
        finally:
            ledger.close()
    path = ledger_path or os.path.join(default_ledger_dir(config.rate_limit_ledger_dir), LEDGER_FILE_NAME)
    try:
        return budget_status(path, config.budget_key, windows, eff, now, config.scheduled_reserve_share)
    except Exception as exc:  # e.g. not a SQLite file: the section is empty, the error says why
        unavailable["budget"] = _error(errors, f"budget ledger {path}", exc)
        return None


def _default_ledger_path() -> str:
    return os.path.join(default_ledger_dir(), LEDGER_FILE_NAME)


def _ledger_budgets(now: float, path: str, errors: list[str]) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Without a connection in this process: every key the host's ledger holds, default
    limits; and why a tenant of the lake alone has no budget shown."""
    windows = parse_rate_limits(None)
    eff = effective_windows(windows, share=1.0, margin=0.0)
    try:
        budgets = [(key.split(":", 1)[0], budget_status(path, key, windows, eff, now)) for key in ledger_keys(path)]
    except Exception as exc:  # e.g. not a SQLite file: the lake is still shown
        return [], _error(errors, f"budget ledger {path}", exc)
    if not os.path.exists(path):
        return budgets, f"no budget ledger at {path} yet: no run on this host has spent budget"
    return budgets, f"no calls of this tenant in the budget ledger {path}"


def _tenant_entries(tenant_dags: list[TenantDag], root: LakeLocation | None, now: float, errors: list[str],
                    ledger_path: str | None) -> tuple[list[dict[str, Any]], bool]:
    """One entry per tenant: ``tenant_id`` (the Entra id, the lake partition), its budget,
    what the lake section and backfills need (``dag_id``), and ``unavailable``: why a
    part is null. The bool: the tenants come from the configuration (else from what the
    ledger and the lake hold)."""
    entries, missing_connections = [], []
    for dag in tenant_dags:
        config, why = _config_of(dag.conn_id)
        unavailable: dict[str, str] = {}
        tenant_id = offline_tenant_id(config.tenant_id) if config is not None else None  # canonical
        if config is None:
            missing_connections.append(why)
            unavailable["tenant_id"] = unavailable["budget"] = why
            unavailable["lake"] = f"its partition is named by the tenant id, unknown without connection {dag.conn_id}"
        elif tenant_id is None:
            unavailable["tenant_id"] = (
                f"connection {dag.conn_id}: extra tenant_id {config.tenant_id!r} is a domain name; its lake "
                f"partition (the tenant's GUID) shows here once extra tenant_id is the GUID")
            unavailable["lake"] = f"its partition is named by the tenant's GUID; extra tenant_id of {dag.conn_id} is a domain name"
            errors.append(unavailable["tenant_id"])
        entries.append({
            "tenant_id": tenant_id,
            "name": dag.name, "conn_id": dag.conn_id, "dag_id": dag.dag_id,
            "budget": _budget(config, now, errors, ledger_path, unavailable) if config is not None else None,
            "unavailable": unavailable,
        })
    if tenant_dags != [DEFAULT_TENANT_DAG] or not missing_connections:  # (a domain-name id is configured too)
        errors.extend(why for why in missing_connections if why not in errors)  # connections it uses
        return entries, True
    # One tenant and no connection here (`make status` without it): every budget the
    # ledger holds and every tenant the lake holds.
    ledger = ledger_path or _default_ledger_path()
    budgets, no_budget = _ledger_budgets(now, ledger, errors)
    lake_ids = []
    if root is not None:
        try:
            lake_ids = lake_tenants(root)
        except Exception as exc:
            _error(errors, "lake", exc)
    known = {tenant for tenant, _ in budgets}
    rows = budgets + [(tenant, None) for tenant in lake_ids if tenant not in known]
    if not rows:  # nothing to show but the default tenant: its missing connection is the news
        errors.extend(why for why in missing_connections if why not in errors)
        return entries, True
    # What the ledger and the lake hold stands in for the configuration: mde_default is
    # not used, so its absence is no error.
    base = {"name": None, "conn_id": DEFAULT_TENANT_DAG.conn_id, "dag_id": DEFAULT_TENANT_DAG.dag_id}
    return [{"tenant_id": tenant, **base, "budget": budget, "unavailable": {} if budget else {"budget": no_budget}}
            for tenant, budget in rows], False


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


def _lake_retention_days(errors: list[str]) -> int | None:
    """Variable mde_lake_retention_days (None: keep everything; unreadable: an error line)."""
    try:
        from mde_pipeline.airflow.lake_location import configured_retention_days

        return configured_retention_days()
    except Exception as exc:
        _error(errors, "Variable mde_lake_retention_days", exc)
        return None


def _configured_tenant_dags(errors: list[str]) -> list[TenantDag]:
    try:
        return configured_tenant_dags()
    except Exception as exc:  # a bad Variable: the page says so and shows the default
        _error(errors, f"Variable {TENANTS_VARIABLE}", exc)
        return [DEFAULT_TENANT_DAG]


def _lake_cache(tenant_id: str | None) -> LakeStatusCache:
    # One cache per tenant: a day's cache key is (root, table, day), the same for every tenant.
    return _CACHES.setdefault(tenant_id, LakeStatusCache())


def build_status(
    *,
    now: datetime | None = None,
    tenants: list[TenantDag] | None = None,
    location: LakeLocation | None = None,
    ledger_path: str | None = None,
    backfills: Callable[[str], list[dict[str, Any]]] | None = None,
    cache: LakeStatusCache | None = None,
) -> dict[str, Any]:
    """The status document; see docs/OPERATORS.md for its shape (``schema_version`` 1).

    ``tenants`` defaults to the hourly DAGs of Variable ``mde_tenants`` (one per tenant,
    or ``mde_alert_ips`` on ``mde_default``); ``location`` to the configured lake root.
    Each tenant's budget comes from its connection, its lake section from its partition.
    """
    began = time.monotonic()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    errors: list[str] = []
    tenant_dags = tenants if tenants is not None else _configured_tenant_dags(errors)
    root = root_error = None
    try:
        if location is None:
            from mde_pipeline.airflow.lake_location import configured_lake_location

            location = configured_lake_location()
        root = replace_tenant(location, None)
        check_not_legacy(root)
        check_canonical_tenants(root)  # names the migration command; the lake is still shown
    except Exception as exc:
        root_error = _error(errors, "lake", exc)
    if backfills is None:
        from mde_pipeline.airflow.status.backfills import active_backfills as backfills
    entries, configured = _tenant_entries(tenant_dags, root, now.timestamp(), errors, ledger_path)
    keep_days = _lake_retention_days(errors)
    for tenant in entries:
        lake = staged = None
        unavailable = tenant["unavailable"]
        if root is None:
            unavailable["lake"] = root_error or "lake: no root"
        elif tenant["tenant_id"] is None:  # _tenant_entries said why
            unavailable.setdefault("lake", "its partition is named by the tenant id, which is unknown")
        else:
            where = root.for_tenant(tenant["tenant_id"])
            tenant_cache = cache or _lake_cache(tenant["tenant_id"])
            try:
                lake = lake_status(where, tenant_cache, now, lake_retention_days=keep_days)
                staged = tenant_cache.staged_listings(where)
            except Exception as exc:
                unavailable["lake"] = _error(errors, f"lake (tenant {tenant['tenant_id']})", exc)
        try:
            running = backfills(tenant["dag_id"])
        except Exception as exc:
            unavailable["backfills"] = _error(errors, "Airflow metadata (backfills)", exc)
            running = []
        budget = tenant["budget"]
        rate = budget["sustained_calls_per_hour"] if budget else sustained_calls_per_hour(parse_rate_limits(None))
        tenant["backfills"] = [_backfill_figures(dict(b, intervals_left=list(b["intervals_left"])), staged or {}, lake, rate, now)
                               for b in running]
        tenant["lake"] = lake
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now.isoformat(),
        "dag_id": entries[0]["dag_id"],
        "tenants_from": "configuration" if configured else "ledger_and_lake",
        "tenants": entries,
        "errors": errors,
        "took_seconds": round(time.monotonic() - began, 4),
    }
