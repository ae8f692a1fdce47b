"""The analysts' query CLI: DuckDB on the lake, views loaded.

    python -m mde_pipeline.analytics.cli [--lake ROOT] [--sql SQL | --file F]
    make query SQL="SELECT * FROM ip_summary ORDER BY alert_count DESC LIMIT 10"

``--lake`` takes a local path or ``file://`` root; without it: ``MDE_LAKE_ROOT``, then
``AIRFLOW_VAR_MDE_LAKE_ROOT``. An ``abfs://`` root (and ``--conn-id``) needs the
Airflow-configured entry point (``make query``), which hands :func:`main` a ``locate``
that opens the lake exactly as the DAG does. Without ``--sql``/``--file`` it starts an
interactive shell (statements end with ``;``; ``.tables``, ``.schema NAME``, ``.quit``).
The views hold every tenant of the lake; ``WHERE tenant_id = '<id>'`` reads one tenant's
files only (a partition column). Views and how they follow the lake: :mod:`.session`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from mde_pipeline.analytics.session import LakeSessionError, connect, split_statements
from mde_pipeline.lake.location import LakeLocation, LakeLocationError, resolve_lake_location

DEFAULT_MAX_ROWS = 1000
ROOT_ENVIRONMENT = ("MDE_LAKE_ROOT", "AIRFLOW_VAR_MDE_LAKE_ROOT")

# (root or None, conn_id or None) -> the lake; the Airflow face supplies one for abfs roots.
Locate = Callable[["str | None", "str | None"], LakeLocation]


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


def local_lake(root: str | None, conn_id: str | None) -> LakeLocation:
    """The ``locate`` of the plain CLI: a local root only (abfs needs Airflow's connection)."""
    root = root or next((os.environ[name] for name in ROOT_ENVIRONMENT if os.environ.get(name)), None)
    if not root:
        raise LakeLocationError(f"no lake root: pass --lake or set {' or '.join(ROOT_ENVIRONMENT)}")
    if conn_id:
        raise LakeLocationError("--conn-id needs the Airflow-configured entry point (make query)")
    try:
        return resolve_lake_location(root)
    except LakeLocationError as exc:
        raise LakeLocationError(f"{exc}; an abfs:// lake needs the Airflow-configured entry point (make query)") from None


def main(argv: list[str] | None = None, *, locate: Locate | None = None, prog: str = "python -m mde_pipeline.analytics.cli") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="DuckDB on the MDE alert-IPs lake, views loaded.")
    parser.add_argument("--lake", help=f"lake root (default: {', then '.join(ROOT_ENVIRONMENT)})")
    parser.add_argument("--conn-id", help="Airflow connection of an abfs root (with the Airflow-configured entry point)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sql", help="SQL to run (several statements separated by ';')")
    source.add_argument("--file", type=Path, help="a SQL file to run")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="rows printed per result (0: all)")
    parser.add_argument("--no-ip-index", action="store_true", help="read alert_ips from the day files only")
    args = parser.parse_args(argv)

    import duckdb

    try:
        location = (locate or local_lake)(args.lake, args.conn_id)
        connection = connect(location, use_ip_index=not args.no_ip_index)
    except (LakeLocationError, LakeSessionError, duckdb.Error) as exc:
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
