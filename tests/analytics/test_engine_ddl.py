"""Trino and Synapse DDL (reviewed, not run here) against the lake schema in schema.py.

Every column of every table must be declared, in the file order, with a type that
reads the Parquet column without loss; the Hive partitions are ``tenant_id`` then
``date`` (folders ``<table>/tenant_id=<T>/date=YYYY-MM-DD``). The same four analytic views
exist for every engine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from mde_pipeline.lake.schema import SCHEMAS

SQL = Path(__file__).resolve().parents[2] / "include" / "sql"
VIEWS = ("alerts_latest", "alert_ips_latest", "alert_ip_details", "ip_summary")
PARTITIONS = ("tenant_id", "date")  # the folder levels below each table, in order


def balanced_block(text: str, start: int) -> str:
    """The text inside the parenthesis that opens at ``text[start]``."""
    assert text[start] == "("
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1 : index]
    raise AssertionError("unbalanced parentheses")


def top_level_split(block: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in block:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def columns(block: str) -> list[tuple[str, str]]:
    result = []
    for definition in top_level_split(block):
        name, _, declared = definition.partition(" ")
        declared = re.sub(r"\s+COLLATE\s+\w+", "", declared, flags=re.IGNORECASE)
        result.append((name.strip('"[]`'), re.sub(r"\s+", " ", declared.strip().lower())))
    return result


def without_comments(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("--"))


# --------------------------------------------------------------------------- Trino


def trino_compatible(arrow: pa.DataType, declared: str) -> bool:
    if pa.types.is_string(arrow):
        return declared == "varchar" or re.fullmatch(r"varchar\(\d+\)", declared) is not None
    if pa.types.is_timestamp(arrow):
        return declared == "timestamp(6)"  # micros; needs hive.timestamp-precision=MICROSECONDS
    if pa.types.is_list(arrow):
        inner = re.fullmatch(r"array\((.*)\)", declared)
        return inner is not None and trino_compatible(arrow.value_type, inner.group(1))
    if pa.types.is_struct(arrow):
        inner = re.fullmatch(r"row\((.*)\)", declared)
        if not inner:
            return False
        fields = columns(inner.group(1))
        return [n for n, _ in fields] == [f.name for f in arrow] and all(
            trino_compatible(f.type, t) for f, (_, t) in zip(arrow, fields)
        )
    return {pa.int8(): "tinyint", pa.int32(): "integer", pa.int64(): "bigint"}.get(arrow) == declared


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_trino_tables_declare_every_column_with_a_compatible_type(table):
    text = without_comments(SQL / "trino" / "tables.sql")
    match = re.search(rf"CREATE TABLE IF NOT EXISTS hive\.mde\.{table}\s*\(", text)
    assert match, f"no CREATE TABLE for {table}"
    block = balanced_block(text, match.end() - 1)
    declared = columns(block)
    schema = SCHEMAS[table]
    # The Hive connector wants the partition columns last, in partitioned_by's order; the
    # files' own tenant_id column is then not read (the partition's value is the same).
    data_fields = [f for f in schema if f.name not in PARTITIONS]
    assert [n for n, _ in declared] == [f.name for f in data_fields] + list(PARTITIONS)
    for field, (name, sql_type) in zip(data_fields, declared):
        assert trino_compatible(field.type, sql_type), f"{table}.{name}: {sql_type} for {field.type}"
    assert declared[-2:] == [("tenant_id", "varchar"), ("date", "date")]
    after = text[match.end() + len(block) :]
    assert re.match(r"\s*\)\s*WITH\s*\(", after)
    options = balanced_block(after, after.index("("))
    assert f"external_location = '${{LAKE_ROOT}}/{table}'" in options
    assert "format = 'PARQUET'" in options and "partitioned_by = ARRAY['tenant_id', 'date']" in options
    assert re.search(rf"CALL hive\.system\.sync_partition_metadata\(schema_name => 'mde', table_name => '{table}'", text)


# --------------------------------------------------------------------------- Synapse


def synapse_compatible(arrow: pa.DataType, declared: str) -> bool:
    if pa.types.is_string(arrow):
        return re.fullmatch(r"n?varchar\((\d+|max)\)", declared) is not None
    if pa.types.is_timestamp(arrow):
        return declared in ("datetime2(6)", "datetime2(7)", "datetime2")
    if pa.types.is_list(arrow) or pa.types.is_struct(arrow):
        return re.fullmatch(r"n?varchar\(max\)", declared) is not None  # JSON text
    # Parquet INT(8, signed): T-SQL tinyint is unsigned, so smallint holds every value.
    return {pa.int8(): "smallint", pa.int32(): "int", pa.int64(): "bigint"}.get(arrow) == declared


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_synapse_views_pin_every_column_with_a_compatible_type(table):
    text = without_comments(SQL / "synapse" / "views.sql")
    # The partitions are the wildcards of the path, in order: a filter on them prunes folders.
    view = re.search(
        rf"CREATE OR ALTER VIEW dbo\.{table} AS\s+SELECT r\.filepath\(1\) AS tenant_id, r\.\*, CAST\(r\.filepath\(2\) AS date\) AS \[date\]",
        text,
    )
    assert view, f"no OPENROWSET view for {table} exposing filepath(1) as tenant_id and filepath(2) as [date]"
    rest = text[view.end() :]
    bulk = re.match(
        rf"\s*FROM OPENROWSET\(\s*BULK '{table}/tenant_id=\*/date=\*/\*\.parquet',\s*DATA_SOURCE = 'mde_lake',"
        rf"\s*FORMAT = 'PARQUET'\s*\)\s*WITH\s*\(",
        rest,
    )
    assert bulk, f"{table}: OPENROWSET(BULK '{table}/tenant_id=*/date=*/*.parquet', FORMAT = 'PARQUET') WITH (...) expected"
    declared = columns(balanced_block(rest, bulk.end() - 1))
    # Every file column but tenant_id (the folder's value stands for it).
    data_fields = [f for f in SCHEMAS[table] if f.name not in PARTITIONS]
    assert [n for n, _ in declared] == [f.name for f in data_fields]
    for field, (name, sql_type) in zip(data_fields, declared):
        assert synapse_compatible(field.type, sql_type), f"{table}.{name}: {sql_type} for {field.type}"
    # Text columns use a UTF-8 collation (Parquet strings are UTF-8).
    block = balanced_block(rest, bulk.end() - 1)
    for definition in top_level_split(block):
        if "varchar" in definition.lower():
            assert "COLLATE Latin1_General_100_BIN2_UTF8" in definition, definition


def test_a_column_missing_from_the_ddl_is_caught():
    """The checks above can fail: a schema with one more column does not match."""
    text = without_comments(SQL / "trino" / "tables.sql")
    match = re.search(r"CREATE TABLE IF NOT EXISTS hive\.mde\.alert_ips\s*\(", text)
    declared = [n for n, _ in columns(balanced_block(text, match.end() - 1))]
    extended = SCHEMAS["alert_ips"].append(pa.field("extra", pa.string()))
    assert declared != [n for n in extended.names if n not in PARTITIONS] + list(PARTITIONS)
    assert not trino_compatible(pa.int64(), "integer") and not synapse_compatible(pa.timestamp("us", tz="UTC"), "date")


@pytest.mark.parametrize("engine, pattern", [
    ("duckdb/views.sql", r"CREATE OR REPLACE VIEW {view} AS"),
    ("spark/views.sql", r"CREATE OR REPLACE TEMPORARY VIEW {view} AS"),
    ("trino/views.sql", r"CREATE OR REPLACE VIEW hive\.mde\.{view} AS"),
    ("synapse/views.sql", r"CREATE OR ALTER VIEW dbo\.{view} AS"),
])
def test_every_engine_defines_the_analyst_views(engine, pattern):
    text = without_comments(SQL / engine)
    for view in VIEWS:
        assert re.search(pattern.format(view=view), text), f"{engine}: no view {view}"
