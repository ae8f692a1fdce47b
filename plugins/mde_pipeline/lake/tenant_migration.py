"""Moving a lake written before tenants into the ``tenant_id=`` layout, once; and merging
each tenant folder not named by the canonical id (lower-case GUID) into the canonical one.

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
tenant it does not belong to. It files them under the spelling the rows hold; the merge
below then makes it canonical.

Merge (:func:`merge_non_canonical`): a folder ``tenant_id=<GUID in upper case>`` or
``tenant_id=<domain name>`` (written before ids were canonical) is the same tenant as
``tenant_id=<lower-case GUID>``. Day by day, each hour it holds is committed into the
canonical partition with ``commit_interval(keep_versions=True)``, its rows' ``tenant_id``
rewritten: for an hour both hold, the canonical copy of a version both carry wins (it is
what the pipeline writes now) and the versions only the old folder holds are added
(versions.merge_versions), so no version is lost and none is doubled. Then the old day
goes (``alert_ips`` first, ``alerts`` last: an old day with ``alerts`` but no
``alert_ips`` was merged already), and at the end the old folder's index, staging (its
fetch cache: at worst refetches) and locks. Rerunning after an interruption merges again
what is left; merging an hour twice gives the same rows. A domain-named folder needs its
GUID from the caller; its rows' ``aad_tenant_id`` must agree. Pause the DAGs first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mde_pipeline.common.tenant_ids import is_guid, offline_tenant_id
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.days import interval_keys, read_day, recover_day
from mde_pipeline.lake.layout import (
    INDEX_DIR,
    LOCKS_DIR,
    STAGING_DIR,
    base_name,
    day_directory,
    is_lake_parquet,
    list_day,
    list_names,
    parse_interval_key,
    table_days,
)
from mde_pipeline.lake.location import TENANT_PREFIX, LakeLocation, LakeLocationError, check_tenant_id, is_canonical_partition
from mde_pipeline.lake.locks import day_lock
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, SCHEMAS, LakeSchemaError
from mde_pipeline.lake.tenants import MIGRATE_COMMAND, legacy_folders, non_canonical_folders, replace_tenant
from mde_pipeline.lake.versions import merge_versions

log = logging.getLogger(__name__)


class TenantMismatchError(LakeSchemaError):
    """The legacy lake holds rows of another tenant than the one it is being filed under."""


class UnresolvedTenantError(LakeSchemaError):
    """A tenant folder named by a domain, and no GUID given for that domain."""


# Every top folder with a tenant_id= level (the merge leaves none of the old folder behind).
TENANT_TOPS = (ALERTS, ALERT_IPS, INDEX_DIR, STAGING_DIR, LOCKS_DIR)


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
    report = MigrationReport(tenant_id=tenant_id, folders=legacy_folders(root) + legacy_staging(root), dry_run=dry_run)
    found = legacy_tenant_ids(root, report.folders)
    others = {value for value in found if not _same_spelled_tenant(value, tenant_id)}
    if others:
        raise TenantMismatchError(
            f"lake {root.url} holds rows of tenant id(s) {sorted(others)}, not only {tenant_id!r}: nothing moved"
        )
    # Filed under the rows' own spelling (a non-canonical one first, so the merge below
    # rewrites every row's tenant_id); the merge then makes the folder canonical.
    spellings = sorted(found, key=lambda value: (is_canonical_partition(value), value))
    tenant_id = report.tenant_id = check_tenant_id(spellings[0]) if spellings else tenant_id
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


def legacy_staging(root: LakeLocation) -> list[str]:
    """Entries of ``_staging`` from before tenants (hand-overs, compaction swaps, the fetch
    cache): moved too, so a rerun still reuses its cached answers."""
    return [f"{STAGING_DIR}/{name}" for name in list_names(root, STAGING_DIR) or () if not name.startswith(TENANT_PREFIX)]


def _same_spelled_tenant(value: str, tenant_id: str) -> bool:
    """Whether ``value`` (a row's tenant_id) is ``tenant_id`` up to letter case."""
    return value.strip().lower() == tenant_id.strip().lower()


# --------------------------------------------------------------------------- the merge


@dataclass
class MergeReport:
    targets: dict[str, str] = field(default_factory=dict)  # old folder's tenant name -> canonical id
    hours: int = 0  # hours committed into a canonical partition
    days: int = 0
    dry_run: bool = False


def merge_targets(location: LakeLocation, domains: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every non-canonical tenant folder name -> the canonical id it merges into.

    A GUID in any case is lower-cased; a domain name takes its GUID from ``domains``
    (lower-case domain -> GUID). Nothing is returned (``UnresolvedTenantError``, naming
    the command to run) while one domain has no GUID.
    """
    root = replace_tenant(location, None)
    domains = {name.strip().lower(): guid.strip().lower() for name, guid in (domains or {}).items()}
    bad = [guid for guid in domains.values() if not is_guid(guid)]
    if bad:
        raise UnresolvedTenantError(f"--tenant-id for a domain must be the tenant's GUID, not {bad[0]!r}")
    names = sorted({folder.split("/", 1)[1].removeprefix(TENANT_PREFIX) for folder in non_canonical_folders(root, TENANT_TOPS)})
    targets, unresolved = {}, []
    for name in names:
        try:
            check_tenant_id(name)
        except LakeLocationError:
            raise LakeSchemaError(f"lake {root.url}: folder tenant_id={name} cannot be a tenant's: move it out by hand") from None
        canonical = offline_tenant_id(name) or domains.get(name.lower())
        if canonical is None:
            unresolved.append(name)
        else:
            targets[name] = canonical
    if unresolved:
        raise UnresolvedTenantError(
            f"lake {root.url}: tenant folder(s) {[TENANT_PREFIX + n for n in unresolved]} are named by a domain, "
            f"whose tenant GUID is needed: run `{MIGRATE_COMMAND} --tenant-id <GUID> --domain {unresolved[0]}` "
            f"(the GUID: Entra admin center, Tenant ID; or the tid claim of the connection's token); nothing merged"
        )
    for name, canonical in targets.items():
        if offline_tenant_id(name) is None:
            _check_aad_tenant(root, name, canonical)
    return targets


def _folder(root: LakeLocation, name: str) -> LakeLocation:
    # The old folder exactly as spelled (for_tenant would canonicalise the name).
    return dataclass_replace(root, tenant_id=name)


def _check_aad_tenant(root: LakeLocation, name: str, canonical: str) -> None:
    """Refuse to merge a domain-named folder whose alerts say (``aad_tenant_id``) they
    belong to another tenant than ``canonical``."""
    source, seen = _folder(root, name), set()
    for path in source.fs.find(source.path(ALERTS)):
        if is_lake_parquet(base_name(path)):
            with source.fs.open(path, "rb") as handle:
                column = pq.read_table(handle, columns=["aad_tenant_id"]).column(0)
            seen |= {value.lower() for value in column.unique().to_pylist() if value}
    if seen - {canonical}:
        raise TenantMismatchError(
            f"tenant folder {TENANT_PREFIX}{name} holds alerts of Entra tenant(s) {sorted(seen - {canonical})}, "
            f"not {canonical}: nothing merged; give that domain its own GUID (--domain {name} --tenant-id <GUID>)"
        )


def merge_non_canonical(location: LakeLocation, domains: Mapping[str, str] | None = None, *, dry_run: bool = False) -> MergeReport:
    """Merge every non-canonical tenant folder into its canonical one (see the module's docstring)."""
    root = replace_tenant(location, None)
    report = MergeReport(targets=merge_targets(root, domains), dry_run=dry_run)
    for name, canonical in report.targets.items():
        source, target = _folder(root, name), root.for_tenant(canonical)
        for day in sorted(set(table_days(source, ALERTS)) | set(table_days(source, ALERT_IPS))):
            report.hours += _merge_day(source, target, day, dry_run=dry_run)
            report.days += 1
        if not dry_run:
            for top in TENANT_TOPS:  # the tables' (now empty) folders last
                with suppress(FileNotFoundError):
                    root.fs.rm(root.path(top, f"{TENANT_PREFIX}{name}"), recursive=True)
        log.info("lake %s: tenant_id=%s %s tenant_id=%s", root.url, name, "would merge into" if dry_run else "merged into", canonical)
    return report


def _merge_day(source: LakeLocation, target: LakeLocation, day: str, *, dry_run: bool) -> int:
    """Commit every hour of the old folder's day into the canonical one, then drop the day."""
    if not dry_run:
        with day_lock(source, day):
            for table in SCHEMAS:
                recover_day(source, table, day)  # a compaction of the old folder that died
    files = {table: list_day(source, table, day) for table in SCHEMAS}
    if not files[ALERT_IPS].live_files or not files[ALERTS].live_files:
        hours = 0  # an interrupted run merged it and dropped one table's day already
    else:
        rows = {table: read_day(source, files[table]) for table in SCHEMAS}
        hours = len(rows[ALERTS][1])
        for key in [] if dry_run else rows[ALERTS][1]:
            moved = {table: _with_tenant(_hour(data, key), target.tenant_id) for table, (data, _) in rows.items()}
            hour = parse_interval_key(key)
            held = {table: read_interval(target, table, hour) for table in SCHEMAS}
            # The canonical copy of a version both hold wins; the old folder's other versions are added.
            tables = moved if any(data is None for data in held.values()) else merge_versions(moved, held)
            commit_interval(target, hour, tables, keep_versions=True)
    if not dry_run:
        for table in (ALERT_IPS, ALERTS):
            with suppress(FileNotFoundError):
                source.fs.rm(source.path(day_directory(table, day)), recursive=True)
            source.fs.invalidate_cache()
    return hours


def _hour(data: pa.Table, key: str) -> pa.Table:
    return data.filter(pc.equal(interval_keys(data), key)) if data.num_rows else data


def _with_tenant(data: pa.Table, tenant_id: str) -> pa.Table:
    index = data.schema.get_field_index("tenant_id")
    field_ = data.schema.field(index)
    return data.set_column(index, field_, pa.array([tenant_id] * data.num_rows, field_.type))
