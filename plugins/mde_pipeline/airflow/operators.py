"""Airflow operators of the MDE alert-IPs pipeline, thin on purpose.

The work is in importable functions: :func:`mde_pipeline.api.listing.list_interval`,
:func:`mde_pipeline.airflow.batching.make_batches`, :func:`mde_pipeline.api.fetch.fetch_batch_ips`
and the lake steps of :mod:`mde_pipeline.airflow.lake_tasks`; ``publish`` names what it
wrote to OpenLineage (:mod:`mde_pipeline.airflow.lineage`).

Failure policy: errors that a retry cannot cure (a connection that does not parse, a CA
bundle that is missing or does not verify the server, a token request refused by Entra
ID (any 400 of its metadata or token endpoint, a 401) or a 401 that a fresh token did not
cure, a missing permission (403), a request the service rejects (400) on the listing, a
lake root that cannot be written, probed before any call) fail the task at once through
``AirflowFailException``, keeping the typed error as its cause. On ``/ips`` a failure of
one alert (5xx or timeout after the client's retries, an unparseable answer, a 400, an id
that is not an MDE id) is that alert's ``error`` result, up to a threshold past which
the batch raises ``MdeTooManyFailedAlertsError`` (api/fetch.py). Everything else (5xx,
timeouts, dropped connections, an authority that cannot be reached, throttling beyond
the wait budget, a malformed answer, a cursor that does not advance) is raised as is,
so the task's ``retries`` apply. An access token that expires mid-run is not such a
case: the client refreshes it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mde_pipeline.airflow import settings
from mde_pipeline.airflow.batching import DEFAULT_MAX_BATCHES, make_batches
from mde_pipeline.airflow.cached_fetch import as_flag, fetch_batch_cached
from mde_pipeline.airflow.lake_location import check_lake_writable, configured_tenant_location
from mde_pipeline.airflow.lake_tasks import publish_interval, publish_location, push_listed_tenant, stage_listing
from mde_pipeline.airflow.lineage import lake_datasets, lake_lineage
from mde_pipeline.airflow.priority import BACKFILL_RUN_TYPE, is_backfill_run
from mde_pipeline.airflow.lookback import LOOKBACK_MAX_BATCHES, list_lookback, stage_lookback
from mde_pipeline.airflow.settings import DEFAULT_BATCH_SIZE, MDE_CONN_ID, MDE_POOL
from mde_pipeline.api.errors import (
    InvalidAlertIdError,
    MdeAuthenticationError,
    MdeBadRequestError,
    MdeConfigurationError,
    MdePermissionError,
)
from mde_pipeline.api.listing import MAX_PAGE_SIZE, list_interval
from mde_pipeline.api.stats import stats_of
from mde_pipeline.common.log_text import error_text
from mde_pipeline.lake.location import LakeLocationError

# Retrying cannot fix these: fail without spending the task's retries (and API budget).
NOT_RETRYABLE_ERRORS = (MdePermissionError, MdeBadRequestError, InvalidAlertIdError)


def is_backfill(context: Any) -> bool:
    """The task runs for a backfill: the run's type when the context has it, else its id."""
    run_type = getattr(context.get("dag_run"), "run_type", None)
    if run_type is not None:
        return getattr(run_type, "value", run_type) == BACKFILL_RUN_TYPE
    return is_backfill_run(context.get("run_id"))


@contextmanager
def _mde_client(conn_id: str, context: Any):
    from mde_pipeline.airflow.hooks import MdeHook  # azure-core and friends only when a task runs

    # A backfill's calls leave the hourly loads their share of the budget (the pool's
    # priority rule orders slots only; the budget ledger orders calls).
    hook = MdeHook(mde_conn_id=conn_id, background=is_backfill(context))
    try:
        yield hook.get_client()
    finally:
        hook.close()


def is_configuration_error(exc: BaseException) -> bool:
    """True when only a change of configuration (not time) can make the call succeed."""
    if isinstance(exc, (*NOT_RETRYABLE_ERRORS, MdeConfigurationError, LakeLocationError)):
        return True  # LakeLocationError: Variable mde_lake_root / its connection as configured
    # A refusal (HTTP 401, or Entra ID's AADSTS code: bad secret, unknown tenant or app)
    # is final; a token request that never got an answer (network) is worth a retry.
    return isinstance(exc, MdeAuthenticationError) and (exc.status in (400, 401) or bool(exc.code))


def _fail_fast_on_configuration_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        if is_configuration_error(exc):
            raise AirflowFailException(
                f"{error_text(exc)} (not retried: fix the configuration)"
            ) from exc
        raise


# --------------------------------------------------------------------------- listing


