"""Names and defaults of DAG mde_alert_ips; the tunable ones have environment overrides.

Everything has a production default here, so a stock deployment needs no setting.
The environment overrides exist for operations (shorter retry delays in a sandbox) and
for tests that must watch a failure happen without waiting minutes for retries.
"""

from __future__ import annotations

import os
from datetime import timedelta


DAG_ID = "mde_alert_ips"  # the hourly DAG; with Variable mde_tenants: mde_alert_ips_<name> (tenants.py)
MDE_CONN_ID = "mde_default"  # the MDE API connection (per tenant: mde_<name>)
MDE_POOL = "mde_api"  # every API call, listing included: they share one budget (per tenant: mde_api_<name>)
DEFAULT_BATCH_SIZE = 100  # alerts per mapped fetch task (DAG param batch_size)


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


# A failed batch retries alone; 5xx/timeouts/throttling are already retried inside the
# client, so a task retry covers longer outages.
TASK_RETRIES = _int_env("MDE_ALERT_IPS_TASK_RETRIES", 3)
RETRY_DELAY = timedelta(seconds=_int_env("MDE_ALERT_IPS_RETRY_DELAY_SECONDS", 120))
# Runs of the DAG at once (scheduled and each backfill have their own limit); the pool,
# not this, bounds the API callers.
MAX_ACTIVE_RUNS = _int_env("MDE_ALERT_IPS_MAX_ACTIVE_RUNS", 4)
# No task runs unbounded: a batch waits at most for the hourly budget (and a capped
# throttle) per attempt, so three hours means something is stuck, not slow.
EXECUTION_TIMEOUT = timedelta(minutes=_int_env("MDE_ALERT_IPS_EXECUTION_TIMEOUT_MINUTES", 180))
# Staged listings of failed runs (personal data) are swept by the compaction DAG after this.
STAGING_MAX_AGE = timedelta(days=_int_env("MDE_STAGING_MAX_AGE_DAYS", 7))
# Freshness (airflow/freshness.py): a run not successful this long after it was queued
# (for a scheduled run: after its hour ended) fires the DAG's deadline alert; 0 = none.
FRESHNESS_DEADLINE = timedelta(minutes=_int_env("MDE_FRESHNESS_DEADLINE_MINUTES", 60))

# Issue 11: late alerts. The hour [H, H+1h) is listed no earlier than H+1h+settle.
SETTLE = timedelta(seconds=_int_env("MDE_ALERT_IPS_SETTLE_SECONDS", 300))
# Every run re-lists [start - lookback, start) and adds the versions the lake's committed
# hours lack. 0 turns the look-back off; capped at the 180-day retention window.
MAX_LOOKBACK_HOURS = 180 * 24
LOOKBACK = timedelta(hours=min(max(_int_env("MDE_ALERT_IPS_LOOKBACK_HOURS", 24), 0), MAX_LOOKBACK_HOURS))
# Fetch results are written to the lake's fetch cache every this many alerts.
CACHE_FLUSH_EVERY = max(_int_env("MDE_ALERT_IPS_CACHE_FLUSH_EVERY", 1), 1)
