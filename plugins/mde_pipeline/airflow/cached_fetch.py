"""One batch's IPs through the lake's fetch cache: each alert version is fetched once.

The cache (:mod:`mde_pipeline.lake.fetch_cache`) answers the versions already fetched
(by an earlier try of this task, an earlier run of the hour, or a look-back); the API is
called only for the rest, and every result is written to the cache as it arrives, so a
retry after a crash or a kill calls the API only for what was not finished. ``refetch``
skips the look-up (fresh calls), the results are still kept.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from mde_pipeline.api.fetch import AlertIpsApi, fetch_batch_ips
from mde_pipeline.common.fetch_result import FetchResult
from mde_pipeline.lake.fetch_cache import FetchCache, version_key
from mde_pipeline.lake.location import LakeLocation

log = logging.getLogger(__name__)


def as_flag(value: Any) -> bool:
    """A DAG param rendered through a template ("True", "false", "1") as a bool."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def fetch_batch_cached(
    client: AlertIpsApi,
    batch: Mapping[str, Any],
    location: LakeLocation,
    tenant_id: str,
    *,
    refetch: bool = False,
    flush_every: int = 1,
    label: str = "batch",
    logger: logging.Logger | logging.LoggerAdapter = log,
    progress_every: int = 25,
    partial_on_error: Callable[[BaseException], bool] | None = None,
) -> list[FetchResult]:
    """The batch's results in batch order: cached ones as they are, the others fetched now.

    ``partial_on_error(exc)`` true: an error stops the fetch but the results so far are
    returned (a look-back batch: the versions not fetched are left to the next run's
    look-back instead of failing this run's own hour).
    """
    entries = batch["alerts"]
    # The cache lives in the tenant's part of the lake (_staging/tenant_id=<id>/fetch_cache).
    if location.tenant_id is None:
        location = location.for_tenant(tenant_id)
    elif location.tenant_id != tenant_id:
        raise ValueError(f"fetch cache of tenant {tenant_id!r} asked for in the lake part of tenant {location.tenant_id!r}")
    cache = FetchCache(location, tenant_id)
    cached = {} if refetch else cache.lookup(entries)
    remaining = [e for e in entries if version_key(e["alert_id"], e["last_update_time"]) not in cached]
    logger.info(
        "%d of %d alert versions already fetched (fetch cache%s); %d to fetch",
        len(entries) - len(remaining),
        len(entries),
        ", skipped: refetch" if refetch else "",
        len(remaining),
    )
    recorder = cache.recorder(label, flush_every=flush_every)
    answered: list[FetchResult] = []  # as they arrive (what a failure leaves)

    def keep(result: FetchResult) -> None:
        answered.append(result)
        try:
            recorder.add(result)  # flushes every flush_every results
        except Exception as exc:  # a lake blip costs a refetch later, never the batch
            log.warning("could not keep a fetch result in the cache (%r); later runs fetch it again", exc)

    fetched: list[FetchResult] = []
    try:
        if remaining:
            # Every result, 'error' ones included (those are not kept in the cache).
            fetched = fetch_batch_ips(
                client, {**batch, "alerts": remaining}, logger=logger, progress_every=progress_every, on_result=keep
            )
    except Exception as exc:
        if partial_on_error is None or not partial_on_error(exc):
            raise
        fetched = answered
        logger.warning(
            "fetch stopped after %d of %d alerts (%r); the rest is left to the next look-back",
            len(answered),
            len(remaining),
            exc,
        )
    finally:
        # Keep what was fetched; a flush that fails (a lake blip) costs only a refetch
        # later, so it never replaces the error in flight nor fails a good batch.
        try:
            recorder.flush()
        except Exception as exc:
            log.warning("could not keep %d fetch results in the cache (%r); later runs fetch them again",
                        len(answered), exc)  # fmt: skip
    by_key = {**cached, **{version_key(r["alert_id"], r["last_update_time"]): r for r in fetched}}
    keys = [version_key(e["alert_id"], e["last_update_time"]) for e in entries]
    return [by_key[key] for key in keys if key in by_key]
