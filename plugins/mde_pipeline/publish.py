"""The DAG's two lake steps: stage the listing, then publish the interval.

``stage_listing`` runs inside ``list_alerts``: the listed alert entities are too large
for XCom (25,000 alerts is tens of MB), so they go to the run's own staging folder
(``<root>/_staging/<interval>/<run_id>/listing.json``). Only the batches of alert ids
travel through XCom to the mapped fetch tasks.

``publish_interval`` joins the staged listing with every batch's IP results
(``lake.schema.interval_tables`` refuses a missing or extra result), commits both
tables' files of the interval in one atomic step per file, then drops the staging
folder. A rerun of the interval replaces exactly those files.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable, Mapping

from mde_pipeline.lake.location import LakeLocation, resolve_lake_location
from mde_pipeline.lake.schema import interval_tables
from mde_pipeline.lake.staging import clear_staging, read_staging_json, write_staging_json
from mde_pipeline.lake.writer import CommittedInterval, commit_interval, interval_start_of

LISTING = "listing"

log = logging.getLogger(__name__)


def stage_listing(listing: Any, context: Mapping[str, Any], location: LakeLocation | None = None) -> str:
    """Replace this run's staging folder with the listing (a retry starts clean)."""
    location = location or resolve_lake_location()
    start = interval_start_of(context["data_interval_start"])
    run_id = context["run_id"]
    clear_staging(location, start, run_id)
    return write_staging_json(location, start, run_id, LISTING, listing.as_document())


def publish_interval(
    context: Mapping[str, Any],
    batch_results: Iterable[Iterable[Mapping[str, Any]] | None],
    location: LakeLocation | None = None,
) -> dict[str, Any]:
    """Commit the interval of this run; returns a summary (also the asset events' extra)."""
    location = location or resolve_lake_location()
    start = interval_start_of(context["data_interval_start"])
    run_id = context["run_id"]
    committed = commit_listing_and_results(location, start, run_id, batch_results)
    clear_staging(location, start, run_id)
    summary = {
        "interval_start": start.isoformat(),
        "files": committed.files,
        "rows": committed.rows,
    }
    _record_asset_events(context, summary)
    return summary


def commit_listing_and_results(
    location: LakeLocation,
    interval_start: datetime,
    run_id: str,
    batch_results: Iterable[Iterable[Mapping[str, Any]] | None],
) -> CommittedInterval:
    listing = read_staging_json(location, interval_start, run_id, LISTING)
    results = [result for batch in batch_results if batch for result in batch]
    tables = interval_tables(
        listing["alerts"],
        results,
        tenant_id=listing["tenant_id"],
        interval_start=interval_start,
        listed_at=listing["listed_at"],
    )
    return commit_interval(location, interval_start, tables)


def _record_asset_events(context: Mapping[str, Any], summary: dict[str, Any]) -> None:
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    from mde_pipeline.assets import ALERT_IPS_ASSET, ALERTS_ASSET

    for table, asset in (("alerts", ALERTS_ASSET), ("alert_ips", ALERT_IPS_ASSET)):
        outlet_events[asset].extra = {
            "interval_start": summary["interval_start"],
            "file": summary["files"].get(table),
            "rows": summary["rows"].get(table),
        }
