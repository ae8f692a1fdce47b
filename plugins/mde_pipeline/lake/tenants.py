"""Tenants in the lake: which tenants a lake holds, and the guards around the
``tenant_id=`` partition level (layout.py has the paths; ``LakeLocation.for_tenant``
inserts the level).

A lake written before tenants had ``<table>/date=...`` directly; every entry point that
reads or writes refuses it with the migration command (tenant_migration.py) rather than
mixing two depths, which DuckDB and Spark cannot read as one table.

A partition whose name is not canonical (``tenant_id=<GUID in upper case>`` or a domain
name, written before ids were canonical) is the same tenant as another partition: the
steps over every tenant skip it, and the analysts' session, lake_check and the status
page name the migration command that merges it (tenant_migration.py).
"""

from __future__ import annotations

from dataclasses import replace as dataclass_replace

from mde_pipeline.lake.layout import DATE_PREFIX, INDEX_DIR, MONTH_PREFIX, STAGING_DIR, list_names
from mde_pipeline.lake.location import (
    TENANT_PREFIX,
    LakeLocation,
    LakeLocationError,
    check_tenant_id,
    is_canonical_partition,
)
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, LakeSchemaError

TENANT_FOLDERS = (ALERTS, ALERT_IPS, INDEX_DIR)  # where a legacy lake put date=/month= directly


class LegacyLakeLayoutError(LakeSchemaError):
    """The lake still has the single-tenant layout (``<table>/date=...``): migrate it first."""


class NonCanonicalTenantError(LegacyLakeLayoutError):
    """A ``tenant_id=`` folder is not named by the canonical (lower-case GUID) id: migrate it."""


MIGRATE_COMMAND = "python -m mde_pipeline.airflow.migrate_lake"


def require_tenant(location: LakeLocation) -> LakeLocation:
    """``location`` when it is a tenant's (``for_tenant``); writers never write the root."""
    if location.tenant_id is None:
        raise LakeLocationError(
            f"lake {location.url}: writing needs a tenant's location (LakeLocation.for_tenant), not the root"
        )
    return location


def lake_tenants(location: LakeLocation) -> list[str]:
    """The tenant ids with a ``tenant_id=`` folder under either table or the IP index, sorted."""
    root = replace_tenant(location, None)
    tenants = set()
    for top in TENANT_FOLDERS:
        for name in list_names(root, top) or ():
            if name.startswith(TENANT_PREFIX):
                try:
                    tenant = check_tenant_id(name.removeprefix(TENANT_PREFIX))
                except LakeLocationError:
                    continue
                if is_canonical_partition(tenant):  # a non-canonical one waits for the migration
                    tenants.add(tenant)
    return sorted(tenants)


def staged_tenants(location: LakeLocation) -> list[str]:
    """The tenant ids with a ``tenant_id=`` folder under ``_staging/`` (staged runs, fetch
    cache), sorted: also tenants that never committed or left Variable ``mde_tenants``."""
    root = replace_tenant(location, None)
    tenants = set()
    for name in list_names(root, STAGING_DIR) or ():
        if name.startswith(TENANT_PREFIX):
            try:
                tenants.add(check_tenant_id(name.removeprefix(TENANT_PREFIX)))
            except LakeLocationError:
                continue
    return sorted(tenants)


def tenant_locations(location: LakeLocation) -> list[LakeLocation]:
    """``[location]`` for a tenant's location, else one per tenant the lake holds."""
    if location.tenant_id is not None:
        return [location]
    return [location.for_tenant(tenant) for tenant in lake_tenants(location)]


def legacy_folders(location: LakeLocation) -> list[str]:
    """``date=``/``month=`` folders sitting directly in a top folder (the layout before
    tenants), relative to the root; empty for a migrated or new lake."""
    root = replace_tenant(location, None)
    found = []
    for top in TENANT_FOLDERS:
        for name in list_names(root, top) or ():
            if name.startswith((DATE_PREFIX, MONTH_PREFIX)):
                found.append(f"{top}/{name}")
    return found


def check_not_legacy(location: LakeLocation) -> None:
    """Refuse a lake that still has the single-tenant layout (one listing per top folder)."""
    found = legacy_folders(location)
    if found:
        raise LegacyLakeLayoutError(
            f"lake {location.url} has {len(found)} folder(s) from before the tenant_id= partition "
            f"(first: {found[0]}); migrate it once with "
            f"`{MIGRATE_COMMAND} --tenant-id <tenant id>` (README, \"The lake\")"
        )


def non_canonical_folders(location: LakeLocation, tops: tuple[str, ...] = TENANT_FOLDERS) -> list[str]:
    """``<top>/tenant_id=<name>`` folders whose name is not canonical (upper case, a domain)."""
    root = replace_tenant(location, None)
    return [
        f"{top}/{name}"
        for top in tops
        for name in list_names(root, top) or ()
        if name.startswith(TENANT_PREFIX) and not is_canonical_partition(name.removeprefix(TENANT_PREFIX))
    ]


def check_canonical_tenants(location: LakeLocation) -> None:
    """Refuse a lake holding a non-canonical tenant folder (its rows would show twice)."""
    found = non_canonical_folders(location)
    if found:
        raise NonCanonicalTenantError(
            f"lake {location.url}: run `{MIGRATE_COMMAND}` once to merge {len(found)} tenant folder(s) not named by "
            f"the lower-case tenant GUID (first: {found[0]}), whose rows may show twice (README, \"The lake\"; "
            f"a domain-named folder needs --tenant-id <GUID> --domain <name>)"
        )


def replace_tenant(location: LakeLocation, tenant_id: str | None) -> LakeLocation:
    """``location`` seen by ``tenant_id``, or the root for None."""
    return location.for_tenant(tenant_id) if tenant_id is not None else dataclass_replace(location, tenant_id=None)
