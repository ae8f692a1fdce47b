"""Where the lake is: Variable ``mde_lake_root`` -> a filesystem and a root path in it.

Accepted roots:

* a local path (``/data/lake``, ``~/lake``; relative paths resolve against the current
  directory) or ``file:///data/lake``;
* ``abfs://container@account.dfs.core.windows.net/prefix`` (``abfss://`` too) or the
  short ``abfs://container/prefix``, through Airflow's ``ObjectStoragePath`` and the
  Azure provider's ``abfs`` filesystem (adlfs) with the connection named by Variable
  ``mde_lake_conn_id`` (default ``mde_lake``). The connection needs ``account_name``
  in its extra (or a ``connection_string``) plus a credential the provider understands
  (account key as password or ``account_key``, ``sas_token``, service principal with
  ``tenant_id``, managed / workload identity).

Every function takes an explicit ``root`` / ``conn_id`` so tests and the analytics CLI
work without Airflow Variables. Airflow is imported only to read a Variable or to open
an ``abfs`` root: a local lake needs neither a metadata DB nor Airflow at all.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

ROOT_VARIABLE = "mde_lake_root"
CONN_ID_VARIABLE = "mde_lake_conn_id"
DEFAULT_CONN_ID = "mde_lake"
# plugins/mde_pipeline/lake/location.py -> <repo>/lake
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "lake"

BLOB_PROTOCOLS = ("abfs", "abfss")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ACCOUNT_HOST = re.compile(r"(?P<account>[a-z0-9]{3,24})\.(?:dfs|blob)\.(?P<suffix>.+)", re.IGNORECASE)

log = logging.getLogger(__name__)


class LakeLocationError(ValueError):
    """The lake root or its connection cannot be used."""


@dataclass(frozen=True)
class LakeLocation:
    """A resolved lake root.

    ``fs`` is the fsspec filesystem; ``root`` is the root in that filesystem's own path
    terms (``/data/lake`` or ``container/prefix``); ``url`` is what was configured.
    """

    url: str
    protocol: str  # "file" or "abfs"
    root: str
    fs: AbstractFileSystem = field(repr=False, compare=False)
    conn_id: str | None = None
    account_name: str | None = None

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def path(self, *parts: str) -> str:
        """A path under the root, in the filesystem's terms (for ``self.fs``)."""
        for part in parts:
            if any(piece in ("", ".", "..") for piece in part.strip("/").split("/")):
                raise LakeLocationError(f"invalid lake path component {part!r}")
        return "/".join([self.root.rstrip("/"), *(part.strip("/") for part in parts)])

    def uri(self, *parts: str) -> str:
        """A path readers can open: a local path, or ``abfs://container/prefix/...``.

        DuckDB reads an ``abfs://`` uri after ``duckdb.register_filesystem(location.fs)``.
        """
        path = self.path(*parts)
        return path if self.is_local else f"{self.protocol}://{path}"

    def table_glob(self, table: str) -> str:
        """The glob of one table's committed files (``*.parquet`` never matches temp files)."""
        return self.uri(table, "*", "*.parquet")

    def object_storage_path(self, *parts: str):
        """The same place as Airflow's ``ObjectStoragePath`` (for Assets, lineage, IO)."""
        from airflow.sdk import ObjectStoragePath

        if self.is_local:
            return ObjectStoragePath(f"file://{self.path(*parts)}")
        return ObjectStoragePath(f"{self.protocol}://{self.path(*parts)}", conn_id=self.conn_id)


def resolve_lake_location(root: str | os.PathLike | None = None, conn_id: str | None = None) -> LakeLocation:
    """The lake location for ``root`` (default: Variable ``mde_lake_root``, then ``<repo>/lake``).

    ``conn_id`` (default: Variable ``mde_lake_conn_id``, then ``mde_lake``) is used for
    ``abfs`` roots only.
    """
    if root is None:
        root = configured_lake_root()
    text = os.fspath(root).strip()
    if not text:
        raise LakeLocationError("the lake root is empty")
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("", "file", "local"):
        return _local_location(text, scheme)
    if scheme in BLOB_PROTOCOLS:
        return _blob_location(text, conn_id if conn_id is not None else configured_lake_conn_id())
    raise LakeLocationError(
        f"unsupported lake root scheme {scheme!r} in {text!r}: use a local path, file:// or "
        f"abfs://container@account.dfs.core.windows.net/prefix"
    )


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
    try:
        from airflow.sdk import Variable
        from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    except ImportError:  # the analytics side can run without Airflow installed
        return os.environ.get(f"AIRFLOW_VAR_{key.upper()}") or None
    try:
        value = Variable.get(key)
    except AirflowRuntimeError as exc:
        if getattr(exc.error, "error", None) == ErrorType.VARIABLE_NOT_FOUND:
            return None
        raise
    return str(value).strip() or None


