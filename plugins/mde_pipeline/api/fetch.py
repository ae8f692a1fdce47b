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

from mde_pipeline.api.errors import (
    InvalidAlertIdError,
    MdeBadRequestError,
    MdeMalformedResponseError,
    MdeMostlyNotFoundError,
    MdeServerError,
    MdeTooManyFailedAlertsError,
)
from mde_pipeline.api.ip_addresses import canonical_ips
from mde_pipeline.api.stats import STAT_FIELDS, stats_of
from mde_pipeline.common.fetch_result import IPS_EMPTY, IPS_ERROR, IPS_NOT_FOUND, IPS_OK, FetchResult
from mde_pipeline.common.log_text import for_log

log = logging.getLogger(__name__)

# A batch of at least NOT_FOUND_MIN_BATCH alerts in which more than MAX_NOT_FOUND_SHARE
# come back "not found" fails: alerts were listed minutes ago, so that many gone at once
# points at a wrong host or a proxy, not at deletions. A lone gone alert never trips it.
NOT_FOUND_MIN_BATCH = 10
MAX_NOT_FOUND_SHARE = 0.5

# Failures of one alert that survived the client's own retries (a 5xx or timeout every
# time, an answer that does not parse, an id the service or we refuse): the alert lands
# with ips_status 'error' and the reason, and the batch goes on. More than
# max(MAX_FAILED_ALERTS, MAX_FAILED_SHARE of the batch) such alerts is no longer one
# poison alert but an outage: the batch fails (task retries apply) after at most
# (MAX_FAILED_ALERTS + 1) x (retry_total + 1) calls on failing alerts. Authentication,
# permission, configuration and throttling errors are never per-alert: they fail at once.
PER_ALERT_FAILURES = (MdeServerError, MdeMalformedResponseError, MdeBadRequestError, InvalidAlertIdError)
MAX_FAILED_ALERTS = 2
MAX_FAILED_SHARE = 0.1
MAX_ERROR_CHARS = 300


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
    on_result: Callable[[FetchResult], None] | None = None,
) -> list[FetchResult]:
    """``GET /api/alerts/{id}/ips`` for each alert of one batch, one call per alert.

    Pacing is the client's (its limiter reserves a slot before every attempt). Returns
    one :class:`~mde_pipeline.common.fetch_result.FetchResult` per alert, in batch order.

    404 with the service's error body is ``not_found`` (the alert is gone), an empty
    ``value`` is ``empty``; strings that are not IPs are logged as warnings and kept in
    ``invalid_ip_values``. An alert whose strings are all invalid is ``ok`` with no ``ips``.
    Raises :class:`MdeMostlyNotFoundError` (naming the API host) as soon as more than
    ``MAX_NOT_FOUND_SHARE`` of a batch of at least ``NOT_FOUND_MIN_BATCH`` is not found,
    before the rest of the batch spends budget. An alert whose call fails for good is
    ``error`` with the reason (see ``PER_ALERT_FAILURES``), up to a threshold.
    ``on_result`` sees each answered result as soon as it is made (the fetch cache
    keeps it); an ``error`` result is not passed on.
    """
    entries = batch["alerts"]
    total = len(entries)
    label = f"batch {batch.get('batch_index', '?')}/{batch.get('batch_count', '?')}"
    before = stats_of(client)
    started = time.monotonic()
    results = []
    not_found = failed = 0
    allowed_failures = max(MAX_FAILED_ALERTS, int(total * MAX_FAILED_SHARE))
    for done, entry in enumerate(entries, start=1):
        alert_id = entry["alert_id"]
        try:
            values = client.get_alert_ips(alert_id)
        except PER_ALERT_FAILURES as exc:
            failed += 1
            if failed > allowed_failures:
                raise MdeTooManyFailedAlertsError(
                    f"{label}: {failed} alerts failed for good (more than {allowed_failures}) at {_api_host(client)}; "
                    f"the last: {type(exc).__name__}: {exc}"
                ) from exc
            results.append(_failed_result(entry, exc, clock(), logger))
            continue
        results.append(_ips_result(entry, values, clock(), logger))
        not_found += values is None
        if total >= NOT_FOUND_MIN_BATCH and not_found > total * MAX_NOT_FOUND_SHARE:
            raise MdeMostlyNotFoundError(
                f"{label}: {not_found} of {total} alerts listed minutes ago came back 'not found' from "
                f"{_api_host(client)} (more than {MAX_NOT_FOUND_SHARE:.0%} of a batch): is the connection's host "
                "the tenant's MDE API, with no proxy answering in between? The hour is not published."
            )
        if on_result is not None:
            on_result(results[-1])
        if done == total or done % progress_every == 0:
            _log_progress(logger, label, done, total, before, stats_of(client), time.monotonic() - started)
    if not entries:
        logger.info("%s: no alerts", label)
    return results


def _api_host(client: Any) -> str:
    """The API base URL the client calls (a test double may have none)."""
    config = getattr(client, "config", None)
    return getattr(config, "api_base_url", None) or "the MDE API"


def _failed_result(entry: Mapping[str, Any], exc: Exception, fetched_at: datetime, logger) -> FetchResult:
    reason = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    # for_log: an id or message from the service can neither forge nor flood log lines.
    logger.warning("alert %s: IPs not fetched (%s); recorded with ips_status 'error'", for_log(entry["alert_id"]), for_log(reason))
    return {
        "alert_id": entry["alert_id"],
        "last_update_time": entry["last_update_time"],
        "status": IPS_ERROR,
        "ips": [],
        "invalid_ip_values": [],
        "fetched_at": fetched_at.isoformat(),
        "error": reason,
    }


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
