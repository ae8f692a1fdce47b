"""Fixtures of the analysts' side: small lakes generated through the project's writer.

Data comes from bench.lake_queries.interval_tables (deterministic per hour and
``variant``), committed with commit.commit_interval exactly as the DAG commits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone

import pytest

# Importing Airflow (ObjectStoragePath, for Azurite) must not touch ~/airflow. (`make test`
# sets AIRFLOW_HOME; a bare `pytest` gets a temporary one.)
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="analytics-tests-airflow-")

from bench.lake_queries import generate_lake, interval_tables  # noqa: E402
from mde_pipeline.lake.location import resolve_lake_location  # noqa: E402

FIRST_DAY = datetime(2025, 3, 1, tzinfo=timezone.utc)
DAYS = 3
ALERTS_PER_DAY = 240
IPS_PER_ALERT = 6


def small_tables(interval_start: datetime, variant: int = 0):
    return interval_tables(interval_start, alerts_per_day=ALERTS_PER_DAY, ips_per_alert=IPS_PER_ALERT, variant=variant)


def day_name(index: int) -> str:
    return f"{FIRST_DAY + timedelta(days=index):%Y-%m-%d}"


@pytest.fixture(scope="session")
def hourly_lake_template(tmp_path_factory):
    """A 3-day hourly lake, generated once per session; tests get copies."""
    root = tmp_path_factory.mktemp("hourly-template") / "lake"
    generate_lake(resolve_lake_location(str(root)), FIRST_DAY, DAYS, alerts_per_day=ALERTS_PER_DAY, ips_per_alert=IPS_PER_ALERT)
    return root


@pytest.fixture
def hourly_lake(hourly_lake_template, tmp_path):
    """A fresh copy of the hourly lake: ``(root path, LakeLocation)``."""
    root = tmp_path / "lake"
    shutil.copytree(hourly_lake_template, root)
    return root, resolve_lake_location(str(root))


@pytest.fixture(scope="session")
def azurite():
    """Azurite (tests/lake/azurite.py) with the connection ``mde_lake_analytics``."""
    from tests.lake.azurite import AzuriteServer

    with AzuriteServer() as server:
        server.create_container("analytics")
        name = "AIRFLOW_CONN_MDE_LAKE_ANALYTICS"
        value = server.airflow_env("mde_lake_analytics")[name]
        saved = os.environ.get(name)
        os.environ[name] = value
        try:
            yield server
        finally:
            if saved is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved


@pytest.fixture
def abfs_location(azurite):
    root = azurite.lake_root("analytics", f"t-{uuid.uuid4().hex[:12]}/lake")
    from tests.lake.azurite import resolve_with_airflow

    return resolve_with_airflow(root, conn_id="mde_lake_analytics")
