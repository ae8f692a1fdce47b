"""``make retention``: what the lake's retention would remove (a dry run), or remove it.

    python -m mde_pipeline.airflow.lake_retention [--apply] [--files] [--days N] [--today YYYY-MM-DD] [--lake ROOT]

Without ``--apply`` nothing is removed: one line per day that would go (or stays for now,
and why), ``--files`` also each file. The setting is Variable ``mde_lake_retention_days``
(``--days`` instead); unset, the lake keeps everything and only a removal a crash
interrupted is listed. The compaction DAG's ``retain`` task does the same every day
(lake/retention.py); ``--apply`` is for an operator who wants it now.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply", action="store_true", help="remove the expired days (default: list them only)")
    parser.add_argument("--files", action="store_true", help="list every file that would go")
    parser.add_argument("--days", help="days to keep before today (default: Variable mde_lake_retention_days)")
    parser.add_argument("--today", help="the day counted back from (UTC, default: today)")
    parser.add_argument("--lake", help="lake root (default: Variable mde_lake_root, then <repo>/lake)")
    args = parser.parse_args(argv)

    from mde_pipeline.airflow.lake_location import configured_lake_location, configured_retention_days
    from mde_pipeline.lake.retention import apply_retention, first_day_kept, parse_keep_days, retention_tenants

    try:
        keep_days = parse_keep_days(args.days, "--days") if args.days is not None else configured_retention_days()
    except ValueError as exc:  # RetentionSettingError, MdeConfigurationError: the message names the setting
        parser.error(str(exc))
    today = args.today or datetime.now(timezone.utc).date().isoformat()
    location = configured_lake_location(args.lake)
    if keep_days is None:
        print("retention: Variable mde_lake_retention_days is unset: the lake keeps everything")
    else:
        print(f"retention: keeps {first_day_kept(keep_days, today)} onwards ({keep_days} days before {today}, UTC)")
    found = 0
    for tenant in retention_tenants(location):
        for result in apply_retention(tenant, keep_days, today, dry_run=not args.apply):
            found += 1
            reason = f": {result.reason}" if result.reason else ""
            print(f"{result.tenant_id} {result.day} {result.action} ({result.files} files){reason}")
            for path in result.paths if args.files else ():
                print(f"    {path}")
    if not found:
        print("no day to remove")
    return 0


if __name__ == "__main__":
    sys.exit(main())
