"""Spark SQL (pyspark from PyPI, the machine's Java) reads the lake like DuckDB does:
the two-tenant lake, partitions tenant_id and date found by MSCK REPAIR TABLE.

One short local[1] session for the whole module: it is the slowest part of the suite.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from mde_pipeline.analytics.session import connect, split_statements
from mde_pipeline.lake.compaction import compact_day
from mde_pipeline.lake.schema import SCHEMAS

from tests.analytics.conftest import OTHER_TENANT, TENANT_DATA, day_name

REPO = Path(__file__).resolve().parents[2]
SPARK_SQL = REPO / "include" / "sql" / "spark"
VIEWS = ("alerts_latest", "alert_ips_latest", "alert_ip_details", "ip_summary")

pytestmark = pytest.mark.slow  # starts a JVM


def spark_type(arrow_type: pa.DataType) -> str:
    """The Spark simpleString of an Arrow type of the lake schema."""
    if pa.types.is_string(arrow_type):
        return "string"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_list(arrow_type):
        return f"array<{spark_type(arrow_type.value_type)}>"
    if pa.types.is_struct(arrow_type):
        return "struct<" + ",".join(f"{f.name}:{spark_type(f.type)}" for f in arrow_type) + ">"
    return {pa.int8(): "tinyint", pa.int32(): "int", pa.int64(): "bigint"}[arrow_type]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("Spark needs Java 17+ and `java` is not on PATH (Debian: apt-get install openjdk-17-jre-headless)")
    from pyspark.sql import SparkSession

    work = tmp_path_factory.mktemp("spark")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[1]")
        .appName("mde-lake-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "1")
        # The test lake's files are tiny: with the default 4 MiB "open cost" per file each
        # scan of the two-tenant lake is split into 3 tasks, run one after another here.
        .config("spark.sql.files.openCostInBytes", str(1 << 10))
        .config("spark.sql.warehouse.dir", str(work / "warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={work}")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    # py4j logs at INFO from __del__ at interpreter exit, after pytest closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def run_script(spark, path: Path, lake_root: str) -> None:
    for statement in split_statements(path.read_text(encoding="utf-8")):
        spark.sql(statement.replace("${LAKE_ROOT}", lake_root))


def test_spark_reads_the_lake_with_the_schema_and_rows_duckdb_sees(spark, hourly_lake):
    root, location = hourly_lake
    for table in SCHEMAS:  # one day of one tenant compacted, the rest hourly: both layouts at once
        compact_day(location, table, day_name(1))
    run_script(spark, SPARK_SQL / "tables.sql", f"file://{root}")
    run_script(spark, SPARK_SQL / "views.sql", f"file://{root}")
    duck = connect(str(root))

    partitions = sorted(f"tenant_id={t}/date={day_name(d)}" for t, (_, days) in TENANT_DATA.items() for d in days)
    for table, schema in SCHEMAS.items():
        fields = spark.table(table).schema.fields
        # Spark lists the partition columns last.
        assert [(f.name, f.dataType.simpleString()) for f in fields] == [
            (f.name, spark_type(f.type)) for f in schema if f.name != "tenant_id"
        ] + [("tenant_id", "string"), ("date", "date")]
        assert sorted(r[0] for r in spark.sql(f"SHOW PARTITIONS {table}").collect()) == partitions
    # A tenant filter is a partition filter: Spark lists that tenant's folders only.
    plan = spark.sql(f"EXPLAIN SELECT ip FROM alert_ips WHERE tenant_id = '{OTHER_TENANT}'").collect()[0][0]
    assert f"PartitionFilters: [isnotnull(tenant_id" in plan and f"(tenant_id#" in plan.split("PartitionFilters:")[1].split("]")[0]

    # One Spark job for every count (each job costs seconds on a busy machine).
    names = (*SCHEMAS, *VIEWS)
    counts = "SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in names)
    spark_counts = tuple(spark.sql(counts).collect()[0])
    duck_counts = duck.execute(counts).fetchone()
    assert spark_counts == duck_counts and min(duck_counts) > 0, dict(zip(names, zip(spark_counts, duck_counts)))

    # Row for row, with timestamps as UTC epoch microseconds on both sides.
    key = "SELECT tenant_id, alert_id, ip, {micros}, CAST(date AS STRING) FROM alert_ips ORDER BY 1, 2, 3, 4"
    spark_rows = [tuple(r) for r in spark.sql(key.format(micros="unix_micros(alert_last_update_time)")).collect()]
    duck_rows = duck.execute(key.format(micros="epoch_us(alert_last_update_time)")).fetchall()
    assert spark_rows == duck_rows

    summary = "SELECT tenant_id, ip, alert_count, {first} FROM ip_summary ORDER BY alert_count DESC, tenant_id, ip LIMIT 20"
    assert [tuple(r) for r in spark.sql(summary.format(first="unix_micros(first_seen)")).collect()] == duck.execute(
        summary.format(first="epoch_us(first_seen)")
    ).fetchall()
