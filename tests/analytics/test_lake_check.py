"""include/lake_check.py (the end-to-end tests' "the lake is exact") on a two-tenant lake:
one tenant's partition at a time, and rows filed under the wrong tenant are caught."""

from __future__ import annotations

import shutil

import lake_check
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS

from tests.analytics.conftest import OTHER_TENANT, TENANT, day_name, small_tables, tenant_hours


def test_views_read_one_tenant_or_all(hourly_lake):
    root, _ = hourly_lake
    expected = {t: sum(small_tables(h, tenant_id=t)[ALERTS].num_rows for h in tenant_hours(t)) for t in (TENANT, OTHER_TENANT)}
    for tenant, rows in expected.items():
        con = lake_check.connect(root, tenant_id=tenant)
        assert con.execute("SELECT count(*), min(tenant_id), max(tenant_id) FROM alerts").fetchone() == (rows, tenant, tenant)
    assert lake_check.connect(root).execute("SELECT count(*) FROM alerts").fetchone()[0] == sum(expected.values())
    assert lake_check.misplaced_rows(root) == []
    assert OTHER_TENANT in lake_check.summary(root)


def test_a_file_under_the_wrong_tenant_is_a_problem(hourly_lake):
    root, _ = hourly_lake
    source = root / ALERT_IPS / f"tenant_id={OTHER_TENANT}" / f"date={day_name(1)}" / "interval=20250302T05.parquet"
    target = root / ALERT_IPS / f"tenant_id={TENANT}" / f"date={day_name(1)}" / "interval=20250302T05.parquet"
    shutil.copyfile(source, target)
    [problem] = lake_check.misplaced_rows(root)
    assert str(target) in problem and OTHER_TENANT in problem
