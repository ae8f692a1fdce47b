"""OpenLineage: ``publish`` names the lake tables it wrote (off unless configured).

The DAG's static outlets (``mde-lake://alerts``, assets.py) carry no location (the lake
root is a runtime Variable) and OpenLineage has no converter for that scheme, so the
provider's default extraction would emit ``publish`` without outputs. Instead
``publish`` reports each table's directory to Airflow's hook-lineage collector, which the
OpenLineage provider reads: a local lake becomes datasets ``file://<host>`` +
``<root>/alerts`` and ``<root>/alert_ips``. The collector is a no-op unless a lineage
reader is registered (the provider does that when a transport is configured), so this
costs nothing when OpenLineage is off.

An ``abfs://`` lake is reported too, but the OpenLineage provider (2.20) converts only
``file`` URIs to datasets; ADLS tables appear once a provider ships an abfs converter.
Configuration: docs/OPERATORS.md, "Lineage".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.tenants import replace_tenant

log = logging.getLogger(__name__)


def table_uri(location: LakeLocation, table: str) -> str:
    """The URI of a lake table's directory, as lineage names it: the whole table, also
    when a tenant's location wrote it (a tenant is a partition, not another dataset)."""
    location = replace_tenant(location, None)
    if location.is_local:
        return f"file://{location.path(table)}"
    return f"{location.url.rstrip('/')}/{table}"


def report_lake_outputs(location: LakeLocation, tables: Iterable[str]) -> list[str]:
    """Tell the hook-lineage collector the tables written; returns their URIs."""
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.lineage import get_hook_lineage_collector

    uris = [table_uri(location, table) for table in tables]
    try:
        collector = get_hook_lineage_collector()
        for uri in uris:
            context = ObjectStoragePath(uri) if location.is_local else ObjectStoragePath(uri, conn_id=location.conn_id)
            collector.add_output_asset(context=context, uri=uri)
    except Exception:  # lineage must never fail a commit that already happened
        log.warning("could not report lineage for %s", uris, exc_info=True)
    return uris
