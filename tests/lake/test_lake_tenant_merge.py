"""One tenant, one partition: a lake with the tenant's rows under tenant_id=<GUID in upper
case> and tenant_id=<domain name> (written before ids were canonical) is refused by the
readers, then merged by the migration command into tenant_id=<lower-case GUID>, every
version once, also when the migration is interrupted and rerun."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from lake_data import same_rows, sample_interval

from mde_pipeline.airflow.migrate_lake import main as migrate_main
from mde_pipeline.analytics.session import LakeSession, LakeSessionError
from mde_pipeline.lake import tenant_migration
from mde_pipeline.lake.commit import commit_interval
from mde_pipeline.lake.compaction import compaction_step
from mde_pipeline.lake.layout import fully_compacted_files
from mde_pipeline.lake.location import resolve_lake_location
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS
from mde_pipeline.lake.tenant_migration import TenantMismatchError, merge_non_canonical
from mde_pipeline.lake.tenants import NonCanonicalTenantError, check_canonical_tenants, lake_tenants

UTC = timezone.utc
GUID = "3c5e2a17-9b0d-4f6e-8a21-7d4b9c0e1f23"
UPPER = GUID.upper()
DOMAIN = "contoso.onmicrosoft.com"
OTHER = "22222222-2222-4222-8222-222222222222"
DAY = datetime(2025, 6, 1, tzinfo=UTC)
H0, H1, H2 = DAY + timedelta(hours=3), DAY + timedelta(hours=4), DAY + timedelta(days=1, hours=5)
MERGE = ["--tenant-id", GUID, "--domain", DOMAIN]


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    # The connection now names the tenant by its GUID (lower case): it cannot tell the domain's.
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", json.dumps({
        "conn_type": "http", "host": "https://127.0.0.1:9", "login": "client", "password": "not-used",
        "extra": {"tenant_id": GUID},
    }))


def raw(root, name):
    """The location of a folder spelled exactly so (what the pipeline wrote before)."""
    return replace(root, tenant_id=name)


def build(lake: Path) -> dict[str, set]:
    """The lake: the canonical partition holds H0 (4 alerts, compacted); the upper-case one
    H0 (6 alerts, the 4 plus 2) and H1; the domain one H2. Returns the versions expected."""
    root = resolve_lake_location(lake)
    commit_interval(root.for_tenant(GUID), H0, sample_interval(H0, alerts=4, seed=1, tenant=GUID))
    compaction_step(root, closed_before=DAY + timedelta(days=3), quiet_period=timedelta(0))
    assert fully_compacted_files(root.for_tenant(GUID), ALERTS, DAY.date().isoformat())
    loads = [(UPPER, H0, 6, 1), (UPPER, H1, 5, 2), (DOMAIN, H2, 3, 3)]
    versions: dict[str, set] = {ALERTS: set(), ALERT_IPS: set()}
    for name, hour, alerts, seed in loads:
        tables = sample_interval(hour, alerts=alerts, seed=seed, tenant=name)
        commit_interval(raw(root, name), hour, tables)
        versions[ALERTS] |= {(a, t) for a, t in zip(tables[ALERTS]["alert_id"].to_pylist(), tables[ALERTS]["last_update_time"].to_pylist())}
        versions[ALERT_IPS] |= {(a, t, ip) for a, t, ip in zip(tables[ALERT_IPS]["alert_id"].to_pylist(), tables[ALERT_IPS]["alert_last_update_time"].to_pylist(), tables[ALERT_IPS]["ip"].to_pylist())}
    # The old folders' hand-overs and fetch cache: dropped by the merge.
    staged = lake / "_staging" / f"tenant_id={UPPER}" / "fetch_cache" / UPPER / "20250601T03" / "part.jsonl"
    staged.parent.mkdir(parents=True)
    staged.write_text("{}\n")
    return versions


def read(lake: Path, table: str) -> pa.Table:
    sql = (f"select * from read_parquet('{lake}/{table}/*/*/*.parquet', hive_partitioning = true, "
           "hive_types = {'tenant_id': VARCHAR, 'date': DATE})")
    return duckdb.sql(sql).to_arrow_table()


def folders(lake: Path) -> dict[str, list[str]]:
    return {top: sorted(p.name for p in (lake / top).iterdir()) for top in ("alerts", "alert_ips", "_staging", "_ip_index", "_locks")
            if (lake / top).exists()}


def assert_merged(lake: Path, versions: dict[str, set]) -> None:
    for top, names in folders(lake).items():
        assert names == [f"tenant_id={GUID}"], (top, names)
    alerts, ips = read(lake, ALERTS), read(lake, ALERT_IPS)
    assert set(alerts["tenant_id"].to_pylist()) == set(ips["tenant_id"].to_pylist()) == {GUID}
    keys = list(zip(alerts["alert_id"].to_pylist(), alerts["last_update_time"].to_pylist()))
    assert len(keys) == len(set(keys)) and set(keys) == versions[ALERTS]  # every version, once
    ip_keys = list(zip(ips["alert_id"].to_pylist(), ips["alert_last_update_time"].to_pylist(), ips["ip"].to_pylist()))
    assert len(ip_keys) == len(set(ip_keys)) and set(ip_keys) == versions[ALERT_IPS]


def test_non_canonical_partitions_are_refused_then_merged_exactly_after_an_interruption(tmp_path, monkeypatch, capsys):
    lake = tmp_path / "lake"
    versions = build(lake)
    root = resolve_lake_location(lake)
    assert lake_tenants(root) == [GUID]  # compaction and the index skip the other spellings
    with pytest.raises(NonCanonicalTenantError, match="python -m mde_pipeline.airflow.migrate_lake"):
        check_canonical_tenants(root)
    with pytest.raises(LakeSessionError, match="migrate_lake"):
        LakeSession(root)

    # The domain folder's GUID is not known to the connection: refused, nothing changed.
    before = folders(lake)
    assert migrate_main(["--lake", str(lake)]) == 2
    assert f"--domain {DOMAIN}" in capsys.readouterr().err
    assert folders(lake) == before

    # Interrupted twice: a commit fails (the 2nd hour of the day), then dropping the day fails half-way.
    real_commit = tenant_migration.commit_interval
    calls = []

    def failing_commit(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise OSError("injected: lake unreachable")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(tenant_migration, "commit_interval", failing_commit)
    with pytest.raises(OSError, match="injected"):
        merge_non_canonical(root, {DOMAIN: GUID})
    monkeypatch.setattr(tenant_migration, "commit_interval", real_commit)
    fs_type = type(root.fs)
    real_rm = fs_type.rm

    def failing_rm(self, path, *args, **kwargs):
        if f"/alerts/tenant_id={UPPER}/date=" in str(path):
            raise OSError("injected: killed between the two tables")
        return real_rm(self, path, *args, **kwargs)

    monkeypatch.setattr(fs_type, "rm", failing_rm)
    with pytest.raises(OSError, match="killed between"):
        merge_non_canonical(root, {DOMAIN: GUID})
    monkeypatch.setattr(fs_type, "rm", real_rm)
    assert not (lake / "alert_ips" / f"tenant_id={UPPER}" / "date=2025-06-01").exists()
    assert (lake / "alerts" / f"tenant_id={UPPER}" / "date=2025-06-01").exists()

    assert migrate_main(["--lake", str(lake), *MERGE]) == 0
    out = capsys.readouterr().out
    assert f"merged tenant_id={DOMAIN} into tenant_id={GUID}" in out and f"merged tenant_id={UPPER} into tenant_id={GUID}" in out
    assert_merged(lake, versions)
    check_canonical_tenants(root)
    LakeSession(root).close()

    # Exact: the same rows as an uninterrupted migration of the same lake.
    clean = tmp_path / "clean"
    build(clean)
    assert migrate_main(["--lake", str(clean), *MERGE]) == 0
    for table in (ALERTS, ALERT_IPS):
        assert same_rows(read(lake, table), read(clean, table)), table
    # A rerun finds nothing to do.
    assert migrate_main(["--lake", str(lake), *MERGE]) == 0
    assert "0 hour(s) of 0 day(s) from 0 non-canonical" in capsys.readouterr().out


def test_a_domain_folder_holding_another_tenants_alerts_is_not_merged(tmp_path, capsys):
    lake = tmp_path / "lake"
    root = resolve_lake_location(lake)
    tables = sample_interval(H2, alerts=3, seed=3, tenant=DOMAIN)
    aad = tables[ALERTS].schema.get_field_index("aad_tenant_id")
    tables[ALERTS] = tables[ALERTS].set_column(aad, tables[ALERTS].schema.field(aad), pa.array([OTHER] * 3, pa.string()))
    commit_interval(raw(root, DOMAIN), H2, tables)
    with pytest.raises(TenantMismatchError, match=OTHER):
        merge_non_canonical(root, {DOMAIN: GUID})
    assert migrate_main(["--lake", str(lake), *MERGE]) == 2
    assert "nothing merged" in capsys.readouterr().err
    assert folders(lake)["alerts"] == [f"tenant_id={DOMAIN}"]


def test_the_status_page_and_lake_check_name_the_command(tmp_path, monkeypatch):
    import lake_check
    from mde_pipeline.airflow.status.report import build_status
    from mde_pipeline.airflow.tenants import DEFAULT_TENANT_DAG, tenant_dag

    lake = tmp_path / "lake"
    build(lake)
    monkeypatch.setenv("MDE_RATE_LIMIT_LEDGER_DIR", str(tmp_path / "ledger"))
    monkeypatch.setenv("AIRFLOW_CONN_MDE_DEFAULT", json.dumps({
        "conn_type": "http", "host": "https://127.0.0.1:9", "login": "client", "password": "not-used",
        "extra": {"tenant_id": UPPER},
    }))
    status = build_status(location=resolve_lake_location(lake), tenants=[DEFAULT_TENANT_DAG], backfills=lambda dag_id: [])
    [entry] = status["tenants"]
    assert entry["tenant_id"] == GUID and entry["lake"]["rows_per_day"]  # the canonical partition, still shown
    assert any("python -m mde_pipeline.airflow.migrate_lake" in line for line in status["errors"]), status["errors"]
    with pytest.raises(NonCanonicalTenantError, match="migrate_lake"):
        lake_check.connect(lake)
    # A connection naming its tenant by a domain: no lake section without a token, and a line saying why.
    monkeypatch.setenv("AIRFLOW_CONN_MDE_BYDOMAIN", json.dumps({
        "conn_type": "http", "host": "https://127.0.0.1:9", "login": "client", "password": "not-used",
        "extra": {"tenant_id": DOMAIN},
    }))
    status = build_status(location=resolve_lake_location(lake), tenants=[tenant_dag("bydomain")], backfills=lambda dag_id: [])
    assert status["tenants"][0]["tenant_id"] is None
    assert any("is a domain name" in line for line in status["errors"]), status["errors"]