class MdeListAlertsOperator(BaseOperator):
    """List the alerts of ``[data_interval_start, data_interval_end)``, stage them, return batches.

    The full alert entities are too big for XCom: they go to the run's staging folder in
    the lake (:func:`mde_pipeline.airflow.lake_tasks.stage_listing`), where ``publish``
    reads them. Only the batches of :func:`mde_pipeline.airflow.batching.make_batches`
    travel through XCom, ready for ``MdeFetchAlertIpsOperator.partial(...).expand(batch=<this>.output)``.
    A listing that could not be staged fails the task before any IP is fetched.
    """

    template_fields: Sequence[str] = ("data_interval_start", "data_interval_end", "mde_conn_id", "batch_size")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        data_interval_start: Any = "{{ data_interval_start }}",
        data_interval_end: Any = "{{ data_interval_end }}",
        mde_conn_id: str = MDE_CONN_ID,
        page_size: int = MAX_PAGE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batches: int = DEFAULT_MAX_BATCHES,
        lookback: Any = None,
        pool: str = MDE_POOL,  # listing calls share the API budget with the IP calls
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.lookback = settings.LOOKBACK if lookback is None else lookback
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.mde_conn_id = mde_conn_id
        self.page_size = page_size
        self.batch_size = batch_size
        self.max_batches = max_batches

    def execute(self, context: Any) -> list[dict[str, Any]]:
        # int(): a templated batch_size ("{{ params.batch_size }}") renders as a string.
        batch_size = int(self.batch_size)

        def run() -> list[dict[str, Any]]:
            with _mde_client(self.mde_conn_id, context) as client:
                # The tenant's own part of the lake: staging, look-back and commits never
                # touch another tenant's files. client.tenant_id is canonical (a domain
                # name resolved from the token); publish finds it in XCom.
                location = configured_tenant_location(client.tenant_id)
                check_lake_writable(location)  # a lake that cannot take the listing: before any call
                push_listed_tenant(context, client.tenant_id)
                before = stats_of(client)
                listing = list_interval(client, self.data_interval_start, self.data_interval_end, self.page_size)
                late = list_lookback(
                    client,
                    location,
                    self.data_interval_start,
                    self.lookback,
                    page_size=self.page_size,
                    batch_size=batch_size,
                    is_fatal=is_configuration_error,
                    logger=self.log,
                )
                api = {name: value - before[name] for name, value in stats_of(client).items()}
            stage_listing(listing.as_document(), context, location)
            max_batches = self.max_batches - (LOOKBACK_MAX_BATCHES if late else 0)
            batches = make_batches(listing.alerts, batch_size=batch_size, max_batches=max_batches)
            if late is not None:
                batches += stage_lookback(late, context, location)
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


class MdeFetchAlertIpsOperator(BaseOperator):
    """Fetch the IPs of one batch of alerts (one mapped task instance per batch).

    ``batch`` is one dict from :class:`MdeListAlertsOperator` (or a JSON string of one).
    Returns the list of per-alert results of :func:`mde_pipeline.api.fetch.fetch_batch_ips`,
    through the lake's fetch cache (:mod:`mde_pipeline.airflow.cached_fetch`: versions
    already fetched are not fetched again unless ``refetch``). Runs in pool ``mde_api``
    by default, mapped or not.
    """

    template_fields: Sequence[str] = ("batch", "mde_conn_id", "refetch")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        batch: dict[str, Any] | str,
        mde_conn_id: str = MDE_CONN_ID,
        pool: str = MDE_POOL,
        progress_every: int = 25,
        refetch: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.batch = batch
        self.mde_conn_id = mde_conn_id
        self.progress_every = progress_every
        self.refetch = refetch

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
            with _mde_client(self.mde_conn_id, context) as client:
                return fetch_batch_cached(
                    client,
                    batch,
                    configured_tenant_location(client.tenant_id),
                    client.tenant_id,
                    refetch=as_flag(self.refetch),
                    flush_every=settings.CACHE_FLUSH_EVERY,
                    label=f"{context.get('run_id', 'run')}-{batch.get('batch_index', 0)}",
                    logger=self.log,
                    progress_every=self.progress_every,
                    # A late version that cannot be fetched must not fail this run's own hour.
                    partial_on_error=(lambda exc: not is_configuration_error(exc)) if batch.get("lookback") else None,
                )

        return _fail_fast_on_configuration_errors(run)


# --------------------------------------------------------------------------- publishing


class MdePublishOperator(BaseOperator):
    """Commit the run's interval to the lake (:func:`mde_pipeline.airflow.lake_tasks.publish_interval`).

    ``results`` is the mapped fetch task's output (``MdeFetchAlertIpsOperator...expand(...).output``;
    None when the hour mapped no batch: it still commits empty files). After a
    successful commit the OpenLineage provider, when configured, asks
    ``get_openlineage_facets_on_complete`` for the outputs: each table's tenant
    partition (:mod:`mde_pipeline.airflow.lineage`).
    """

    template_fields: Sequence[str] = ("results", "mde_conn_id")
    ui_color = "#e8f5e9"

    def __init__(self, *, results: Any = None, mde_conn_id: str = MDE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = results
        self.mde_conn_id = mde_conn_id
        self._written: tuple[Any, list[str]] | None = None  # (location, tables) of this execution

    def execute(self, context: Any) -> dict[str, Any]:
        results = self.results
        # Index by length: iterating a lazy XCom sequence probes past its end and logs an error.
        batches = [results[i] for i in range(len(results))] if results is not None else []
        # The connection names the tenant, whose part of the lake holds the staged listing.
        location = publish_location(context, self.mde_conn_id)
        summary = publish_interval(context, batches, location)
        self._written = (location, list(summary["files"]))
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        location, tables = self._written if self._written else (None, [])
        return lake_lineage(lake_datasets(location, tables) if location is not None else [])
