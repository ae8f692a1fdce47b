"""The IPs of one batch of alert versions: one ``GET /api/alerts/{id}/ips`` per alert.

Plain functions over any client with ``get_alert_ips`` (the operator calls them; tests
call them with fakes). Each alert becomes one :class:`FetchResult`.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

from mde_pipeline.api.ip_addresses import canonical_ips
from mde_pipeline.api.stats import STAT_FIELDS, stats_of
from mde_pipeline.common.log_text import for_log
from mde_pipeline.common.fetch_result import IPS_EMPTY, IPS_NOT_FOUND, IPS_OK, FetchResult

log = logging.getLogger(__name__)


class AlertIpsApi(Protocol):
    """The part of :class:`mde_pipeline.api.client.MdeClient` the fetch needs."""

    def get_alert_ips(self, alert_id: str) -> list[str] | None: ...


def fetch_batch_ips(
    client: AlertIpsApi,
    batch: Mapping[str, Any],
    *,
    logger: logging.Logger | logging.LoggerAdapter = log,
    progress_every: int = 25,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> list[FetchResult]:
    """``GET /api/alerts/{id}/ips`` for each alert of one batch, one call per alert.

    Pacing is the client's (its limiter reserves a slot before every attempt). Returns
    one :class:`~mde_pipeline.common.fetch_result.FetchResult` per alert, in batch order.

    404 is ``not_found`` (the alert is gone), an empty ``value`` is ``empty``; strings
    that are not IPs are logged as warnings and kept in ``invalid_ip_values``. An alert
    whose strings are all invalid is ``ok`` with no ``ips``.
    """
    entries = batch["alerts"]
    total = len(entries)
    label = f"batch {batch.get('batch_index', '?')}/{batch.get('batch_count', '?')}"
    before = stats_of(client)
    started = time.monotonic()
    results = []
    for done, entry in enumerate(entries, start=1):
        alert_id = entry["alert_id"]
        values = client.get_alert_ips(alert_id)
        results.append(_ips_result(entry, values, clock(), logger))
        if done == total or done % progress_every == 0:
            _log_progress(logger, label, done, total, before, stats_of(client), time.monotonic() - started)
    if not entries:
        logger.info("%s: no alerts", label)
    return results


def _ips_result(entry: Mapping[str, Any], values: list[Any] | None, fetched_at: datetime, logger) -> FetchResult:
    result: FetchResult = {
        "alert_id": entry["alert_id"],
        "last_update_time": entry["last_update_time"],
        "status": IPS_NOT_FOUND,
        "ips": [],
        "invalid_ip_values": [],
        "fetched_at": fetched_at.isoformat(),
    }
    if values is None:
        return result
    if not values:
        result["status"] = IPS_EMPTY
        return result
    ip_set = canonical_ips(values)
    for invalid in ip_set.invalid:
        # for_log: escaped and cut, so a hostile string can neither forge log lines nor flood them.
        logger.warning(
            "alert %s: %s is not an IP address (%s); kept out of the ip column",
            for_log(entry["alert_id"]),
            for_log(invalid.value),
            invalid.reason,
        )
    result["status"] = IPS_OK
    result["ips"] = [ip.as_pair() for ip in ip_set.ips]
    result["invalid_ip_values"] = [
        invalid.value if isinstance(invalid.value, str) else json.dumps(invalid.value) for invalid in ip_set.invalid
    ]
    return result


def _log_progress(logger, label: str, done: int, total: int, before: dict, after: dict, elapsed: float) -> None:
    delta = {name: after[name] - before[name] for name in STAT_FIELDS}
    logger.info(
        "%s: %d/%d alerts fetched; %d calls, %d throttled (429), %d retries, %.1fs waiting for budget, %.1fs elapsed",
        label,
        done,
        total,
        delta["calls"],
        delta["throttled"],
        delta["retries"],
        delta["wait_seconds"],
        elapsed,
    )
