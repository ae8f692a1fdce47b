"""The look-back: every hourly run re-lists the ``lookback`` before its interval and adds
the alert versions the lake's committed hours lack (late arrivals), with their IPs.

1. ``list_alerts`` lists ``[start - lookback, start)`` in as few calls as paging allows
   (one for a normal tenant: up to 10,000 alerts), reads the versions the lake holds for
   the committed hours of that window (key columns only, lake.versions) and keeps the
   listed versions those hours lack (:func:`list_lookback`). Hours never committed are
   left alone (backfills load them). The found versions are staged next to the run's
   listing (``lookback.json``) and travel to ``fetch_ips`` as extra batches marked
   ``"lookback": true`` (the fetch cache answers the versions fetched before).
2. ``publish`` adds them to their hours (:func:`publish_lookback`):
   ``commit_interval(keep_versions=True, only_if_committed=True)`` rewrites each hour
   under its day's lock with its rows plus the new ones; their ``listed_at`` and
   ``found_by_lookback_at`` are the look-back's listing time (``found_by_lookback_at``
   stays when a rerun of the hour lists the version later: lake.versions). A version the
   lake holds is never dropped, also when the alert has moved on to a later lastUpdateTime.

Retention (Variable ``mde_lake_retention_days``, lake.retention): a late version whose
hour is expired is not written (a removed day is never re-created); such versions are
counted in the returned ``expired`` entry and logged.

Everything happens in the tenant's part of the lake (the ``location`` given, a
``LakeLocation.for_tenant``): its committed hours, its staging, its commits.

Failure of the look-back's listing (lake unreadable, listing error other than a
configuration error) is logged and the run loads its own hour anyway: the next run looks
back again. A look-back commit that fails before its commit point changes nothing (the
next look-back finds the versions again, since ``alerts`` still lacks them); one that
fails after it fails the publish task, whose retry (or the next run) finishes the hour
from its commit record (lake.commit_log) before anything else.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from mde_pipeline.airflow.batching import make_batches
from mde_pipeline.api.listing import MAX_PAGE_SIZE, AlertsApi, list_interval
from mde_pipeline.common.fetch_result import FetchResult
from mde_pipeline.common.log_text import for_log
from mde_pipeline.lake.commit import commit_interval, recover_pending_commits
from mde_pipeline.lake.commit_log import LakeCommitPending
from mde_pipeline.lake.fetch_cache import version_key
from mde_pipeline.lake.layout import interval_start_of
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.records import interval_tables
from mde_pipeline.lake.retention import first_day_kept
from mde_pipeline.lake.staging import StagingNotFoundError, read_staging_json, write_staging_json
from mde_pipeline.lake.versions import committed_versions, missing_versions

log = logging.getLogger(__name__)

LOOKBACK = "lookback"  # staging document name
LOOKBACK_MAX_BATCHES = 20  # of the 1000 mapped batches a run may have


def list_lookback(
    client: AlertsApi,
    location: LakeLocation,
    interval_start: Any,
    lookback: timedelta,
    *,
    page_size: int = MAX_PAGE_SIZE,
    batch_size: int = 100,
    is_fatal: Callable[[BaseException], bool] = lambda exc: False,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> dict[str, Any] | None:
    """The look-back document (``tenant_id``, ``listed_at``, ``window``, ``hours``: key ->
    alerts, ``batches``), or None when the look-back is off or failed."""
    if not lookback or lookback <= timedelta(0):
        return None
    start = interval_start_of(interval_start)
    window_start = start - lookback
    try:
        listing = list_interval(client, window_start, start, page_size)
        # Hours an interrupted commit left recorded are finished first, so the versions
        # they add are not found (and staged) a second time.
        recover_pending_commits(location)
        committed = committed_versions(location, window_start, start)
        missing = missing_versions(listing.alerts, committed)
    except Exception as exc:
        if is_fatal(exc):
            raise
        logger.warning("look-back over [%s, %s) failed, the next run looks back again: %r", window_start, start, exc)
        return None
    alerts = [alert for hour_alerts in missing.values() for alert in hour_alerts]
    batches = make_batches(alerts, batch_size=batch_size, max_batches=LOOKBACK_MAX_BATCHES)
    for batch in batches:
        batch["lookback"] = True
    logger.info(
        "look-back [%s, %s): %d alerts listed in %d calls, %d committed hours, %d versions missing in %d hours",
        window_start.isoformat(),
        start.isoformat(),
        len(listing.alerts),
        listing.stats.requests,
        len(committed),
        len(alerts),
        len(missing),
    )
    return {
        "tenant_id": listing.tenant_id,
        "listed_at": listing.listed_at.isoformat(),
        "window": [window_start.isoformat(), start.isoformat()],
        "listed": len(listing.alerts),
        "requests": listing.stats.requests,
        "hours": {hour.isoformat(): hour_alerts for hour, hour_alerts in missing.items()},
        "batches": batches,
    }


def stage_lookback(document: Mapping[str, Any], context: Mapping[str, Any], location: LakeLocation) -> list[dict]:
    """Stage the look-back's missing versions for publish (in the tenant's ``location``);
    returns its batches."""
    batches = list(document["batches"])
    write_staging_json(location, context["data_interval_start"], context["run_id"], LOOKBACK, {**document, "batches": []})
    return batches


def publish_lookback(
    context: Mapping[str, Any], results: Iterable[FetchResult], location: LakeLocation, *, keep_days: int | None = None
) -> tuple[dict[str, int], int]:
    """Add the staged late versions to their committed hours (of the tenant's ``location``);
    returns (hour key -> rows added, versions not written because retention removes their
    hours: ``keep_days``, default Variable ``mde_lake_retention_days``)."""
    try:
        document = read_staging_json(location, context["data_interval_start"], context["run_id"], LOOKBACK)
    except StagingNotFoundError:
        return {}, 0
    if keep_days is None and document["hours"]:
        from mde_pipeline.airflow.lake_location import configured_retention_days

        keep_days = configured_retention_days()
    kept_from = first_day_kept(keep_days, datetime.now(timezone.utc)) if keep_days else None
    by_key = {version_key(r["alert_id"], r["last_update_time"]): r for r in results}
    added, pending, expired = {}, [], 0
    for hour, alerts in document["hours"].items():
        start = datetime.fromisoformat(hour)
        # A version whose fetch failed has no result: the next look-back tries it again.
        alerts = [a for a in alerts if version_key(a["id"], a["lastUpdateTime"]) in by_key]
        if not alerts:
            continue
        if kept_from is not None and start.astimezone(timezone.utc).date().isoformat() < kept_from:
            expired += len(alerts)  # never re-create a day retention removes
            continue
        hour_results = [by_key[version_key(a["id"], a["lastUpdateTime"])] for a in alerts]
        try:
            tables = interval_tables(
                alerts, hour_results, tenant_id=document["tenant_id"], interval_start=start,
                listed_at=document["listed_at"], found_by_lookback_at=document["listed_at"],
            )
            committed = commit_interval(location, start, tables, keep_versions=True, only_if_committed=True)
        except LakeCommitPending as exc:
            # Past its commit point: the hour is half-applied until a writer finishes it.
            pending.append(hour)
            log.error("look-back's commit of %s is not finished (%s)", hour, for_log(str(exc.__cause__ or exc)))
            continue
        except Exception as exc:  # before the commit point: a lock held too long, a lost lease, a row that does not fit
            # Nothing of the hour changed: its alerts rows still lack these versions, so
            # the next look-back finds them again.
            log.warning("look-back could not add %d late versions to %s (%s); the next look-back retries",
                        len(alerts), hour, for_log(f"{type(exc).__name__}: {exc}"))  # fmt: skip
            continue
        if committed is not None:
            added[hour] = len(alerts)
    if added:
        log.info("look-back added %d late versions to %d hours: %s", sum(added.values()), len(added), added)
    if expired:
        log.warning("look-back: %d late versions of hours before %s (retention: %d days) not written", expired, kept_from, keep_days)
    if pending:
        # Never a success over a half state: the task's retry (or the next run's publish)
        # finishes these hours from their commit records first.
        raise LakeCommitPending(f"look-back commits of {pending} are recorded but not applied; the retry finishes them")
    return added, expired
