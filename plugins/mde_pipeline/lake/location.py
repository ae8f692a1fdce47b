"""Where the lake is: a root -> a filesystem and a root path in it (no Airflow here).

Accepted roots:

* a local path (``/data/lake``, ``~/lake``; relative paths resolve against the current
  directory) or ``file:///data/lake``;
* ``abfs://container@account.dfs.core.windows.net/prefix`` (``abfss://`` too) or the
  short ``abfs://container/prefix``. Its filesystem comes from the caller's
  ``blob_filesystem(protocol, root_in_fs, conn_id)``: the Airflow face builds it from
  a connection (mde_pipeline.airflow.lake_location, which also reads the Variables
  ``mde_lake_root`` / ``mde_lake_conn_id``); tests build it for Azurite.

A blob endpoint over plain http is refused unless its host is loopback, or the caller's
``plain_http_allowed(conn_id)`` says the connection opted in (the Airflow face: the
connection's extra ``allow_plain_http: true``, for a local sandbox's Azurite only).

A local lake needs neither a metadata DB nor Airflow at all.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from mde_pipeline.common.redaction import redact
from mde_pipeline.common.tenant_ids import offline_tenant_id

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# (protocol, root in the filesystem's terms "container/prefix", connection id) -> filesystem
BlobFilesystemFactory = Callable[[str, str, "str | None"], "AbstractFileSystem"]
# connection id -> whether it opted in to a plain-http blob endpoint off loopback
PlainHttpPolicy = Callable[["str | None"], bool]

BLOB_PROTOCOLS = ("abfs", "abfss")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TENANT_PREFIX = "tenant_id="  # the partition level above date= (and month= in the IP index)
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
    # Set by for_tenant(): this location sees one tenant's part of every top folder.
    tenant_id: str | None = None

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def for_tenant(self, tenant_id: str) -> LakeLocation:
        """The same lake seen by one tenant: ``tenant_id=<id>`` right below each top folder.

        ``path("alerts", "date=2025-01-01")`` is then ``<root>/alerts/tenant_id=<id>/date=2025-01-01``,
        and the same for ``alert_ips``, ``_ip_index``, ``_staging`` and ``_locks``: every
        writer, lock, compaction and index works on one tenant's files without knowing it,
        and two tenants never share a file or a lock. Readers use the root location.
        The id is canonical (``canonical_partition_id``): one tenant, one folder.
        """
        return replace(self, tenant_id=canonical_partition_id(tenant_id))

    def path(self, *parts: str) -> str:
        """A path under the root, in the filesystem's terms (for ``self.fs``)."""
        pieces: list[str] = []
        for part in parts:
            split = part.strip("/").split("/")
            if any(piece in ("", ".", "..") for piece in split):
                raise LakeLocationError(f"invalid lake path component {part!r}")
            pieces += split
        if self.tenant_id is not None and pieces:
            pieces.insert(1, f"{TENANT_PREFIX}{self.tenant_id}")
        return "/".join([self.root.rstrip("/"), *pieces])

    def list_dir(self, *parts: str, detail: bool = False) -> list[Any] | None:
        """One directory under the root, or None when there is none: its base names, or
        with ``detail`` ``{"name", "type", "size", "mtime", "ino", "etag"}`` dicts (name a
        base name; what the filesystem has). A local lake is listed by ``os.scandir``:
        the analyst session lists every day on each statement and fsspec's local
        ``ls`` costs ~5x. ADLS uses fsspec's listing cache: callers that need the lake
        now invalidate it first."""
        path = self.path(*parts)
        try:
            if self.is_local:
                with os.scandir(path) as found:
                    if not detail:
                        return [e.name for e in found]
                    entries = []
                    for entry in found:
                        with suppress(FileNotFoundError):  # removed while listed: not there
                            entries.append(_local_entry(entry))
                    return entries
            listed = self.fs.ls(path, detail=detail)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not detail:
            return [base_name(p) for p in listed]
        return [{**e, "name": base_name(e["name"])} for e in listed]

    def uri(self, *parts: str) -> str:
        """A path readers can open: a local path, or ``abfs://container/prefix/...``.

        DuckDB reads an ``abfs://`` uri after ``duckdb.register_filesystem(location.fs)``.
        """
        path = self.path(*parts)
        return path if self.is_local else f"{self.protocol}://{path}"

    def table_glob(self, table: str) -> str:
        """The glob of one table's committed files (``*.parquet`` never matches temp files):
        every tenant's from the root, one tenant's from ``for_tenant()``."""
        if self.tenant_id is None:
            return self.uri(table, f"{TENANT_PREFIX}*", "*", "*.parquet")
        return self.uri(table, "*", "*.parquet")


def base_name(path: str) -> str:
    """The last component of a path or uri."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def _local_entry(entry: os.DirEntry) -> dict[str, Any]:
    """A scandir entry as fsspec's local ``ls(detail=True)`` describes it."""
    if entry.is_dir():
        return {"name": entry.name, "type": "directory"}
    stat = entry.stat()
    return {"name": entry.name, "type": "file", "size": stat.st_size, "mtime": stat.st_mtime, "ino": stat.st_ino}


def check_tenant_id(tenant_id: str) -> str:
    """A tenant id usable as one partition folder name (``tenant_id=<id>``), or an error.

    Entra tenant ids are GUIDs; a verified domain (``contoso.onmicrosoft.com``) passes too.
    """
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise LakeLocationError(
            f"tenant id {tenant_id!r} cannot name a lake partition: 1-128 letters, digits, '.', '-' or '_', "
            f"starting with a letter or digit"
        )
    return tenant_id


