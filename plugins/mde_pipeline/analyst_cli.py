"""DuckDB on the lake, with the analysts' views loaded.

    python -m mde_pipeline.analyst_cli [--lake ROOT] [--conn-id ID] [--sql SQL | --file F]
    make query SQL="SELECT * FROM ip_summary ORDER BY alert_count DESC LIMIT 10"

``--lake`` takes what Variable ``mde_lake_root`` takes (local path, ``file://``,
``abfs://container@account.dfs.core.windows.net/prefix``); without it: the Variable
(``AIRFLOW_VAR_MDE_LAKE_ROOT``), then ``<repo>/lake``. An abfs root is opened with the
Airflow connection ``--conn-id`` (default: Variable ``mde_lake_conn_id``, then
``mde_lake``), exactly as the DAG opens it; DuckDB reads it through that fsspec
filesystem. Without ``--sql``/``--file`` it starts an interactive shell (statements
end with ``;``; ``.tables``, ``.schema NAME``, ``.quit``).

Views (include/sql/duckdb/views.sql): ``alerts``, ``alert_ips``, ``alerts_latest``,
``alert_ips_latest``, ``alert_ip_details``, ``ip_summary``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

VIEWS_SQL = Path(__file__).resolve().parents[2] / "include" / "sql" / "duckdb" / "views.sql"
ROOT_PLACEHOLDER = "${LAKE_ROOT}"
BASE_TABLES = ("alerts", "alert_ips")
DEFAULT_MAX_ROWS = 1000

_BASE_VIEW = re.compile(r"CREATE OR REPLACE VIEW (\w+) AS\s+SELECT \*\s+FROM read_parquet\(", re.IGNORECASE)


class AnalystCliError(RuntimeError):
    """The lake or the views cannot be opened."""


def split_statements(sql: str) -> list[str]:
    """Statements of a SQL script (``;``-terminated; no ``;`` inside literals or comments)."""
    code = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [text.strip() for text in code.split(";") if text.strip()]


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


def connect(root: str | None = None, conn_id: str | None = None, *, views_sql: Path = VIEWS_SQL, use_ip_index: bool = True):
    """A DuckDB connection with the lake's views; ``root``/``conn_id`` as for the DAG.

    ``use_ip_index``: read closed months of ``alert_ips`` from their IP-sorted copies
    where those are valid (same rows, faster IP lookups).
    """
    import duckdb

    from mde_pipeline.lake.location import resolve_lake_location
    from mde_pipeline.lake.schema import SCHEMAS

    location = resolve_lake_location(root, conn_id)
    connection = duckdb.connect()
    if not location.is_local:
        connection.register_filesystem(location.fs)
    lake_root = location.uri()
    try:
        script = views_sql.read_text(encoding="utf-8")
    except OSError as exc:
        raise AnalystCliError(f"cannot read the views file {views_sql}: {exc}") from exc
    fs = location.fs
    fs.invalidate_cache()
    for statement in split_statements(script):
        match = _BASE_VIEW.match(statement)
        table = match.group(1) if match else None
        if table in BASE_TABLES and not fs.glob(location.path(table, "*", "*.parquet")):
            # No file yet: an empty view of the right shape, so queries still run.
            _create_empty_view(connection, table, SCHEMAS[table])
            continue
        connection.execute(statement.replace(ROOT_PLACEHOLDER, _sql_literal(lake_root)))
    if use_ip_index:
        _use_month_indexes(connection, location)
    return connection


def _use_month_indexes(connection, location) -> None:
    """Read closed months' alert_ips from their IP-sorted copies (lake/compaction.py).

    Only indexes that match the lake right now are used; their months are excluded from
    the day files by a constant range filter on the Hive ``date``, which DuckDB applies
    to the file list before opening anything (a long ``NOT IN`` list of dates costs
    several times more per file than a range). A day rewritten after this point deletes
    its month's index first, so a long session gets "file not found" rather than stale
    rows: reconnect.
    """
    from mde_pipeline.lake.compaction import INDEXED_TABLE, valid_month_indexes

    indexes = valid_month_indexes(location)
    if not indexes:
        return
    ranges: list[list[date]] = []
    for month in sorted(index.month for index in indexes):
        first = date.fromisoformat(f"{month}-01")
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        if ranges and ranges[-1][1] == first:
            ranges[-1][1] = following
        else:
            ranges.append([first, following])
    outside = " AND ".join(f"NOT (date >= DATE '{a}' AND date < DATE '{b}')" for a, b in ranges)
    files = ", ".join(f"'{_sql_literal(index.uri)}'" for index in indexes)
    day_files = _sql_literal(location.uri(INDEXED_TABLE, "*", "*.parquet"))
    connection.execute(
        f"""CREATE OR REPLACE VIEW {INDEXED_TABLE} AS
        SELECT * FROM read_parquet('{day_files}', hive_partitioning = true, hive_types = {{'date': DATE}})
        WHERE {outside}
        UNION ALL BY NAME
        SELECT *, CAST(timezone('UTC', interval_start) AS DATE) AS date FROM read_parquet([{files}])"""
    )


def _create_empty_view(connection, table: str, schema) -> None:
    import pyarrow as pa

    empty = schema.append(pa.field("date", pa.date32())).empty_table()
    connection.register(f"_empty_{table}", empty)
    connection.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _empty_{table}")


# --------------------------------------------------------------------------- output


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_default)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def write_result(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO, fmt: str, max_rows: int) -> int:
    """Print rows as an aligned table, CSV or JSON lines; returns how many were printed."""
    rows = list(rows)
    shown = rows[:max_rows] if max_rows > 0 else rows
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[None if v is None else _text(v) for v in row] for row in shown])
    elif fmt == "json":
        for row in shown:
            out.write(json.dumps(dict(zip(columns, row)), default=_json_default) + "\n")
    else:
        cells = [[_text(v) for v in row] for row in shown]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        out.write(" | ".join(c.ljust(w) for c, w in zip(columns, widths)) + "\n")
        out.write("-+-".join("-" * w for w in widths) + "\n")
        for row in cells:
            out.write(" | ".join(v.ljust(w) for v, w in zip(row, widths)) + "\n")
        more = f" (first {len(shown)} shown; --max-rows to change)" if len(shown) < len(rows) else ""
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{more})\n")
    return len(shown)


def run_sql(connection, sql: str, out: TextIO, fmt: str = "table", max_rows: int = DEFAULT_MAX_ROWS) -> None:
    """Run every statement; print the result of each one that returns rows."""
    for statement in split_statements(sql):
        cursor = connection.execute(statement)
        if cursor.description:
            write_result([d[0] for d in cursor.description], cursor.fetchall(), out, fmt, max_rows)


def shell(connection, stdin: TextIO, out: TextIO, fmt: str, max_rows: int) -> int:
    """A small interactive loop: statements end with ``;``; dot commands as in duckdb."""
    import duckdb

    interactive = stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        out.write("MDE lake (DuckDB). Views: " + ", ".join(_views(connection)) + ". End statements with ';', .quit to leave.\n")
    buffer: list[str] = []
    errors = 0
    while True:
        prompt = ("...> " if buffer else "lake> ") if interactive else ""
        try:
            line = input(prompt) if interactive else stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if not buffer and line.strip().startswith("."):
            command, _, argument = line.strip().partition(" ")
            if command in (".quit", ".exit"):
                break
            if command == ".tables":
                out.write("\n".join(_views(connection)) + "\n")
            elif command == ".schema" and argument:
                cursor = connection.execute(f"DESCRIBE {argument.strip().rstrip(';')}")
                write_result([d[0] for d in cursor.description], cursor.fetchall(), out, fmt, 0)
            else:
                out.write("commands: .tables  .schema NAME  .quit\n")
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            sql, buffer = "\n".join(buffer), []
            try:
                run_sql(connection, sql, out, fmt, max_rows)
            except duckdb.Error as exc:
                errors += 1
                out.write(f"Error: {exc}\n")
    return 1 if errors and not interactive else 0


def _views(connection) -> list[str]:
    return [r[0] for r in connection.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND view_name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY 1"
    ).fetchall()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mde_pipeline.analyst_cli", description="DuckDB on the MDE alert-IPs lake, views loaded."
    )
    parser.add_argument("--lake", help="lake root (default: Variable mde_lake_root, then <repo>/lake)")
    parser.add_argument("--conn-id", help="Airflow connection of an abfs root (default: Variable mde_lake_conn_id, then mde_lake)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sql", help="SQL to run (several statements separated by ';')")
    source.add_argument("--file", type=Path, help="a SQL file to run")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="rows printed per result (0: all)")
    parser.add_argument("--no-ip-index", action="store_true", help="read alert_ips from the day files only")
    args = parser.parse_args(argv)

    import duckdb

    from mde_pipeline.lake.location import LakeLocationError

    try:
        connection = connect(args.lake, args.conn_id, use_ip_index=not args.no_ip_index)
    except (LakeLocationError, AnalystCliError, duckdb.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sql = args.sql
    if args.file is not None:
        sql = args.file.read_text(encoding="utf-8")
    if sql is None or not sql.strip():
        return shell(connection, sys.stdin, sys.stdout, args.format, args.max_rows)
    try:
        run_sql(connection, sql, sys.stdout, args.format, args.max_rows)
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
