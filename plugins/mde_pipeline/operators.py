"""Airflow operators of the MDE alert-IPs pipeline, thin on purpose.

The work is in plain functions that a ``@task`` can call as well:
:func:`mde_pipeline.alert_listing.list_alerts_for_interval` (listing),
:func:`mde_pipeline.batching.make_batches` and :func:`fetch_batch_ips` (below).

Failure policy: errors that a retry cannot cure (a connection that does not parse, a
token request refused by Entra ID or a 401 that a fresh token did not cure, a missing
permission (403), a request the service rejects (400), an alert id that is not an MDE
id) fail the task at once through ``AirflowFailException``, keeping the typed error as
its cause. Everything else (5xx, timeouts, dropped connections, an authority that cannot
be reached, throttling beyond the wait budget, a malformed answer, a cursor that does
not advance) is raised as is, so the task's ``retries`` apply. An access token that
expires mid-run is not such a case: the client refreshes it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Protocol, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mde_pipeline.alert_listing import MAX_PAGE_SIZE, AlertListing, list_interval
from mde_pipeline.batching import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCHES, make_batches
from mde_pipeline.errors import (
    InvalidAlertIdError,
    MdeAuthenticationError,
    MdeBadRequestError,
    MdePermissionError,
)
from mde_pipeline.ip_addresses import canonical_ips

MDE_POOL = "mde_api"
DEFAULT_CONN_ID = "mde_default"

# Retrying cannot fix these: fail without spending the task's retries (and API budget).
NOT_RETRYABLE_ERRORS = (MdePermissionError, MdeBadRequestError, InvalidAlertIdError)

IPS_OK, IPS_EMPTY, IPS_NOT_FOUND = "ok", "empty", "not_found"

log = logging.getLogger(__name__)


class AlertIpsApi(Protocol):
    """The part of ``mde_pipeline.client.MdeClient`` the fetch needs."""

    def get_alert_ips(self, alert_id: str) -> list[str] | None: ...


@contextmanager
def _mde_client(conn_id: str):
    from mde_pipeline.hooks import MdeHook  # azure-core and friends only when a task runs

    hook = MdeHook(mde_conn_id=conn_id)
    try:
        yield hook.get_client()
    finally:
        hook.close()


def is_configuration_error(exc: BaseException) -> bool:
    """True when only a change of configuration (not time) can make the call succeed."""
    from mde_pipeline.client import MdeConfigurationError  # azure-core: not at DAG parse time

    if isinstance(exc, (*NOT_RETRYABLE_ERRORS, MdeConfigurationError)):
        return True
    # A refusal (HTTP 401, or Entra ID's AADSTS code: bad secret, unknown tenant or app)
    # is final; a token request that never got an answer (network) is worth a retry.
    return isinstance(exc, MdeAuthenticationError) and (exc.status in (400, 401) or bool(exc.code))


def _fail_fast_on_configuration_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        if is_configuration_error(exc):
            raise AirflowFailException(f"{type(exc).__name__}: {exc} (not retried: fix the configuration)") from exc
        raise


# --------------------------------------------------------------------------- listing


StagingWriter = Callable[[AlertListing, Any], None]


class MdeListAlertsOperator(BaseOperator):
    """List the alerts of ``[data_interval_start, data_interval_end)`` and return batches.

    Returns (to XCom) the list of batch dicts of :func:`mde_pipeline.batching.make_batches`,
    ready for ``MdeFetchAlertIpsOperator.partial(...).expand(batch=<this>.output)``.

    The full alert entities are too big for XCom. ``staging_writer(listing, context)``
    receives the :class:`~mde_pipeline.alert_listing.AlertListing` (``alerts``,
    ``tenant_id``, ``listed_at``, ``start``/``end`` ticks, ``stats``) before the batches
    are returned, and is expected to write it under
    ``<lake root>/_staging/<interval>/<run_id>/`` (see docs/DESIGN.md, "Lake"), e.g.
    ``write_staging_json(location, context["data_interval_start"], context["run_id"],
    "alerts", listing.as_document())``. If it raises, the task fails before returning
    batches, so nothing is fetched for a listing that was not staged. Without a writer
    only the batches survive the task.
    """

    template_fields: Sequence[str] = ("data_interval_start", "data_interval_end", "mde_conn_id", "batch_size")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        data_interval_start: Any = "{{ data_interval_start }}",
        data_interval_end: Any = "{{ data_interval_end }}",
        mde_conn_id: str = DEFAULT_CONN_ID,
        page_size: int = MAX_PAGE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batches: int = DEFAULT_MAX_BATCHES,
        staging_writer: StagingWriter | None = None,
        pool: str = MDE_POOL,  # listing calls share the API budget with the IP calls
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.mde_conn_id = mde_conn_id
        self.page_size = page_size
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.staging_writer = staging_writer

    def execute(self, context: Any) -> list[dict[str, Any]]:
        # int(): a templated batch_size ("{{ params.batch_size }}") renders as a string.
        batch_size = int(self.batch_size)

        def run() -> list[dict[str, Any]]:
            with _mde_client(self.mde_conn_id) as client:
                before = _stats_snapshot(client)
                listing = list_interval(client, self.data_interval_start, self.data_interval_end, self.page_size)
                listing.tenant_id = client.tenant_id
                api = {name: value - before[name] for name, value in _stats_snapshot(client).items()}
            if self.staging_writer is not None:
                self.staging_writer(listing, context)
            batches = make_batches(listing.alerts, batch_size=batch_size, max_batches=self.max_batches)
            self.log.info(
                "%d alerts in [%s, %s) -> %d batches of up to %d; listing %s; API %s",
                len(listing.alerts),
                self.data_interval_start,
                self.data_interval_end,
                len(batches),
                len(batches[0]["alerts"]) if batches else 0,
                listing.stats.as_dict(),
                api,
            )
            return batches

        return _fail_fast_on_configuration_errors(run)


# --------------------------------------------------------------------------- fetching


def fetch_batch_ips(
    client: AlertIpsApi,
    batch: dict[str, Any],
    *,
    logger: logging.Logger | logging.LoggerAdapter = log,
    progress_every: int = 25,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> list[dict[str, Any]]:
    """``GET /api/alerts/{id}/ips`` for each alert of one batch, one call per alert.

    Pacing is the client's (its limiter reserves a slot before every attempt). Returns
    one compact, JSON-serialisable result per alert, in batch order::

        {"alert_id", "last_update_time" (as listed), "status": "ok" | "empty" | "not_found",
         "ips": [[canonical ip, 4 | 6], ...], "invalid_ip_values": [...], "fetched_at": ISO}

    404 is ``not_found`` (the alert is gone), an empty ``value`` is ``empty``; strings
    that are not IPs are logged as warnings and kept in ``invalid_ip_values``. An alert
    whose strings are all invalid is ``ok`` with no ``ips``.
    """
    entries = batch["alerts"]
    total = len(entries)
    label = f"batch {batch.get('batch_index', '?')}/{batch.get('batch_count', '?')}"
    before = _stats_snapshot(client)
    started = time.monotonic()
    results = []
    for done, entry in enumerate(entries, start=1):
        alert_id = entry["alert_id"]
        values = client.get_alert_ips(alert_id)
        results.append(_ips_result(entry, values, clock(), logger))
        if done == total or done % progress_every == 0:
            _log_progress(logger, label, done, total, before, _stats_snapshot(client), time.monotonic() - started)
    if not entries:
        logger.info("%s: no alerts", label)
    return results


def _ips_result(entry: dict[str, Any], values: list[Any] | None, fetched_at: datetime, logger) -> dict[str, Any]:
    result = {
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
        # %r: a hostile string cannot forge log lines.
        logger.warning(
            "alert %s: %r is not an IP address (%s); kept out of the ip column",
            entry["alert_id"],
            invalid.value,
            invalid.reason,
        )
    result["status"] = IPS_OK
    result["ips"] = [ip.as_pair() for ip in ip_set.ips]
    result["invalid_ip_values"] = [
        invalid.value if isinstance(invalid.value, str) else json.dumps(invalid.value) for invalid in ip_set.invalid
    ]
    return result


_STAT_FIELDS = ("calls", "throttled", "retries", "wait_seconds")


def _stats_snapshot(client: Any) -> dict[str, float]:
    stats = getattr(client, "stats", None)
    return {name: getattr(stats, name, 0) or 0 for name in _STAT_FIELDS}


def _log_progress(logger, label: str, done: int, total: int, before: dict, after: dict, elapsed: float) -> None:
    delta = {name: after[name] - before[name] for name in _STAT_FIELDS}
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


class MdeFetchAlertIpsOperator(BaseOperator):
    """Fetch the IPs of one batch of alerts (one mapped task instance per batch).

    ``batch`` is one dict from :class:`MdeListAlertsOperator` (or a JSON string of one).
    Returns the list of per-alert results of :func:`fetch_batch_ips`. Runs in pool
    ``mde_api`` by default, mapped or not.
    """

    template_fields: Sequence[str] = ("batch", "mde_conn_id")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        batch: dict[str, Any] | str,
        mde_conn_id: str = DEFAULT_CONN_ID,
        pool: str = MDE_POOL,
        progress_every: int = 25,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.batch = batch
        self.mde_conn_id = mde_conn_id
        self.progress_every = progress_every

    @classmethod
    def partial(cls, **kwargs: Any):
        # A mapped task takes its pool from the partial() arguments at scheduling time,
        # not from __init__ defaults: without this it would land in default_pool.
        kwargs.setdefault("pool", MDE_POOL)
        return super().partial(**kwargs)

    def execute(self, context: Any) -> list[dict[str, Any]]:
        batch = json.loads(self.batch) if isinstance(self.batch, str) else self.batch
        if not isinstance(batch, dict) or not isinstance(batch.get("alerts"), list):
            raise AirflowFailException(f"batch must be a dict with an 'alerts' list, got {type(batch).__name__}")

        def run() -> list[dict[str, Any]]:
            with _mde_client(self.mde_conn_id) as client:
                return fetch_batch_ips(client, batch, logger=self.log, progress_every=self.progress_every)

        return _fail_fast_on_configuration_errors(run)
