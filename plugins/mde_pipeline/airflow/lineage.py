"""OpenLineage: ``publish`` names the lake tables it wrote (off unless configured).

One dataset per table and tenant partition, named by the OpenLineage naming spec
(openlineage.io/docs/spec/naming):

* a local lake: namespace ``file``, name the partition's absolute path,
  ``/data/lake/alerts/tenant_id=<guid>`` (what the provider's own ``file`` converter
  makes of a path);
* an ADLS lake (``abfs://`` or ``abfss://`` root): namespace
  ``abfss://<container>@<account>.dfs.<suffix>`` (``core.windows.net`` unless the root
  names another cloud's suffix; ``abfss`` also for an ``abfs://`` root, as the spec and
  OpenLineage's own clients name the same files whatever the transport), name the
  path in the container without a leading ``/``: ``<prefix>/alerts/tenant_id=<guid>``.

The names hold the container, account and path only: never a key, SAS or connection
string (a root with a query is refused by the lake layer).

How they reach the events: the publish operator (``MdePublishOperator``) keeps what it
wrote and returns :func:`lake_lineage` from ``get_openlineage_facets_on_complete``, which
the OpenLineage provider calls after a successful run (its ``DefaultExtractor``). The
provider is not asked to convert asset URIs: it converts only ``file`` URIs (provider
2.20; the Azure provider 15.1 registers no ``abfs`` asset), so a lake on ADLS reported
through the hook-lineage collector would appear in no event. The DAG's static outlets
(``mde-lake://alerts``, assets.py) carry no location and have no converter either.
Nothing here runs unless the provider has a transport configured.
Configuration: docs/OPERATORS.md, "Lineage".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from mde_pipeline.lake.location import LakeLocation, storage_dns_suffix

DEFAULT_DNS_SUFFIX = "core.windows.net"  # Azure public cloud


class LakeDataset(NamedTuple):
    """One OpenLineage dataset: a table's tenant partition."""

    namespace: str
    name: str


def lake_namespace(location: LakeLocation) -> str:
    """The OpenLineage namespace of the lake's storage (no secret: account name only)."""
    if location.is_local:
        return "file"
    container = location.root.split("/", 1)[0]
    if not location.account_name:
        raise ValueError(f"lake root {location.url!r}: no storage account known to name its lineage namespace")
    suffix = storage_dns_suffix(location.url) or DEFAULT_DNS_SUFFIX
    return f"abfss://{container}@{location.account_name}.dfs.{suffix}"


def lake_dataset(location: LakeLocation, table: str) -> LakeDataset:
    """The dataset of ``table`` in ``location``'s tenant partition (``for_tenant``)."""
    if location.tenant_id is None:
        raise ValueError("lineage names a tenant's partition: use the tenant's location (for_tenant)")
    path = location.path(table)  # <root>/<table>/tenant_id=<id>
    if location.is_local:
        return LakeDataset(lake_namespace(location), path)
    return LakeDataset(lake_namespace(location), path.split("/", 1)[1])  # without the container


def lake_datasets(location: LakeLocation, tables: Iterable[str]) -> list[LakeDataset]:
    return [lake_dataset(location, table) for table in sorted(tables)]


def lake_lineage(outputs: Iterable[LakeDataset]) -> Any:
    """The provider's ``OperatorLineage`` with ``outputs`` (imported only when the
    provider asks for it)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(outputs=[Dataset(namespace=d.namespace, name=d.name) for d in outputs])
