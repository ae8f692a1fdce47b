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
``alert_ips_latest``, ``alert_ip_details``, ``ip_summary``. ``alert_ips`` reads the days
the IP index covers (lake/ip_index.py) from it and the other days from their files
(``--no-ip-index``: day files only); :class:`LakeSession` keeps the views in step with
the lake while a shell stays open.
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
INDEXED = "alert_ips"  # the table the IP index copies (mde_pipeline.lake.ip_index.INDEXED_TABLE)
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


# Session settings of every connection the CLI opens (the benchmark applies them to every
# layout it compares). Footers parsed once per session instead of once per query: an IP
# lookup reads little else. DuckDB checks a cached footer against the file's modification
# time, and the lake writes every file under a new name or by an atomic rename.
DUCKDB_SETTINGS = ("SET parquet_metadata_cache = true",)


def configure(connection) -> None:
    for statement in DUCKDB_SETTINGS:
        connection.execute(statement)


def connect(root: str | None = None, conn_id: str | None = None, *, views_sql: Path = VIEWS_SQL, use_ip_index: bool = True):
    """A :class:`LakeSession` on the lake; ``root``/``conn_id`` as for the DAG.

    ``use_ip_index``: read the days the IP index covers from its IP-sorted month files
    (same rows, faster IP lookups); without it every day comes from its day files.
    """
    from mde_pipeline.lake.location import resolve_lake_location

    return LakeSession(resolve_lake_location(root, conn_id), views_sql=views_sql, use_ip_index=use_ip_index)


