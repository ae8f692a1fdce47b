from __future__ import annotations

import os
import tempfile
import uuid

import pytest

# Importing Airflow (ObjectStoragePath, for the Azurite filesystem) must not touch ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="lake-tests-airflow-"))

from tests.lake.azurite import AzuriteServer, resolve_with_airflow  # noqa: E402  (the repo root is on sys.path: pytest.ini)

from mde_pipeline.lake.location import resolve_lake_location  # noqa: E402
from tests.lake.lake_data import TENANT  # noqa: E402

AZURITE_CONN_ID = "mde_lake_azurite_tests"
AZURITE_CONTAINER = "lake-tests"


@pytest.fixture(scope="session")
def azurite():
    """One Azurite for the session, with the Airflow connection ``mde_lake_azurite_tests``.

    Never skipped: when npm cannot install Azurite the tests using it fail with why.
    """
    with AzuriteServer() as server:
        server.create_container(AZURITE_CONTAINER)
        env = {f"AIRFLOW_CONN_{AZURITE_CONN_ID.upper()}": server.airflow_env(AZURITE_CONN_ID)[f"AIRFLOW_CONN_{AZURITE_CONN_ID.upper()}"]}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def azurite_conn_id(azurite) -> str:
    """The Airflow connection id (in the environment) of the session's Azurite."""
    return AZURITE_CONN_ID


@pytest.fixture
def abfs_root(azurite) -> str:
    """A fresh ``abfs://container@devstoreaccount1.dfs.core.windows.net/<unique prefix>``."""
    return azurite.lake_root(AZURITE_CONTAINER, f"t-{uuid.uuid4().hex[:12]}/lake")


@pytest.fixture
def abfs_location(abfs_root):
    """Tenant ``tenant-a``'s part of a fresh ADLS lake (what the writers get)."""
    return resolve_with_airflow(abfs_root, conn_id=AZURITE_CONN_ID).for_tenant(TENANT)


@pytest.fixture
def local_location(tmp_path):
    """Tenant ``tenant-a``'s part of a fresh local lake (what the writers get)."""
    return resolve_lake_location(tmp_path / "lake").for_tenant(TENANT)
