"""The lake root probe of list_alerts (airflow/lake_location.check_lake_writable) on ADLS
(Azurite) and locally: a root that takes files passes and keeps none of the probe's; a
missing container is a configuration error naming both Variables."""

from __future__ import annotations

import pytest

from mde_pipeline.airflow.lake_location import check_lake_writable
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.lake.location import resolve_lake_location
from tests.lake.azurite import resolve_with_airflow
from tests.lake.conftest import AZURITE_CONN_ID
from tests.lake.lake_data import TENANT


def probe_leftovers(location) -> list[str]:
    folder = location.path("_staging")
    return [p for p in location.fs.find(folder) if ".mde-write-probe-" in p] if location.fs.exists(folder) else []


def test_a_writable_abfs_root_passes_and_keeps_no_probe(abfs_location):
    check_lake_writable(abfs_location)
    assert probe_leftovers(abfs_location) == []


def test_an_abfs_root_in_a_missing_container_names_both_variables(azurite, azurite_conn_id):
    location = resolve_with_airflow(azurite.lake_root("no-such-container", "lake"), conn_id=AZURITE_CONN_ID)
    with pytest.raises(MdeConfigurationError, match="Variable mde_lake_root.*Variable mde_lake_conn_id") as info:
        check_lake_writable(location.for_tenant(TENANT))
    assert "no-such-container" in str(info.value)
    assert not location.fs.exists("no-such-container")  # the probe never creates a container


def test_a_writable_local_root_passes_and_keeps_no_probe(tmp_path):
    location = resolve_lake_location(tmp_path / "lake").for_tenant(TENANT)
    check_lake_writable(location)
    assert probe_leftovers(location) == []
