"""Move a lake written before tenants into the ``tenant_id=<tenant id>`` layout (once).

    python -m mde_pipeline.airflow.migrate_lake                      # tenant of mde_default
    python -m mde_pipeline.airflow.migrate_lake --tenant-id <id> --dry-run
    python -m mde_pipeline.airflow.migrate_lake --lake abfs://lake@acct.dfs.core.windows.net/mde

Pause the DAGs first. The lake is the configured one (Variables ``mde_lake_root`` and
``mde_lake_conn_id``) unless ``--lake`` names another; the tenant id is the one of the
connection that loaded it (``--conn-id``, default ``mde_default``) unless given. Safe to
rerun after an interruption; nothing is moved when a file holds another tenant's rows
(mde_pipeline.lake.tenant_migration).
"""

from __future__ import annotations

import argparse
import logging
import sys


def _connection_tenant_id(conn_id: str) -> str:
    from mde_pipeline.airflow.hooks import MdeHook

    return MdeHook(mde_conn_id=conn_id).get_config().tenant_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenant-id", help="the Entra tenant id the lake's rows belong to (default: --conn-id's)")
    parser.add_argument("--conn-id", default="mde_default", help="connection whose tenant_id to use (default mde_default)")
    parser.add_argument("--lake", help="lake root (default: Variable mde_lake_root, then <repo>/lake)")
    parser.add_argument("--dry-run", action="store_true", help="list what would move, move nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from mde_pipeline.airflow.lake_location import configured_lake_location
    from mde_pipeline.lake.tenant_migration import migrate_to_tenant_layout

    tenant_id = args.tenant_id or _connection_tenant_id(args.conn_id)
    report = migrate_to_tenant_layout(configured_lake_location(args.lake), tenant_id, dry_run=args.dry_run)
    verb = "would move" if report.dry_run else "moved"
    print(f"{verb} {report.files_moved} file(s) from {len(report.folders)} folder(s) under tenant_id={report.tenant_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
