"""DuckDB on the lake with the analysts' views, kept in step with the lake.

Views (include/sql/duckdb/views.sql): ``alerts``, ``alert_ips``, ``alerts_latest``,
``alert_ips_latest``, ``alert_ip_details``, ``ip_summary``. ``alert_ips`` reads the days
the IP index covers (lake/ip_index.py) from it and the other days from their files
(``use_ip_index=False``: day files only); :class:`LakeSession` keeps the views in step
with the lake while it stays open.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mde_pipeline.lake.ip_index import INDEXED_TABLE, valid_month_indexes
from mde_pipeline.lake.layout import day_has_data, table_days
from mde_pipeline.lake.location import LakeLocation, resolve_lake_location
from mde_pipeline.lake.schema import SCHEMAS

VIEWS_SQL = Path(__file__).resolve().parents[3] / "include" / "sql" / "duckdb" / "views.sql"
ROOT_PLACEHOLDER = "${LAKE_ROOT}"
BASE_TABLES = ("alerts", "alert_ips")
DEFAULT_MAX_ROWS = 1000

_BASE_VIEW = re.compile(r"CREATE OR REPLACE VIEW (\w+) AS\s+SELECT \*\s+FROM read_parquet\(", re.IGNORECASE)


class LakeSessionError(RuntimeError):
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


def connect(
    location: LakeLocation | str | os.PathLike, *, views_sql: Path = VIEWS_SQL, use_ip_index: bool = True
) -> LakeSession:
    """A :class:`LakeSession` on the lake at ``location`` (a LakeLocation, or a local root).

    ``use_ip_index``: read the days the IP index covers from its IP-sorted month files
    (same rows, faster IP lookups); without it every day comes from its day files.
    """
    if not isinstance(location, LakeLocation):
        location = resolve_lake_location(location)
    return LakeSession(location, views_sql=views_sql, use_ip_index=use_ip_index)


class LakeSession:
    """DuckDB with the analysts' views, kept in step with the lake while it is open.

    ``execute`` works as DuckDB's (it returns the connection, ready to fetch). Before
    each statement it checks, with one listing of ``alert_ips``, whether the lake gained or
    lost a day directory since the views were made, and makes them again if so. Within
    a day nothing needs redoing: the views glob a day's files at query time. A statement
    that fails on a missing file (an index month rebuilt or dropped, a day swapped by
    compaction while it was read) is retried once on fresh views.
    """

    def __init__(self, location: LakeLocation, *, views_sql: Path = VIEWS_SQL, use_ip_index: bool = True) -> None:
        import duckdb

        self.location = location
        self.use_ip_index = use_ip_index
        try:
            self._script = views_sql.read_text(encoding="utf-8")
        except OSError as exc:
            raise LakeSessionError(f"cannot read the views file {views_sql}: {exc}") from exc
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
        days = tuple(table_days(self.location, INDEXED_TABLE)) if self.use_ip_index else ()
        filled = tuple(day for day in self._watched_days if day_has_data(self.location, INDEXED_TABLE, day))
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
        if self.use_ip_index and INDEXED_TABLE not in empty:
            self._use_ip_index()

    def _use_ip_index(self) -> None:
        """Read the days the IP index covers from it, every other day from its day files.

        Only indexes that match the lake right now are used (lake/ip_index.py). The day
        files are named by one glob per uncovered day (per month when no day of the month
        is covered), never by a glob over the whole table: DuckDB lists every directory a
        glob spans on every query, which alone costs about what the lookup does.
        """
        indexes = valid_month_indexes(self.location)
        if not indexes:
            return
        covered = {day for index in indexes for day in index.days}
        by_month: dict[str, list[str]] = {}
        for day in table_days(self.location, INDEXED_TABLE):
            by_month.setdefault(day[:7], []).append(day)
        patterns, waiting = [], []
        for month, days in sorted(by_month.items()):
            uncovered = [day for day in days if day not in covered]
            # A glob matching nothing is an error in DuckDB: days without a file yet are
            # left out and watched (_lake_state) until they get one.
            filled = [day for day in uncovered if day_has_data(self.location, INDEXED_TABLE, day)]
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
            parts.append(f"SELECT * FROM read_parquet([{globs}], hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)")
        self.connection.execute(f"CREATE OR REPLACE VIEW {INDEXED_TABLE} AS\n" + "\nUNION ALL BY NAME\n".join(parts))


def _create_empty_view(connection, table: str, schema) -> None:
    import pyarrow as pa

    empty = schema.append(pa.field("date", pa.date32())).empty_table()
    connection.register(f"_empty_{table}", empty)
    connection.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _empty_{table}")


