"""Fix the lake's tenant partitions, once: the layout from before tenants, and tenant
folders not named by the canonical id (lower-case GUID).

    python -m mde_pipeline.airflow.migrate_lake                      # tenant of mde_default
    python -m mde_pipeline.airflow.migrate_lake --tenant-id <id> --dry-run
    python -m mde_pipeline.airflow.migrate_lake --tenant-id <GUID> --domain contoso.onmicrosoft.com
    python -m mde_pipeline.airflow.migrate_lake --lake abfs://lake@acct.dfs.core.windows.net/mde

Pause the DAGs first. The lake is the configured one (Variables ``mde_lake_root`` and
``mde_lake_conn_id``) unless ``--lake`` names another.

1. A lake from before tenants is filed under the tenant its rows hold: ``--tenant-id``,
   else the one of the connection that loaded it (``--conn-id``, default ``mde_default``);
   nothing is moved when a file holds another tenant's rows.
2. Every ``tenant_id=`` folder spelled otherwise than the lower-case GUID (upper case, a
   domain name) is merged into the canonical one (mde_pipeline.lake.tenant_migration). A
   domain-named folder needs its GUID: ``--domain <name> --tenant-id <GUID>``; without
   them, a folder named by the connection's own domain is resolved from its token (one
   request to Entra ID), any other is refused with the command to run.

Safe to rerun after an interruption.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _connection_config(conn_id: str):
    from mde_pipeline.airflow.hooks import MdeHook

    return MdeHook(mde_conn_id=conn_id).get_config()


def _connection_guid(conn_id: str) -> str:
    """The canonical tenant of a connection; a domain name resolved from its token."""
    from mde_pipeline.airflow.hooks import MdeHook

    hook = MdeHook(mde_conn_id=conn_id)
    try:
        return hook.get_client().tenant_id
    finally:
        hook.close()


def _domains(args: argparse.Namespace, names: list[str]) -> dict[str, str]:
    """Lower-case domain -> GUID for the domain-named folders ``names`` this run can resolve."""
    from mde_pipeline.common.tenant_ids import is_guid, offline_tenant_id

    domains: dict[str, str] = {}
    if args.domain:
        guid = args.tenant_id if args.tenant_id and is_guid(args.tenant_id) else _connection_guid(args.conn_id)
        domains[args.domain.strip().lower()] = guid
    wanted = {name.lower() for name in names if offline_tenant_id(name) is None} - set(domains)
    if wanted and not args.tenant_id:
        try:
            configured = _connection_config(args.conn_id).tenant_id.strip().lower()
        except Exception:  # no such connection here: the merge names what to give instead
            configured = None
        if configured in wanted:  # the connection names its tenant by this domain: ask its token
            domains[configured] = _connection_guid(args.conn_id)
    return domains


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenant-id", help="the Entra tenant the lake's rows belong to (default: --conn-id's); "
                                            "with --domain: that domain's tenant GUID")
    parser.add_argument("--domain", help="a domain name a tenant_id= folder was written under (needs its GUID: "
                                         "--tenant-id, else --conn-id's)")
    parser.add_argument("--conn-id", default="mde_default", help="connection whose tenant_id to use (default mde_default)")
    parser.add_argument("--lake", help="lake root (default: Variable mde_lake_root, then <repo>/lake)")
    parser.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from mde_pipeline.airflow.lake_location import configured_lake_location
    from mde_pipeline.api.errors import MdeConfigurationError
    from mde_pipeline.lake.location import TENANT_PREFIX
    from mde_pipeline.lake.schema import LakeSchemaError
    from mde_pipeline.lake.tenant_migration import TENANT_TOPS, legacy_staging, merge_non_canonical, migrate_to_tenant_layout
    from mde_pipeline.lake.tenants import legacy_folders, non_canonical_folders, replace_tenant

    location = configured_lake_location(args.lake)
    try:
        if legacy_folders(location) or legacy_staging(replace_tenant(location, None)):
            tenant_id = args.tenant_id or _connection_config(args.conn_id).tenant_id
            report = migrate_to_tenant_layout(location, tenant_id, dry_run=args.dry_run)
            print(f"{'would move' if args.dry_run else 'moved'} {report.files_moved} file(s) from "
                  f"{len(report.folders)} folder(s) under tenant_id={report.tenant_id}")
        folders = non_canonical_folders(location, TENANT_TOPS)
        names = sorted({folder.split("/", 1)[1].removeprefix(TENANT_PREFIX) for folder in folders})
        merged = merge_non_canonical(location, _domains(args, names) if names else {}, dry_run=args.dry_run)
    except (LakeSchemaError, MdeConfigurationError) as exc:  # what to fix, without a traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for name, canonical in merged.targets.items():
        print(f"{'would merge' if args.dry_run else 'merged'} tenant_id={name} into tenant_id={canonical}")
    print(f"{merged.hours} hour(s) of {merged.days} day(s) from {len(merged.targets)} non-canonical tenant folder(s)"
          f"{' (dry run: nothing changed)' if args.dry_run else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