class LakeSession:
    """DuckDB with the analysts' views, kept in step with the lake while it is open.

    ``execute`` works as DuckDB's (it returns the connection, ready to fetch). Before
    each statement it checks, with one listing of ``alert_ips``, whether the lake gained or
    lost a day directory since the views were made, and makes them again if so. Within
    a day nothing needs redoing: the views glob a day's files at query time. A statement
    that fails on a missing file (an index month rebuilt or dropped, a day swapped by
    compaction while it was read) is retried once on fresh views.
    """

    def __init__(self, location, *, views_sql: Path = VIEWS_SQL, use_ip_index: bool = True) -> None:
        import duckdb

        self.location = location
        self.use_ip_index = use_ip_index
        try:
            self._script = views_sql.read_text(encoding="utf-8")
        except OSError as exc:
            raise AnalystCliError(f"cannot read the views file {views_sql}: {exc}") from exc
        self.connection = duckdb.connect()
        configure(self.connection)
        if not location.is_local:
            self.connection.register_filesystem(location.fs)
        self._state: tuple | None = None
        self._watched_days: tuple[str, ...] = ()  # uncovered days with no file yet
        self._empty_tables: tuple[str, ...] = ()  # tables with no file yet
        self.refresh(force=True)

    # -- DuckDB's interface, as far as the CLI and its users need it
    def execute(self, sql: str, parameters=None):
        import duckdb

        self.refresh()
        try:
            return self.connection.execute(sql, parameters)
        except duckdb.IOException:
            self.refresh(force=True)
            return self.connection.execute(sql, parameters)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> LakeSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- views
    def _lake_state(self) -> tuple:
        """What the views were made from beyond what their globs find at query time.

        Runs before every statement, so it lists only what can change a view: the days of
        ``alert_ips`` when it reads the IP index (the plain views glob every day at query
        time), the days still waiting for a first file, and tables that had no file.
        """
        fs = self.location.fs
        fs.invalidate_cache()
        days = tuple(_table_days(self.location, INDEXED)) if self.use_ip_index else ()
        filled = tuple(day for day in self._watched_days if _day_parquet_files(self.location, day))
        started = tuple(t for t in self._empty_tables if fs.glob(self.location.path(t, "*", "*.parquet")))
        return days, filled, started

    def refresh(self, force: bool = False) -> None:
        """Make the views again if the lake's days changed (always with ``force``)."""
        state = self._lake_state()
        if force or state != self._state:
            self._make_views()
            # The day directories as listed *before* the views were made, and the days and
            # tables still waiting for a file as unfilled: whatever changed meanwhile
            # differs from this at the next check and makes the views again.
            self._state = (state[0], (), ())

    def _make_views(self) -> None:
        from mde_pipeline.lake.schema import SCHEMAS

        fs = self.location.fs
        fs.invalidate_cache()
        lake_root = self.location.uri()
        self._watched_days, empty = (), []
        for statement in split_statements(self._script):
            match = _BASE_VIEW.match(statement)
            table = match.group(1) if match else None
            if table in BASE_TABLES and not fs.glob(self.location.path(table, "*", "*.parquet")):
                # No file yet: an empty view of the right shape, so queries still run.
                _create_empty_view(self.connection, table, SCHEMAS[table])
                empty.append(table)
                continue
            self.connection.execute(statement.replace(ROOT_PLACEHOLDER, _sql_literal(lake_root)))
        self._empty_tables = tuple(empty)
        if self.use_ip_index and INDEXED not in empty:
            self._use_ip_index()

    def _use_ip_index(self) -> None:
        """Read the days the IP index covers from it, every other day from its day files.

        Only indexes that match the lake right now are used (lake/ip_index.py). The day
        files are named by one glob per uncovered day (per month when no day of the month
        is covered), never by a glob over the whole table: DuckDB lists every directory a
        glob spans on every query, which alone costs about what the lookup does.
        """
        from mde_pipeline.lake.ip_index import INDEXED_TABLE, valid_month_indexes

        indexes = valid_month_indexes(self.location)
        if not indexes:
            return
        covered = {day for index in indexes for day in index.days}
        by_month: dict[str, list[str]] = {}
        for day in _table_days(self.location, INDEXED_TABLE):
            by_month.setdefault(day[:7], []).append(day)
        patterns, waiting = [], []
        for month, days in sorted(by_month.items()):
            uncovered = [day for day in days if day not in covered]
            # A glob matching nothing is an error in DuckDB: days without a file yet are
            # left out and watched (_lake_state) until they get one.
            filled = [day for day in uncovered if _day_parquet_files(self.location, day)]
            waiting.extend(day for day in uncovered if day not in filled)
            if filled and len(filled) == len(days):
                patterns.append(self.location.uri(INDEXED_TABLE, f"date={month}-*", "*.parquet"))
            else:
                patterns.extend(self.location.uri(INDEXED_TABLE, f"date={day}", "*.parquet") for day in filled)
        self._watched_days = tuple(waiting)
        files = ", ".join(f"'{_sql_literal(index.uri)}'" for index in indexes)
        parts = [f"SELECT *, CAST(timezone('UTC', interval_start) AS DATE) AS date FROM read_parquet([{files}])"]
        if patterns:
            globs = ", ".join(f"'{_sql_literal(p)}'" for p in patterns)
            parts.append(f"SELECT * FROM read_parquet([{globs}], hive_partitioning = true, hive_types = {{'date': DATE}})")
        self.connection.execute(f"CREATE OR REPLACE VIEW {INDEXED_TABLE} AS\n" + "\nUNION ALL BY NAME\n".join(parts))


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _table_days(location, table: str) -> list[str]:
    """``YYYY-MM-DD`` of every ``date=`` directory of a table, sorted."""
    try:
        names = [_base(p) for p in location.fs.ls(location.path(table), detail=False)]
    except FileNotFoundError:
        return []
    return sorted(n.removeprefix("date=") for n in names if n.startswith("date="))


def _day_parquet_files(location, day: str) -> bool:
    from mde_pipeline.lake.ip_index import INDEXED_TABLE

    try:
        names = [_base(p) for p in location.fs.ls(location.path(INDEXED_TABLE, f"date={day}"), detail=False)]
    except FileNotFoundError:
        return False
    return any(n.endswith(".parquet") and not n.startswith((".", "_")) for n in names)


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
