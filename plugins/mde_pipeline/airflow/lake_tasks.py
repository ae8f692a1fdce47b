"""The DAG's two lake steps: stage the listing (list task), then commit the interval (publish task).

``stage_listing`` runs inside ``list_alerts``: the listed alert entities are too large
for XCom (25,000 alerts is tens of MB), so they go to the run's own staging folder in
the lake. Only the batches of alert ids travel through XCom to the mapped fetch tasks.

``publish_interval`` joins the staged listing with every batch's fetch results
(:func:`mde_pipeline.lake.records.interval_tables` refuses a missing or extra result),
commits both tables' files of the interval atomically, then drops the staging folder.
Both work on the listed tenant's part of the lake (``tenant_id=<id>`` below each top
folder, ``LakeLocation.for_tenant``). A rerun of the interval replaces exactly those files: the rows of the versions it lists
are replaced, the versions the lake held that it no longer lists stay (param
``refetch``: the hour replaced whole). The results of look-back batches go to their own
hours (:func:`mde_pipeline.airflow.lookback.publish_lookback`); then the tenant's recent
IP index is rebuilt (lake/recent_index.py; its failure never fails the publish); the
fetch cache is swept.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from mde_pipeline.airflow import settings
from mde_pipeline.airflow.cached_fetch import as_flag
from mde_pipeline.airflow.lake_location import configured_tenant_location
from mde_pipeline.airflow.lookback import publish_lookback
from mde_pipeline.common.fetch_result import FetchResult
from mde_pipeline.lake.fetch_cache import cache_retention, sweep_fetch_cache, version_key
from mde_pipeline.lake.commit import commit_interval, recover_pending_commits
from mde_pipeline.lake.layout import interval_start_of
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.records import interval_tables, recorded_problems
from mde_pipeline.lake.recent_index import refresh_recent_index
from mde_pipeline.lake.staging import clear_staging, read_staging_json, write_staging_json

LISTING = "listing"
LIST_TASK_ID = "list_alerts"
TENANT_XCOM_KEY = "tenant_id"  # the canonical tenant list_alerts resolved (a domain name: from its token)

log = logging.getLogger(__name__)


def stage_listing(listing: Mapping[str, Any], context: Mapping[str, Any], location: LakeLocation) -> str:
    """Replace this run's staging folder with the listing document (a retry starts clean).

    ``location`` is the listed tenant's (``configured_tenant_location``)."""
    start = interval_start_of(context["data_interval_start"])
    run_id = context["run_id"]
    # Listing first, then the rest of the folder: the run folder never vanishes meanwhile
    # (the fetch-cache sweep keeps the hours of staged runs: a cleared run keeps its cache).
    uri = write_staging_json(location, start, run_id, LISTING, listing)
    clear_staging(location, start, run_id, keep=(LISTING,))
    return uri


def push_listed_tenant(context: Mapping[str, Any], tenant_id: str) -> None:
    """Hand the canonical tenant to ``publish`` (which makes no network call to learn it)."""
    ti = context.get("ti")
    if ti is not None:
        ti.xcom_push(key=TENANT_XCOM_KEY, value=tenant_id)


def listed_tenant(context: Mapping[str, Any]) -> str | None:
    """The canonical tenant ``list_alerts`` pushed for this run, or None."""
    ti = context.get("ti")
    if ti is None:
        return None
    value = ti.xcom_pull(task_ids=LIST_TASK_ID, key=TENANT_XCOM_KEY)
    return value if isinstance(value, str) and value else None


def publish_location(context: Mapping[str, Any], mde_conn_id: str = settings.MDE_CONN_ID) -> LakeLocation:
    """The part of the configured lake ``publish`` writes: the canonical tenant
    ``list_alerts`` pushed to XCom (``push_listed_tenant``), else connection
    ``mde_conn_id``'s tenant (its extra ``tenant_id`` lower-cased, without a network
    call): where ``list_alerts`` staged the listing."""
    tenant_id = listed_tenant(context)
    if tenant_id is None:
        from mde_pipeline.airflow.hooks import connection_tenant_id  # azure-core only when a task runs

        tenant_id = connection_tenant_id(mde_conn_id)
    return configured_tenant_location(tenant_id)