def _local_location(url: str, scheme: str) -> LakeLocation:
    from fsspec.implementations.local import LocalFileSystem

    text = url
    if scheme:
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise LakeLocationError(f"file:// root with a remote host is not supported: {text!r}")
        if parts.query or parts.fragment:
            raise LakeLocationError(f"file:// root with a query or fragment: {text!r}")
        text = unquote(parts.path)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    root = os.path.normpath(path)
    if os.path.exists(root) and not os.path.isdir(root):
        raise LakeLocationError(f"the lake root {root} exists and is not a directory")
    return LakeLocation(url=url, protocol="file", root=root, fs=LocalFileSystem())


def parse_blob_root(text: str) -> tuple[str, str, str | None, str]:
    """``(protocol, container, account or None, prefix)`` of an ``abfs[s]://`` root."""
    parts = urlsplit(text)
    protocol = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise LakeLocationError(f"lake root with a query or fragment: {text!r}")
    container, at, host = parts.netloc.rpartition("@")
    account = None
    if at:
        match = _ACCOUNT_HOST.fullmatch(host)
        if not match:
            raise LakeLocationError(
                f"lake root host {host!r} is not <account>.dfs.core.windows.net (or another Azure "
                f"storage suffix): {text!r}"
            )
        account = match.group("account").lower()
    else:
        container = host
    if not _CONTAINER.fullmatch(container):
        raise LakeLocationError(
            f"invalid container name {container!r} in {text!r}: 3-63 lower-case letters, digits and "
            f"single hyphens"
        )
    prefix = "/".join(part for part in unquote(parts.path).split("/") if part)
    if any(part in (".", "..") for part in prefix.split("/")):
        raise LakeLocationError(f"'.' or '..' in the lake root prefix: {text!r}")
    return protocol, container, account, prefix


def _blob_location(text: str, conn_id: str) -> LakeLocation:
    protocol, container, account, prefix = parse_blob_root(text)
    root = f"{container}/{prefix}" if prefix else container
    fs = _airflow_blob_filesystem(protocol, root, conn_id, text)
    connected_account = _filesystem_account(fs)
    if account and connected_account and account != connected_account:
        raise LakeLocationError(
            f"lake root {text!r} names storage account {account!r} but connection {conn_id!r} "
            f"points at {connected_account!r}"
        )
    return LakeLocation(
        url=text, protocol="abfs", root=root, fs=fs, conn_id=conn_id, account_name=account or connected_account
    )


def _airflow_blob_filesystem(protocol: str, root: str, conn_id: str, text: str) -> AbstractFileSystem:
    # ObjectStoragePath would read "container@account..." as "conn_id@host" and drop the
    # container: hand it the short form and the connection id separately.
    from airflow.sdk import ObjectStoragePath

    _quiet_azure_http_logging()
    try:
        return ObjectStoragePath(f"{protocol}://{root}", conn_id=conn_id).fs
    except Exception as exc:
        raise LakeLocationError(
            f"cannot open lake root {text!r} with connection {conn_id!r} (Variable {CONN_ID_VARIABLE}): "
            f"{type(exc).__name__}: {redact(str(exc))}"
        ) from exc


_SECRET_VALUE = re.compile(r"(?i)(AccountKey=|SharedAccessSignature=|sig=|client_secret=|password=)[^;&\s'\"]+")


def redact(text: str) -> str:
    """``text`` with account keys, SAS signatures and secrets in it replaced by ``***``."""
    return _SECRET_VALUE.sub(r"\1***", text)


def _filesystem_account(fs: Any) -> str | None:
    account = getattr(fs, "account_name", None)
    if account:
        return str(account).lower()
    connection_string = getattr(fs, "connection_string", None) or ""
    match = re.search(r"(?:^|;)\s*AccountName=([^;]+)", connection_string, re.IGNORECASE)
    return match.group(1).strip().lower() if match else None


def _quiet_azure_http_logging() -> None:
    # azure-core logs every request and response at INFO; in task logs that is noise
    # that drowns the pipeline's own lines. Respect a level someone set on purpose.
    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
