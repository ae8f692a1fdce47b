"""OpenLineage dataset names of the lake (mde_pipeline.airflow.lineage): one per table and
tenant partition, by the naming spec; the publish operator hands them to the provider.
(tests/status/test_lineage.py reads them from real events, local and Azurite.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mde_pipeline.airflow.lineage import LakeDataset, lake_dataset, lake_datasets, lake_lineage
from mde_pipeline.airflow.operators import MdePublishOperator
from mde_pipeline.lake.location import LakeLocation, resolve_lake_location

TENANT = "8F4C1F5E-2A6B-4C3D-9E8F-0A1B2C3D4E5F"
PARTITION = "tenant_id=8f4c1f5e-2a6b-4c3d-9e8f-0a1b2c3d4e5f"  # canonical: lower case


def blob_location(root: str, account: str | None = "contosolake") -> LakeLocation:
    # A filesystem stand-in: only its account name is read (no endpoint, so no http check).
    return resolve_lake_location(root, "mde_lake", blob_filesystem=lambda *_: SimpleNamespace(account_name=account))


def test_a_local_lake_is_namespace_file_and_the_partitions_absolute_path(tmp_path):
    location = resolve_lake_location(tmp_path / "lake").for_tenant(TENANT)
    assert lake_datasets(location, ["alerts", "alert_ips"]) == [
        LakeDataset("file", f"{tmp_path}/lake/alert_ips/{PARTITION}"),
        LakeDataset("file", f"{tmp_path}/lake/alerts/{PARTITION}"),
    ]


PUBLIC = "abfss://lake@contosolake.dfs.core.windows.net"


@pytest.mark.parametrize(
    ("root", "namespace", "name"),
    [
        # abfs and abfss name the same files: the spec's scheme is abfss.
        ("abfs://lake@contosolake.dfs.core.windows.net/prod/mde", PUBLIC, f"prod/mde/alerts/{PARTITION}"),
        ("abfss://lake@contosolake.dfs.core.windows.net", PUBLIC, f"alerts/{PARTITION}"),
        # The blob endpoint's host names the same account: the spec names it by dfs.
        ("abfs://lake@ContosoLake.blob.core.windows.net/x", PUBLIC, f"x/alerts/{PARTITION}"),
        # Another cloud's suffix, as the root names it.
        ("abfss://lake@contosolake.dfs.core.chinacloudapi.cn/x", "abfss://lake@contosolake.dfs.core.chinacloudapi.cn",
         f"x/alerts/{PARTITION}"),
        # The short form: the account from the connection, the public cloud's suffix.
        ("abfs://lake/x/y", PUBLIC, f"x/y/alerts/{PARTITION}"),
    ],
)
def test_an_adls_lake_by_the_naming_spec(root, namespace, name):
    assert lake_dataset(blob_location(root).for_tenant(TENANT), "alerts") == LakeDataset(namespace, name)


def test_no_account_no_name_and_the_root_is_no_dataset(tmp_path):
    with pytest.raises(ValueError, match="no storage account"):
        lake_dataset(blob_location("abfs://lake/x", account=None).for_tenant(TENANT), "alerts")
    with pytest.raises(ValueError, match="for_tenant"):
        lake_dataset(resolve_lake_location(tmp_path), "alerts")


def test_the_operator_reports_what_it_wrote_and_nothing_before(tmp_path):
    operator = MdePublishOperator(task_id="publish", mde_conn_id="mde_default")
    assert operator.get_openlineage_facets_on_complete(None).outputs == []  # failed before writing
    operator._written = (resolve_lake_location(tmp_path / "lake").for_tenant(TENANT), ["alerts", "alert_ips"])
    outputs = operator.get_openlineage_facets_on_complete(None).outputs
    assert [(d.namespace, d.name) for d in outputs] == [
        ("file", f"{tmp_path}/lake/alert_ips/{PARTITION}"),
        ("file", f"{tmp_path}/lake/alerts/{PARTITION}"),
    ]
    assert lake_lineage([]).outputs == []