def publish_interval(
    context: Mapping[str, Any],
    batch_results: Iterable[Iterable[FetchResult] | None],
    location: LakeLocation | None = None,
    *,
    mde_conn_id: str = settings.MDE_CONN_ID,
) -> dict[str, Any]:
    """Commit the interval of this run; returns a summary (also the asset events' extra).

    ``location`` defaults to :func:`publish_location` of ``mde_conn_id``.
    """
    if location is None:
        location = publish_location(context, mde_conn_id)
    start = interval_start_of(context["data_interval_start"])
    run_id = context["run_id"]
    listing = read_staging_json(location, start, run_id, LISTING)
    if listing["tenant_id"] != location.tenant_id:  # never one tenant's rows in another's partition
        raise ValueError(
            f"staged listing of tenant {listing['tenant_id']!r} found in the lake part of tenant {location.tenant_id!r}"
        )
    own = {version_key(alert["id"], alert["lastUpdateTime"]) for alert in listing["alerts"]}
    results = [result for batch in batch_results if batch for result in batch]
    tables = interval_tables(
        listing["alerts"],
        [r for r in results if version_key(r["alert_id"], r["last_update_time"]) in own],
        tenant_id=listing["tenant_id"],
        interval_start=start,
        listed_at=listing["listed_at"],
    )
    # A rerun keeps the versions the lake holds that the new listing lacks (an alert that
    # moved on to a later hour) and the found_by_lookback_at of those it lists again;
    # `refetch` replaces the hour whole (found_by_lookback_at null again).
    refetch = as_flag((context.get("params") or {}).get("refetch", False))
    # Hours an interrupted commit left half-applied (this tenant, any day) are finished
    # first: the lake this run builds on is whole (lake.commit_log).
    recovered = recover_pending_commits(location)
    if recovered:
        log.warning("finished %d interrupted commits before publishing: %s", len(recovered), recovered)
    committed = commit_interval(location, start, tables, keep_versions=not refetch)
    late, expired = publish_lookback(context, [r for r in results if version_key(r["alert_id"], r["last_update_time"]) not in own], location)
    clear_staging(location, start, run_id)
    # After every commit of this run is applied and its record cleared: the recent IP
    # index follows the hourly days (a failure is logged; readers use the day files).
    refresh_recent_index(location)
    # Never an hour a live run (a backfill, also with the look-back off) may still publish.
    sweep_fetch_cache(location, listing["tenant_id"], start - cache_retention(settings.LOOKBACK), lookback=settings.LOOKBACK)
    summary = {
        "interval_start": start.isoformat(),
        "files": committed.files,
        "rows": committed.rows,
        **recorded_problems(tables["alerts"]),
        "lookback_added": late,
        "lookback_expired": expired,  # late versions of hours retention removes: not written
    }
    if summary["ips_errors"] or summary["alerts_with_field_problems"]:
        log.warning(
            "interval %s committed with %d alerts whose IPs could not be fetched (ips_status 'error') and %d "
            "with fields that did not fit (field_problems); see docs/ANALYSTS.md",
            summary["interval_start"], summary["ips_errors"], summary["alerts_with_field_problems"],
        )
    _record_asset_events(context, summary)
    return summary


def _record_asset_events(context: Mapping[str, Any], summary: dict[str, Any]) -> None:
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    from mde_pipeline.airflow.assets import ALERT_IPS_ASSET, ALERTS_ASSET

    for table, asset in (("alerts", ALERTS_ASSET), ("alert_ips", ALERT_IPS_ASSET)):
        outlet_events[asset].extra = {
            "interval_start": summary["interval_start"],
            "file": summary["files"].get(table),
            "rows": summary["rows"].get(table),
        }
