"""Fixtures of the analysts' side: small lakes generated through the project's writer.

Data comes from bench.lake_queries.interval_tables (deterministic per hour and
``variant``), committed with commit.commit_interval into a tenant's location
(``LakeLocation.for_tenant``) exactly as the DAG commits. The lake holds two tenants:
``TENANT`` (3 days, what most tests write and compact) and ``OTHER_TENANT`` (one day,
the middle one, other rows under the same alert ids), so every reader test also
checks that tenants stay apart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

# Importing Airflow (ObjectStoragePath, for Azurite) must not touch ~/airflow. (tests/conftest.py
# already gives the session a temporary AIRFLOW_HOME; this keeps the module safe on its own.)
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="analytics-tests-airflow-")

from bench.lake_queries import TENANT, generate_lake, interval_tables  # noqa: E402
from mde_pipeline.lake.location import TENANT_PREFIX, resolve_lake_location  # noqa: E402

FIRST_DAY = datetime(2025, 3, 1, tzinfo=timezone.utc)
DAYS = 3
ALERTS_PER_DAY = 240
IPS_PER_ALERT = 6
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"
# tenant -> (generator seed, day indexes it holds)
TENANT_DATA = {TENANT: (1, range(DAYS)), OTHER_TENANT: (2, range(1, 2))}


def small_tables(interval_start: datetime, variant: int = 0, tenant_id: str = TENANT):
    return interval_tables(
        interval_start, alerts_per_day=ALERTS_PER_DAY, ips_per_alert=IPS_PER_ALERT, variant=variant,
        seed=TENANT_DATA.get(tenant_id, (3,))[0], tenant_id=tenant_id,
    )


def two_days_of_hours(location, every_hours: int) -> None:
    """Commit every ``every_hours``-th hour of the first two days into ``location`` (a small
    lake for the abfs tests: compact day 0 and day 1 stays hourly)."""
    from mde_pipeline.lake.commit import commit_interval

    for d in range(2):
        for h in range(0, 24, every_hours):
            start = FIRST_DAY + timedelta(days=d, hours=h)
            commit_interval(location, start, small_tables(start))


def tenant_hours(tenant_id: str) -> list[datetime]:
    """Every hour the template lake holds for ``tenant_id``."""
    return [FIRST_DAY + timedelta(days=d, hours=h) for d in TENANT_DATA[tenant_id][1] for h in range(24)]


def day_name(index: int) -> str:
    return f"{FIRST_DAY + timedelta(days=index):%Y-%m-%d}"


def tenant_dir(root: Path, top: str, tenant_id: str = TENANT) -> Path:
    """``<root>/<top>/tenant_id=<tenant>``: a tenant's part of a table (or _ip_index, _staging)."""
    return root / top / f"{TENANT_PREFIX}{tenant_id}"


@pytest.fixture(scope="session")
def hourly_lake_template(tmp_path_factory):
    """The two tenants' hourly lake, generated once per session; tests get copies."""
    root = tmp_path_factory.mktemp("hourly-template") / "lake"
    lake = resolve_lake_location(str(root))
    for tenant, (seed, days) in TENANT_DATA.items():
        generate_lake(
            lake, FIRST_DAY + timedelta(days=days.start), len(days), alerts_per_day=ALERTS_PER_DAY,
            ips_per_alert=IPS_PER_ALERT, seed=seed, tenant_id=tenant,
        )
    return root


@pytest.fixture
def hourly_lake(hourly_lake_template, tmp_path):
    """A fresh copy of the hourly lake: ``(root path, TENANT's LakeLocation)``; readers
    open the root (``resolve_lake_location(root)``), writers a tenant's location."""
    root = tmp_path / "lake"
    shutil.copytree(hourly_lake_template, root)
    return root, resolve_lake_location(str(root)).for_tenant(TENANT)


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

    return resolve_with_airflow(root, conn_id="mde_lake_analytics").for_tenant(TENANT)
