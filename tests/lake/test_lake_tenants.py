"""Tenants in the lake: each tenant's files apart, the steps over every tenant, the
legacy layout refused and migrated."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from lake_data import same_rows, sample_interval

from mde_pipeline.airflow.migrate_lake import main as migrate_main
from mde_pipeline.lake.commit import commit_interval, read_interval
from mde_pipeline.lake.compaction import compaction_step
from mde_pipeline.lake.ip_index import index_step, valid_month_indexes
from mde_pipeline.lake.layout import fully_compacted_files, list_day
from mde_pipeline.lake.location import LakeLocationError, resolve_lake_location
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS
from mde_pipeline.lake.tenant_migration import TenantMismatchError, migrate_to_tenant_layout
from mde_pipeline.lake.tenants import LegacyLakeLayoutError, lake_tenants, legacy_folders

UTC = timezone.utc
DAY = datetime(2024, 3, 4, tzinfo=UTC)
HOURS = [DAY + timedelta(hours=h) for h in (0, 7, 23)]
A, B = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def load(location, tenant, seed):
    """Commit HOURS for ``tenant``; the tables committed, per hour."""
    tables = {}
    for n, hour in enumerate(HOURS):
        tables[hour] = sample_interval(hour, alerts=6, seed=seed + n, tenant=tenant)
        commit_interval(location.for_tenant(tenant), hour, tables[hour])
    return tables


def read_all(root, table):
    glob = root.table_glob(table)
    sql = f"select * from read_parquet('{glob}', hive_partitioning = true, hive_types = {{'tenant_id': VARCHAR, 'date': DATE}})"
    return duckdb.sql(sql).to_arrow_table()


def expected(tables, table):
    return pa.concat_tables([t[table] for t in tables.values()])


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_locks" not in p.parts)


def test_two_tenants_loading_the_same_hours_never_share_a_file_and_are_read_apart(tmp_path):
    root = resolve_lake_location(tmp_path / "lake")
    a, b = load(root, A, 0), load(root, B, 100)
    assert lake_tenants(root) == [A, B]
    for tenant, tables in ((A, a), (B, b)):
        files = [f for f in files_under(tmp_path / "lake") if f"tenant_id={tenant}" in f]
        assert len(files) == 2 * len(HOURS)
        for hour in HOURS:
            assert same_rows(read_interval(root.for_tenant(tenant), ALERTS, hour), tables[hour][ALERTS])
    # Every file belongs to exactly one tenant's partition.
    assert all(("tenant_id=" + A in f) != ("tenant_id=" + B in f) for f in files_under(tmp_path / "lake"))
    rows = read_all(root, ALERT_IPS)
    for tenant, tables in ((A, a), (B, b)):
        mine = rows.filter(pa.compute.equal(rows["tenant_id"], tenant)).drop_columns(["date"])
        assert same_rows(mine.select(expected(tables, ALERT_IPS).column_names), expected(tables, ALERT_IPS))


def test_writing_through_the_root_is_refused(tmp_path):
    root = resolve_lake_location(tmp_path / "lake")
    with pytest.raises(LakeLocationError, match="needs a tenant's location"):
        commit_interval(root, HOURS[0], sample_interval(HOURS[0], tenant=A))
    assert not (tmp_path / "lake" / ALERTS).exists()


def test_compaction_and_index_steps_on_the_root_cover_every_tenant(tmp_path):
    root = resolve_lake_location(tmp_path / "lake")
    a, b = load(root, A, 0), load(root, B, 100)
    summary = compaction_step(root, closed_before=DAY + timedelta(days=2), quiet_period=timedelta(0))
    assert {(d["tenant_id"], d["table"], d["action"]) for d in summary["days"]} == {
        (t, table, "compacted") for t in (A, B) for table in (ALERTS, ALERT_IPS)
    }
    assert sorted(index_step(root)) == [f"{A}/2024-03", f"{B}/2024-03"]
    for tenant, tables in ((A, a), (B, b)):
        location = root.for_tenant(tenant)
        assert fully_compacted_files(location, ALERT_IPS, "2024-03-04")
        [index] = valid_month_indexes(location)
        want = expected(tables, ALERT_IPS)
        got = duckdb.sql(f"select * from read_parquet('{index.uri}')").to_arrow_table()
        assert same_rows(got.select(want.column_names), want)


def make_legacy(lake: Path, tenant: str) -> None:
    """The layout before tenants: lift each top folder's tenant level away."""
    for top in (ALERTS, ALERT_IPS, "_ip_index", "_staging"):
        level = lake / top / f"tenant_id={tenant}"
        if level.exists():
            for child in level.iterdir():
                shutil.move(str(child), str(lake / top / child.name))
            level.rmdir()


def test_a_legacy_lake_is_refused_then_migrated_in_place_with_its_compacted_days_and_index(tmp_path, capsys):
    lake = tmp_path / "lake"
    root = resolve_lake_location(lake)
    tables = load(root, A, 0)
    compaction_step(root, closed_before=DAY + timedelta(days=2), quiet_period=timedelta(0))
    index_step(root)
    later = DAY + timedelta(days=1, hours=2)  # an hourly file beside the compacted day
    tables[later] = sample_interval(later, alerts=4, seed=50, tenant=A)
    commit_interval(root.for_tenant(A), later, tables[later])
    before = read_all(root, ALERT_IPS).drop_columns(["date"])
    make_legacy(lake, A)
    assert sorted(legacy_folders(root)) == [
        "_ip_index/month=2024-03", "alert_ips/date=2024-03-04", "alert_ips/date=2024-03-05",
        "alerts/date=2024-03-04", "alerts/date=2024-03-05",
    ]

    with pytest.raises(LegacyLakeLayoutError, match="migrate_lake --tenant-id"):
        commit_interval(root.for_tenant(A), later, tables[later])
    with pytest.raises(LegacyLakeLayoutError):
        compaction_step(root, closed_before=DAY + timedelta(days=9))
    with pytest.raises(TenantMismatchError, match="nothing moved"):
        migrate_to_tenant_layout(root, B)
    assert migrate_to_tenant_layout(root, A, dry_run=True).files_moved > 0
    assert len(legacy_folders(root)) == 5  # a dry run moves nothing

    # Interrupted half-way: one day already moved by hand; the command finishes the rest.
    shutil.move(str(lake / ALERTS / "date=2024-03-05"), str(lake / ALERTS / f"tenant_id={A}" / "date=2024-03-05"))
    assert migrate_main(["--lake", str(lake), "--tenant-id", A]) == 0
    assert "under tenant_id=" + A in capsys.readouterr().out
    assert legacy_folders(root) == [] and lake_tenants(root) == [A]

    location = root.for_tenant(A)
    assert fully_compacted_files(location, ALERT_IPS, "2024-03-04")  # the manifest names files by base name
    assert [i.month for i in valid_month_indexes(location)] == ["2024-03"]
    assert list(list_day(location, ALERTS, "2024-03-05").interval_files) == ["20240305T02"]
    assert same_rows(read_all(root, ALERT_IPS).drop_columns(["date"]), before)
    # Writable again, and a second run has nothing left to move.
    commit_interval(location, later, tables[later])
    assert migrate_to_tenant_layout(root, A).files_moved == 0
