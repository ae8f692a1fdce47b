"""Create pool ``mde_api_<name>`` for each tenant of Variable ``mde_tenants``.

Each tenant's DAG (``mde_alert_ips_<name>``, see mde_pipeline.airflow.tenants) runs its
API calls in its own pool, with the slots and settings of ``mde_api`` in the pools file
(include/pools.json). docker-compose's airflow-init runs this after importing that file
when ``AIRFLOW_VAR_MDE_TENANTS`` is set (include/deploy/airflow_init.sh); other
deployments run it after ``airflow pools import include/pools.json``, wherever the
Variable is kept:

    python include/deploy/tenant_pools.py [--pools include/pools.json] [--dry-run]

The Variable is read as the DAG file reads it: ``AIRFLOW_VAR_MDE_TENANTS`` first, else
the secrets backends and the metadata DB (this is a server-side tool). A Variable that
does not parse stops it with exit status 1 and the reason, before any pool is written.
Pools are created or updated (slots reset to the file's, as ``pools import`` does);
``mde_api`` itself and pools of tenants no longer listed are left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_POOLS_FILE = Path(__file__).resolve().parent.parent / "pools.json"


def _put_plugins_on_path() -> None:
    # Airflow processes import mde_pipeline from the plugins folder; a plain python
    # process (this one) has to be told where that is.
    from airflow.configuration import conf

    plugins = conf.get("core", "plugins_folder")
    if plugins and plugins not in sys.path:
        sys.path.insert(0, plugins)


def tenants_text(environ) -> str | None:
    """The Variable's text: the environment first, else Airflow's secrets backends and DB."""
    from mde_pipeline.airflow.tenants import TENANTS_ENV, TENANTS_VARIABLE

    if TENANTS_ENV in environ:
        return environ[TENANTS_ENV]
    from airflow.models.variable import Variable

    value = Variable.get(TENANTS_VARIABLE, default_var=None)
    return None if value is None else str(value)


def main(argv: list[str] | None = None, environ=os.environ) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=Path, default=DEFAULT_POOLS_FILE, help="the pools file with mde_api")
    parser.add_argument("--dry-run", action="store_true", help="print the tenants' pools, write nothing")
    args = parser.parse_args(argv)
    _put_plugins_on_path()
    from mde_pipeline.airflow.settings import MDE_POOL
    from mde_pipeline.airflow.tenants import TenantsConfigError, parse_tenants, tenant_pools

    try:
        names = parse_tenants(tenants_text(environ))
    except TenantsConfigError as exc:
        print(f"ERROR  {exc}", file=sys.stderr)
        return 1
    if not names:
        print("no tenants in Variable mde_tenants: pool mde_api only")
        return 0
    pools = {name: pool for name, pool in tenant_pools(json.loads(args.pools.read_text()), names).items() if name != MDE_POOL}
    if args.dry_run:
        print(json.dumps(pools, indent=2))
        return 0
    from airflow.models.pool import Pool

    for name, pool in pools.items():
        Pool.create_or_update_pool(
            name=name, slots=pool["slots"], description=pool["description"],
            include_deferred=pool.get("include_deferred", False),
        )  # fmt: skip
        print(f"OK  pool {name}: {pool['slots']} slots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
