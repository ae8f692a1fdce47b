"""What one ``GET /api/alerts/{id}/ips`` call leaves behind: the fetch result.

The fetch step (API side) makes these; the lake turns them into rows. Compact and
JSON-serialisable, so they travel through XCom.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

# alerts.ips_status values
IPS_OK = "ok"  # 200 with at least one value
IPS_EMPTY = "empty"  # 200 with "value": []
IPS_NOT_FOUND = "not_found"  # the service's 404: the alert is gone
IPS_ERROR = "error"  # the fetch failed for good after its retries; ``error`` says why
IPS_STATUSES = (IPS_OK, IPS_EMPTY, IPS_NOT_FOUND, IPS_ERROR)


class FetchResult(TypedDict):
    """The IPs of one alert version."""

    alert_id: str
    last_update_time: str  # as listed, all 7 digits: with alert_id, the join key
    status: str  # one of IPS_STATUSES
    ips: list[list]  # [[canonical ip, 4 | 6], ...]; empty unless status is IPS_OK
    invalid_ip_values: list[str]  # strings that are not IPs, kept for the record
    fetched_at: str  # ISO 8601 UTC
    error: NotRequired[str]  # with IPS_ERROR only: the error, without secrets


class BatchEntry(TypedDict):
    """One alert version of a batch: what the fetch needs to know about it."""

    alert_id: str
    last_update_time: str  # as listed
