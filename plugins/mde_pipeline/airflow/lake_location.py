"""Where the lake is, as Airflow configures it: Variables and the lake connection.

Variable ``mde_lake_root`` (default: the repo's ``lake/`` folder) names the root;
Variable ``mde_lake_conn_id`` (default ``mde_lake``) names the Azure connection used for
``abfs://`` roots, whose filesystem comes from Airflow's object storage (``get_fs``) and
the Azure provider (adlfs). The lake layer itself never imports Airflow: it gets the
filesystem factory from here.

A plain-http blob endpoint off loopback (the docker-compose sandbox reaches Azurite as
``http://azurite:10000``) is refused unless the lake connection's extra says
``"allow_plain_http": true`` (:func:`connection_allows_plain_http`): local sandboxes only.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.common.redaction import redact
from mde_pipeline.lake.location import LakeLocation, LakeLocationError, resolve_lake_location

ROOT_VARIABLE = "mde_lake_root"
RETENTION_VARIABLE = "mde_lake_retention_days"  # unset: the lake keeps everything
CONN_ID_VARIABLE = "mde_lake_conn_id"
DEFAULT_CONN_ID = "mde_lake"
PLAIN_HTTP_EXTRA = "allow_plain_http"  # lake connection extra: sandboxes only
# plugins/mde_pipeline/airflow/lake_location.py -> <repo>/lake when run from the repository;
# installed from the wheel there is no repository: <AIRFLOW_HOME>/lake (the image's volume).
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
REPO_LAKE = _PACKAGE_PARENT.parent / "lake" if _PACKAGE_PARENT.name == "plugins" else None


def default_lake_root() -> Path:
    """The lake when Variable ``mde_lake_root`` is not set."""
    if REPO_LAKE is not None:
        return REPO_LAKE
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "lake"


def configured_lake_location(root: str | os.PathLike | None = None, conn_id: str | None = None) -> LakeLocation:
    """The lake for ``root`` (default: Variable ``mde_lake_root``, then :func:`default_lake_root`).

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
    """Variable ``mde_lake_root``, or :func:`default_lake_root` when it is not set."""
    return _variable(ROOT_VARIABLE) or str(default_lake_root())


def configured_lake_conn_id() -> str:
    """Variable ``mde_lake_conn_id``, or ``mde_lake`` when it is not set."""
    return _variable(CONN_ID_VARIABLE) or DEFAULT_CONN_ID


def configured_retention_days() -> int | None:
    """Variable ``mde_lake_retention_days``: days the lake keeps before today, or None
    (unset, the default: keep everything). A bad value is a configuration error naming it."""
    from mde_pipeline.lake.retention import RetentionSettingError, parse_keep_days

    try:
        return parse_keep_days(_variable(RETENTION_VARIABLE), f"Variable {RETENTION_VARIABLE}")
    except RetentionSettingError as exc:
        raise MdeConfigurationError(str(exc)) from None


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
    # Not ObjectStoragePath(...).fs: it would read "container@account..." as
    # "conn_id@host", and its stores are cached per process by (protocol, conn_id), so a
    # long-lived process (the API server's status page, a test session) would keep a
    # connection's old endpoint and key after the connection changed. get_fs reads the
    # connection each time; fsspec still hands back the same instance while it is unchanged.
    from airflow.sdk.io import get_fs

    _quiet_azure_http_logging()
    try:
        return get_fs(protocol, conn_id)
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


# Local errors only a configuration change cures (not a full disk, not an I/O error).
_LOCAL_CONFIG_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EEXIST)


def check_lake_writable(location: LakeLocation) -> None:
    """Fail before any API call when the lake cannot take this run's files: make the
    tenant's staging folder, write and delete a small file there (local and abfs alike;
    on abfs the container must exist first). A refusal is an MdeConfigurationError naming
    Variable ``mde_lake_root`` (and ``mde_lake_conn_id`` for abfs); anything else (a
    network blip) is raised as is, so the task's retries apply."""
    folder = location.path("_staging")
    probe = f"{folder}/.mde-write-probe-{uuid.uuid4().hex}"
    fs = location.fs
    try:
        if not location.is_local:
            container = location.root.split("/", 1)[0]
            if not fs.exists(container):
                raise FileNotFoundError(errno.ENOENT, f"container {container!r} does not exist")
        fs.makedirs(folder, exist_ok=True)
        fs.pipe_file(probe, b"probe")
        fs.rm_file(probe)
    except Exception as exc:
        if not _is_configuration_refusal(exc):
            raise
        where = f"Variable {ROOT_VARIABLE} = {location.url!r}"
        if not location.is_local:
            where += f" with connection {location.conn_id!r} (Variable {CONN_ID_VARIABLE})"
        raise MdeConfigurationError(
            f"the lake root cannot be written: {where}: {type(exc).__name__}: {redact(str(exc))[:300]}; "
            f"set {ROOT_VARIABLE} to a folder this worker can create and write"
            + ("" if location.is_local else " and a connection that may write to that container")
        ) from None


def _is_configuration_refusal(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _LOCAL_CONFIG_ERRNOS:
        return True
    if isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError)):
        return True
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    if isinstance(exc, (ClientAuthenticationError, ResourceNotFoundError)):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in (401, 403, 404)