def canonical_partition_id(tenant_id: str) -> str:
    """The partition name of a tenant: its id in lower case (a GUID's canonical form, the
    token's ``tid``). A domain name is refused: it is the same tenant under another name,
    and only a token tells its GUID (common/tenant_ids.py)."""
    canonical = offline_tenant_id(check_tenant_id(tenant_id))
    if canonical is None:
        raise LakeLocationError(
            f"tenant {tenant_id!r} is a domain name: a lake partition is named by the tenant's GUID "
            f"(the access token's tid claim), never by a domain"
        )
    return canonical


def is_canonical_partition(name: str) -> bool:
    """Whether ``name`` (after ``tenant_id=``) is a tenant's canonical partition name."""
    try:
        return canonical_partition_id(name) == name
    except LakeLocationError:
        return False


def resolve_lake_location(
    root: str | os.PathLike,
    conn_id: str | None = None,
    *,
    blob_filesystem: BlobFilesystemFactory | None = None,
    plain_http_allowed: PlainHttpPolicy | None = None,
) -> LakeLocation:
    """The lake location for ``root``.

    ``conn_id``, ``blob_filesystem`` and ``plain_http_allowed`` are used for ``abfs``
    roots only, which need the factory (a local root needs neither).
    ``plain_http_allowed`` is asked only about a plain-http endpoint off loopback.
    """
    if root is None:
        raise LakeLocationError("no lake root given")
    text = os.fspath(root).strip()
    if not text:
        raise LakeLocationError("the lake root is empty")
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("", "file", "local"):
        return _local_location(text, scheme)
    if scheme in BLOB_PROTOCOLS:
        return _blob_location(text, conn_id, blob_filesystem, plain_http_allowed)
    raise LakeLocationError(
        f"unsupported lake root scheme {scheme!r} in {text!r}: use a local path, file:// or "
        f"abfs://container@account.dfs.core.windows.net/prefix"
    )


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


def storage_dns_suffix(text: str) -> str | None:
    """The storage DNS suffix an ``abfs[s]://container@<account>.dfs.<suffix>/...`` root
    names (``core.windows.net``, ``core.chinacloudapi.cn`` ...), or None (short form)."""
    _, at, host = urlsplit(text).netloc.rpartition("@")
    match = _ACCOUNT_HOST.fullmatch(host) if at else None
    return match.group("suffix").lower() if match else None


def _blob_location(
    text: str,
    conn_id: str | None,
    blob_filesystem: BlobFilesystemFactory | None,
    plain_http_allowed: PlainHttpPolicy | None = None,
) -> LakeLocation:
    protocol, container, account, prefix = parse_blob_root(text)
    root = f"{container}/{prefix}" if prefix else container
    if blob_filesystem is None:
        raise LakeLocationError(
            f"lake root {text!r} is blob storage: opening it needs a filesystem factory "
            f"(the Airflow-configured entry point, mde_pipeline.airflow.lake_location)"
        )
    _quiet_azure_http_logging()
    try:
        fs = blob_filesystem(protocol, root, conn_id)
    except Exception as exc:
        raise LakeLocationError(
            f"cannot open lake root {text!r} with connection {conn_id!r}: {type(exc).__name__}: {redact(str(exc))}"
        ) from exc
    check_account(text, account, fs, conn_id)
    check_endpoint(text, fs, conn_id, plain_http_allowed)
    return LakeLocation(
        url=text, protocol="abfs", root=root, fs=fs, conn_id=conn_id, account_name=account or _filesystem_account(fs)
    )


def check_account(text: str, account: str | None, fs: Any, conn_id: str | None) -> None:
    """Refuse a root naming one storage account opened with a connection to another."""
    connected_account = _filesystem_account(fs)
    if account and connected_account and account != connected_account:
        raise LakeLocationError(
            f"lake root {text!r} names storage account {account!r} but connection {conn_id!r} "
            f"points at {connected_account!r}"
        )


def _filesystem_endpoints(fs: Any) -> list[str]:
    """The blob endpoint URLs a filesystem talks to (adlfs: its service client, its
    account URL, the ``BlobEndpoint=`` of its connection string)."""
    endpoints = []
    for getter in (lambda: fs.service_client.url, lambda: fs.account_url):
        try:
            value = getter()
        except Exception:  # noqa: BLE001 - not every fsspec filesystem has these
            continue
        if isinstance(value, str) and value:
            endpoints.append(value)
    connection_string = getattr(fs, "connection_string", None) or ""
    endpoints += re.findall(r"(?:^|;)\s*BlobEndpoint=([^;]+)", connection_string, re.IGNORECASE)
    return endpoints


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(text: str, fs: Any, conn_id: str | None, plain_http_allowed: PlainHttpPolicy | None = None) -> None:
    """Refuse a plain-http blob endpoint (keys and SAS tokens would travel in clear),
    except on a loopback host (127.0.0.0/8, ::1, localhost: Azurite on this machine), or
    when ``plain_http_allowed(conn_id)`` says the connection opted in (a sandbox reaching
    Azurite by its compose service name). The storage account's name earns no exemption."""
    for endpoint in _filesystem_endpoints(fs):
        parts = urlsplit(endpoint.strip())
        if parts.scheme.lower() != "http" or _is_loopback(parts.hostname):
            continue
        if plain_http_allowed is not None and plain_http_allowed(conn_id):
            log.warning(
                "lake connection %r uses the plain-http endpoint %s://%s (opted in: for a local sandbox only)",
                conn_id, parts.scheme, parts.netloc,
            )
            return
        raise LakeLocationError(
            f"lake root {text!r}: connection {conn_id!r} uses the plain-http endpoint "
            f"{parts.scheme}://{parts.netloc}; use https (http is allowed on loopback only, e.g. Azurite, or for a "
            f"local sandbox with the connection extra allow_plain_http: true)"
        )


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
