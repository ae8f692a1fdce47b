"""The sweeps of ``_staging/`` over every tenant folder there (the compaction step runs them).

Each tenant's staging lives in ``_staging/tenant_id=<id>/``: its runs' staged listings
and its fetch cache. The sweeps go over every such folder found, not over the tenants
with committed data (lake.tenants.lake_tenants) nor the ones Variable ``mde_tenants``
names: a tenant whose every run failed before committing, or one removed from the
Variable, would otherwise keep its staged listings (personal data) and its cache forever.

* failed runs' staging older than ``staging_max_age``: lake.staging.sweep_staging;
* then fetch cache no run may still publish: lake.fetch_cache (its rule needs the staged
  runs that are left, hence the order);
* swapped-out day directories past their grace (local lake): lake.retired.sweep_retired_days.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from mde_pipeline.lake.fetch_cache import cache_retention, sweep_every_fetch_cache
from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.retired import sweep_retired_days
from mde_pipeline.lake.staging import STAGING_MAX_AGE, sweep_staging
from mde_pipeline.lake.tenants import staged_tenants

log = logging.getLogger(__name__)


def sweep_every_tenant_staging(
    location: LakeLocation,
    *,
    now: datetime,
    staging_max_age: timedelta = STAGING_MAX_AGE,
    cache_lookback: timedelta = timedelta(0),
    wall_clock: float | None = None,
) -> dict[str, int]:
    """Sweep the staging of every ``tenant_id=`` folder under ``_staging/`` (of the one
    tenant of a tenant's location); ``now`` is the hour the cache retention counts back
    from, ``cache_lookback`` the DAG's look-back, ``wall_clock`` the epoch seconds ages
    and idleness count from (default: the time now; tests). Returns counts for the summary."""
    tenants = [location] if location.tenant_id is not None else [location.for_tenant(t) for t in staged_tenants(location)]
    staging = cache = retired = 0
    for tenant in tenants:
        staging += len(sweep_staging(tenant, staging_max_age, now=wall_clock))
        cutoff = now - cache_retention(cache_lookback)
        cache += len(sweep_every_fetch_cache(tenant, cutoff, lookback=cache_lookback, now=wall_clock))
        retired += len(sweep_retired_days(tenant, now=wall_clock))
    if cache:
        log.info("lake %s: swept %d fetch-cache hours over %d tenant folders", location.url, cache, len(tenants))
    return {"staging_swept": staging, "fetch_cache_swept": cache, "retired_swept": retired}
