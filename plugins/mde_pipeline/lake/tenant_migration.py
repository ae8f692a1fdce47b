"""Moving a lake written before tenants into the ``tenant_id=`` layout, once.

Before: ``<table>/date=...``, ``_ip_index/month=...``, ``_staging/...`` directly under
each top folder. After: the same folders below ``tenant_id=<id>`` (layout.py). Every
file name stays, and manifests name files by base name, so compacted days and IP
indexes stay valid as they are moved.

Why a migration and not reading both layouts: DuckDB and Spark read a table as one
partition tree; a table with ``date=`` at two depths is not a table to them.

Safe to rerun and to interrupt: files are moved one at a time (on blob storage a copy,
then a delete) and a rerun moves what is left. While a move is under way the lake is
"legacy" to every entry point (tenants.check_not_legacy), so nothing reads or writes a
half-moved lake. Run it with the DAGs paused (README, "The lake"). Before moving
anything it checks that every data file holds only the given tenant id (footer
statistics; the column itself when a file has none), so a lake is never filed under a
tenant it does not belong to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from mde_pipeline.lake.layout import STAGING_DIR, base_name, is_lake_parquet, list_names
from mde_pipeline.lake.location import TENANT_PREFIX, LakeLocation, check_tenant_id
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, LakeSchemaError
from mde_pipeline.lake.tenants import legacy_folders, replace_tenant

log = logging.getLogger(__name__)


class TenantMismatchError(LakeSchemaError):
    """The legacy lake holds rows of another tenant than the one it is being filed under."""


@dataclass
class MigrationReport:
    tenant_id: str
    folders: list[str] = field(default_factory=list)  # legacy folders found, relative to the root
    files_moved: int = 0
    dry_run: bool = False


def legacy_tenant_ids(location: LakeLocation, folders: list[str]) -> set[str]:
    """Every ``tenant_id`` value the data files of the legacy table folders hold."""
    fs = location.fs
    found: set[str] = set()
    for folder in folders:
        if folder.split("/", 1)[0] not in (ALERTS, ALERT_IPS):
            continue
        for path in fs.find(location.path(folder)):
            if is_lake_parquet(base_name(path)):
                found |= _file_tenants(location, path)
    return found


def _file_tenants(location: LakeLocation, path: str) -> set[str]:
    with location.fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        column = parquet.schema_arrow.get_field_index("tenant_id")
        if column < 0:
            raise LakeSchemaError(f"{path} has no tenant_id column")
        values: set[str] = set()
        for group in range(parquet.metadata.num_row_groups):
            stats = parquet.metadata.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                return set(parquet.read(columns=["tenant_id"]).column(0).unique().to_pylist())
            values |= {stats.min, stats.max}
        return values


def migrate_to_tenant_layout(location: LakeLocation, tenant_id: str, *, dry_run: bool = False) -> MigrationReport:
    """File every legacy folder of the lake under ``tenant_id=<tenant_id>``; a report.

    Refuses (``TenantMismatchError``) when a data file holds another tenant id. A lake
    with nothing legacy left is a no-op.
    """
    tenant_id = check_tenant_id(tenant_id)
    root = replace_tenant(location, None)
    report = MigrationReport(tenant_id=tenant_id, folders=legacy_folders(root) + _legacy_staging(root), dry_run=dry_run)
    others = legacy_tenant_ids(root, report.folders) - {tenant_id}
    if others:
        raise TenantMismatchError(
            f"lake {root.url} holds rows of tenant id(s) {sorted(others)}, not only {tenant_id!r}: nothing moved"
        )
    fs = root.fs
    for folder in report.folders:
        top, rest = folder.split("/", 1)
        source = root.path(folder)
        target = root.path(top, f"{TENANT_PREFIX}{tenant_id}", rest)
        files = fs.find(source) if fs.isdir(source) else [source]
        for path in files:
            destination = target + path[len(source):]
            if dry_run:
                log.info("would move %s -> %s", path, destination)
            else:
                fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
                fs.mv(path, destination)
            report.files_moved += 1
        if not dry_run and fs.isdir(source):
            fs.rm(source, recursive=True)  # the empty folders left (local disk keeps them)
    log.info("lake %s: %d file(s) in %d folder(s) %s tenant_id=%s", root.url, report.files_moved,
             len(report.folders), "would move under" if dry_run else "moved under", tenant_id)
    return report


def _legacy_staging(root: LakeLocation) -> list[str]:
    """Entries of ``_staging`` from before tenants (hand-overs, compaction swaps, the fetch
    cache): moved too, so a rerun still reuses its cached answers."""
    return [f"{STAGING_DIR}/{name}" for name in list_names(root, STAGING_DIR) or () if not name.startswith(TENANT_PREFIX)]
