"""The compaction DAG under a stock Airflow config, run for real with `airflow dags test`."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mde_pipeline.lake.compaction import compaction_step
from mde_pipeline.lake.ip_index import index_step
from mde_pipeline.lake.ip_index import valid_month_indexes
from mde_pipeline.lake.schema import SCHEMAS

from local_airflow import fresh_home, lake_env, migrated_template
from tests.analytics.conftest import DAYS, OTHER_TENANT, TENANT, day_name, tenant_dir

DAG_ID = "mde_lake_compaction"


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory):
    # The same path as the other Airflow tests: one migrated DB per session.
    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")


def age_files(root: Path, hours: float) -> None:
    """Make every lake file look written ``hours`` ago (past the quiet period)."""
    moment = time.time() - hours * 3600
    for path in root.rglob("*.parquet"):
        os.utime(path, (moment, moment))


def files_of(root: Path, table: str, day: str, tenant: str = TENANT) -> list[str]:
    return sorted(p.name for p in (tenant_dir(root, table, tenant) / f"date={day}").glob("*.parquet"))


@pytest.mark.slow
def test_dag_compacts_the_days_closed_before_its_interval_end(airflow_db, hourly_lake, tmp_path):
    root, location = hourly_lake
    age_files(root, hours=2)
    # Retention keeps one day before the run's interval end (2025-03-03): 03-01 goes.
    home = fresh_home(airflow_db, tmp_path / "home", **lake_env(root), AIRFLOW_VAR_MDE_LAKE_RETENTION_DAYS="1")

    # `dags test` parses dags/ with a stock config (only dags_folder and plugins_folder
    # set), runs the task for real and fails on an import error.
    # Run for the interval ending 2025-03-03 03:30 UTC: with 3 h of grace the first two
    # days (ended 03-02 00:00 and 03-03 00:00) are closed, the third is not.
    home.cli("dags", "test", DAG_ID, "2025-03-03T03:30:00+00:00")
    for table in SCHEMAS:
        assert not (tenant_dir(root, table) / f"date={day_name(0)}").exists()  # compacted, then expired
        names = files_of(root, table, day_name(1))
        assert len(names) == 1 and names[0].startswith("compacted-"), (table, names)
        assert len(files_of(root, table, day_name(2))) == 24
        # Every tenant of the lake: the other one's closed day too.
        [other] = files_of(root, table, day_name(1), OTHER_TENANT)
        assert other.startswith("compacted-")
    # ...and each tenant's IP index of March covers its compacted days left.
    assert [i.days for i in valid_month_indexes(location)] == [(day_name(1),)]
    assert [i.days for i in valid_month_indexes(location.for_tenant(OTHER_TENANT))] == [(day_name(1),)]

    # A later run (its tasks' functions, to spare a second Airflow start) picks up the
    # rest; days already compacted are left as they are.
    before = files_of(root, "alert_ips", day_name(1))
    summary = compaction_step(location, closed_before=datetime(2025, 3, 10, 3, 30, tzinfo=timezone.utc))
    assert sorted((s["day"], s["action"]) for s in summary["days"]) == [(day_name(2), "compacted")] * len(SCHEMAS)
    assert index_step(location) == [f"{location.tenant_id}/2025-03"]  # the index catches up with the third day
    assert [i.days for i in valid_month_indexes(location)] == [tuple(day_name(d) for d in range(1, DAYS))]
    assert all(len(files_of(root, t, day_name(d))) == 1 for t in SCHEMAS for d in range(1, DAYS))
    assert files_of(root, "alert_ips", day_name(1)) == before
