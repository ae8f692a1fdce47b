"""One batch's IPs through the lake's fetch cache: each alert version is fetched once.

The cache (:mod:`mde_pipeline.lake.fetch_cache`) answers the versions already fetched
(by an earlier try of this task, an earlier run of the hour, or a look-back); the API is
called only for the rest, and every result is written to the cache as it arrives, so a
retry after a crash or a kill calls the API only for what was not finished. ``refetch``
skips the look-up (fresh calls), the results are still kept.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

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
) -> list[FetchResult]:
    """The batch's results in batch order: cached ones as they are, the others fetched now."""
    entries = batch["alerts"]
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
    fetched: list[FetchResult] = []
    try:
        if remaining:
            fetched = fetch_batch_ips(
                client,
                {**batch, "alerts": remaining},
                logger=logger,
                progress_every=progress_every,
                on_result=recorder.add,
            )
    finally:
        recorder.flush()
    by_key = {**cached, **{version_key(r["alert_id"], r["last_update_time"]): r for r in fetched}}
    return [by_key[version_key(e["alert_id"], e["last_update_time"])] for e in entries]
