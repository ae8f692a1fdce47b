"""Where the lake is, as Airflow configures it: Variables and the lake connection.

Variable ``mde_lake_root`` (default: the repo's ``lake/`` folder) names the root;
Variable ``mde_lake_conn_id`` (default ``mde_lake``) names the Azure connection used for
``abfs://`` roots, whose filesystem comes from Airflow's ``ObjectStoragePath`` and the
Azure provider (adlfs). The lake layer itself never imports Airflow: it gets the
filesystem factory from here.

A plain-http blob endpoint off loopback (the docker-compose sandbox reaches Azurite as
``http://azurite:10000``) is refused unless the lake connection's extra says
``"allow_plain_http": true`` (:func:`connection_allows_plain_http`): local sandboxes only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mde_pipeline.common.redaction import redact
from mde_pipeline.lake.location import LakeLocation, LakeLocationError, resolve_lake_location

ROOT_VARIABLE = "mde_lake_root"
CONN_ID_VARIABLE = "mde_lake_conn_id"
DEFAULT_CONN_ID = "mde_lake"
PLAIN_HTTP_EXTRA = "allow_plain_http"  # lake connection extra: sandboxes only
# plugins/mde_pipeline/airflow/lake_location.py -> <repo>/lake
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "lake"


def configured_lake_location(root: str | os.PathLike | None = None, conn_id: str | None = None) -> LakeLocation:
    """The lake for ``root`` (default: Variable ``mde_lake_root``, then ``<repo>/lake``).

    ``conn_id`` (default: Variable ``mde_lake_conn_id``, then ``mde_lake``) is used for
    ``abfs`` roots only. Explicit arguments win over the Variables.
    """
    if root is None:
        root = configured_lake_root()
    return resolve_lake_location(
        root,
        conn_id or configured_lake_conn_id(),
        blob_filesystem=airflow_blob_filesystem,
        plain_http_allowed=connection_allows_plain_http,
    )


def configured_tenant_location(tenant_id: str, root: str | os.PathLike | None = None) -> LakeLocation:
    """One tenant's part of the configured lake (``tenant_id=<id>`` below each top folder):
    what every hourly write, staging, fetch cache and look-back of that tenant uses."""
    return configured_lake_location(root).for_tenant(tenant_id)


def configured_lake_root() -> str:
    """Variable ``mde_lake_root``, or the repo's ``lake/`` folder when it is not set."""
    return _variable(ROOT_VARIABLE) or str(DEFAULT_ROOT)


def configured_lake_conn_id() -> str:
    """Variable ``mde_lake_conn_id``, or ``mde_lake`` when it is not set."""
    return _variable(CONN_ID_VARIABLE) or DEFAULT_CONN_ID


def _variable(key: str) -> str | None:
    """An Airflow Variable, or None when it is not defined anywhere.

    Outside a task (CLI, tests, no metadata DB) ``Variable.get`` consults only the
    secrets backends a client process has, which include the environment
    (``AIRFLOW_VAR_<KEY>``); inside a task it asks the API server. Only "not found"
    falls back to the default: a broken secrets backend must not silently send the
    data somewhere else.
    """
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType

    try:
        value = Variable.get(key)
    except AirflowRuntimeError as exc:
        if getattr(exc.error, "error", None) == ErrorType.VARIABLE_NOT_FOUND:
            return None
        raise
    return str(value).strip() or None


def connection_allows_plain_http(conn_id: str | None) -> bool:
    """The lake connection's extra ``allow_plain_http`` (true/false, default false): whether
    a plain-http blob endpoint off loopback is accepted. Any other value is a configuration
    mistake and refused, naming the extra."""
    if not conn_id:
        return False
    from airflow.sdk import BaseHook

    value = BaseHook.get_connection(conn_id).extra_dejson.get(PLAIN_HTTP_EXTRA, False)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise LakeLocationError(
            f"connection {conn_id!r}: extra {PLAIN_HTTP_EXTRA!r} must be true or false, got {value!r}"
        )
    return value


def airflow_blob_filesystem(protocol: str, root: str, conn_id: str) -> Any:
    """The fsspec filesystem of ``protocol://root`` through Airflow's connection ``conn_id``."""
    # ObjectStoragePath would read "container@account..." as "conn_id@host" and drop the
    # container: the lake hands over the short form and the connection id separately.
    from airflow.sdk import ObjectStoragePath

    _quiet_azure_http_logging()
    try:
        return ObjectStoragePath(f"{protocol}://{root}", conn_id=conn_id).fs
    except Exception as exc:
        raise LakeLocationError(
            f"cannot open lake root {protocol}://{root} with connection {conn_id!r} "
            f"(Variable {CONN_ID_VARIABLE}): {type(exc).__name__}: {redact(str(exc))}"
        ) from exc


def _quiet_azure_http_logging() -> None:
    # azure-core logs every request and response at INFO; in task logs that is noise
    # that drowns the pipeline's own lines. Respect a level someone set on purpose.
    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
