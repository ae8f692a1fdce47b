"""DuckDB on the lake with the analysts' views, kept in step with the lake.

Views (views.sql beside this module; include/sql/duckdb/views.sql links to it): ``alerts``, ``alert_ips``, ``alerts_latest``,
``alert_ips_latest``, ``alert_ip_details``, ``ip_summary``, over every tenant of the
lake: ``tenant_id`` and ``date`` are Hive partition columns (the folders
``tenant_id=<T>/date=YYYY-MM-DD``), so a filter on them skips other tenants' and days'
files. ``alert_ips`` reads the days each tenant's IP index covers (lake/ip_index.py) and
the hourly days its recent IP index covers (lake/recent_index.py) from them, and the
other days from their files (``use_ip_index=False``: day files only);
:class:`LakeSession` keeps the views in step with the lake while it stays open. A lake
still in the layout from before tenants is refused (lake/tenants.py names the migration).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mde_pipeline.lake.commit_log import recorded_hours
from mde_pipeline.lake.ip_index import INDEXED_TABLE, valid_month_indexes
from mde_pipeline.lake.layout import DATE_PREFIX, day_has_data, list_names, table_days
from mde_pipeline.lake.location import TENANT_PREFIX, LakeLocation, LakeLocationError, resolve_lake_location
from mde_pipeline.lake.recent_index import recent_state, valid_recent_index
from mde_pipeline.lake.schema import SCHEMAS
from mde_pipeline.lake.tenants import LegacyLakeLayoutError, check_canonical_tenants, check_not_legacy, tenant_locations

VIEWS_SQL = Path(__file__).resolve().parent / "views.sql"  # package data of the wheel
ROOT_PLACEHOLDER = "${LAKE_ROOT}"
BASE_TABLES = ("alerts", "alert_ips")
_UNFILTERED = "_unfiltered_"  # a base view's name before pending hours are left out
_PENDING_HOURS = "_pending_hours"
DEFAULT_MAX_ROWS = 1000

# The partition columns' types: a tenant id that looks like a number stays text.
HIVE_TYPES = "{'tenant_id': VARCHAR, 'date': DATE}"

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
    each statement it checks, with one listing of ``alert_ips`` and one per tenant in it,
    whether the lake gained or lost a tenant or a day directory since the views were made,
    and makes them again if so. Within a day nothing needs redoing: the views glob a day's
    files at query time. A statement that fails on a missing file (an index month rebuilt
    or dropped, a day swapped by compaction while it was read) is retried once on fresh
    views.
    """

    def __init__(self, location: LakeLocation, *, views_sql: Path = VIEWS_SQL, use_ip_index: bool = True) -> None:
        import duckdb

        if location.tenant_id is not None:
            raise LakeSessionError(
                f"lake {location.url}: the analysts' views read every tenant; open the lake root and filter on "
                f"tenant_id = '{location.tenant_id}'"
            )
        try:
            check_not_legacy(location)
            check_canonical_tenants(location)  # one tenant in two folders: its rows twice
        except LegacyLakeLayoutError as exc:
            raise LakeSessionError(str(exc)) from exc
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
        self._watched_days: tuple[tuple[str, str], ...] = ()  # (tenant, day) uncovered, no file yet
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
    def _table_files(self, table: str) -> str:
        """The glob of every tenant's committed files of ``table`` (what views.sql reads)."""
        return self.location.path(table, f"{TENANT_PREFIX}*", f"{DATE_PREFIX}*", "*.parquet")

    def _indexed_days(self) -> tuple[tuple[str, str], ...]:
        """``(tenant, day)`` of every day directory of ``alert_ips``: one listing of the
        table, one per tenant in it."""
        days = []
        for name in list_names(self.location, INDEXED_TABLE) or ():
            if not name.startswith(TENANT_PREFIX):
                continue
            try:
                tenant = self.location.for_tenant(name.removeprefix(TENANT_PREFIX))
            except LakeLocationError:
                continue  # not a tenant folder (lake.tenants.lake_tenants skips it too)
            if name != TENANT_PREFIX + tenant.tenant_id:
                continue  # not canonical: the migration's (lake.tenants.check_canonical_tenants)
            days += [(tenant.tenant_id, day) for day in table_days(tenant, INDEXED_TABLE)]
        return tuple(days)

    def _lake_state(self) -> tuple:
        """What the views were made from beyond what their globs find at query time.

        Runs before every statement, so it lists only what can change a view: the tenants
        and days of ``alert_ips`` when it reads the IP index (the plain views glob every
        tenant and day at query time), each tenant's recent index and the versions of its
        days' files, the days still waiting for a first file, and tables that had no file.
        """
        fs = self.location.fs
        fs.invalidate_cache()
        days = self._indexed_days() if self.use_ip_index else ()
        # The recent index names exact file versions: a commit into one of its days
        # changes this, so the views stop using it at the next statement.
        tenants = sorted({tenant for tenant, _ in days})  # the tenants just listed: no second listing
        recent = tuple((t, recent_state(self.location.for_tenant(t))) for t in tenants)
        filled = tuple(
            (tenant, day)
            for tenant, day in self._watched_days
            if day_has_data(self.location.for_tenant(tenant), INDEXED_TABLE, day)
        )
        started = tuple(t for t in self._empty_tables if fs.glob(self._table_files(t)))
        return days, filled, started, tuple(sorted(recorded_hours(self.location))), recent

    def refresh(self, force: bool = False) -> None:
        """Make the views again if the lake's tenants or days changed (always with ``force``)."""
        state = self._lake_state()
        if force or state != self._state:
            self._make_views()
            # The day directories as listed *before* the views were made, and the days and
            # tables still waiting for a file as unfilled: whatever changed meanwhile
            # differs from this at the next check and makes the views again.
            self._state = (state[0], (), (), state[3], state[4])

    def _make_views(self) -> None:
        fs = self.location.fs
        fs.invalidate_cache()
        lake_root = self.location.uri()
        self._watched_days, empty = (), []
        # Hours an interrupted commit left half-applied (lake.commit_log) are left out of
        # both base views until a writer finishes them: a half-written hour never counts.
        pending = sorted(recorded_hours(self.location))
        for statement in split_statements(self._script):
            match = _BASE_VIEW.match(statement)
            table = match.group(1) if match else None
            if table in BASE_TABLES and not fs.glob(self._table_files(table)):
                # No file yet: an empty view of the right shape, so queries still run.
                _create_empty_view(self.connection, table, SCHEMAS[table])
                empty.append(table)
                continue
            if table in BASE_TABLES and pending:
                statement = statement.replace(f"VIEW {table} AS", f"VIEW {_UNFILTERED}{table} AS", 1)
            self.connection.execute(statement.replace(ROOT_PLACEHOLDER, _sql_literal(lake_root)))
            if table in BASE_TABLES and pending:
                self._leave_out(table, pending)
        self._empty_tables = tuple(empty)
        if self.use_ip_index and INDEXED_TABLE not in empty:
            self._use_ip_index(pending)

    def _leave_out(self, table: str, pending: list) -> None:
        """View ``table`` = its unfiltered view without the rows of ``pending`` hours."""
        import pyarrow as pa

        hours = pa.table({"tenant_id": [t for t, _ in pending], "interval_start": pa.array([h for _, h in pending], pa.timestamp("us", tz="UTC"))})
        self.connection.register(_PENDING_HOURS, hours)
        self.connection.execute(
            f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {_UNFILTERED}{table} AS t WHERE NOT EXISTS "
            f"(SELECT 1 FROM {_PENDING_HOURS} AS p WHERE p.tenant_id = t.tenant_id AND p.interval_start = t.interval_start)"
        )

    def _use_ip_index(self, pending: list) -> None:
        """Read the days each tenant's IP index and recent IP index cover from them, every
        other day from its day files.

        Only indexes that match the lake right now are used (lake/ip_index.py,
        lake/recent_index.py); a recent index naming a day a month index covers (a
        compaction and index run between the two checks) is left out. The day
        files are named by one glob per tenant's uncovered day (per tenant's month when no
        day of the month is covered), never by a glob over the whole table or a tenant:
        DuckDB lists every directory a glob spans on every query, which alone costs about
        what the lookup does. Both parts keep ``tenant_id`` a partition column (the index
        files sit under ``_ip_index/tenant_id=<T>/``), so a filter on it skips other
        tenants' index and day files alike.
        """
        tenants = []
        for tenant in tenant_locations(self.location):
            month_indexes = valid_month_indexes(tenant)
            monthly = {day for index in month_indexes for day in index.days}
            recent = valid_recent_index(tenant)
            if recent is not None and monthly.intersection(recent.days):
                recent = None
            tenants.append((tenant, month_indexes, recent, monthly | set(recent.days if recent else ())))
        indexes = [index for _, tenant_indexes, _, _ in tenants for index in tenant_indexes]
        recents = [recent for _, _, recent, _ in tenants if recent is not None]
        if not indexes and not recents:
            return
        patterns, waiting = [], []
        for tenant, _, _, covered in tenants:
            tenant_patterns, tenant_waiting = _uncovered_day_globs(tenant, covered)
            patterns += tenant_patterns
            waiting += [(tenant.tenant_id, day) for day in tenant_waiting]
        self._watched_days = tuple(waiting)
        # One scan of every index file, month and recent alike (month=recent/ has the same
        # Hive keys; a second scan joined by a union measured ~0.7 ms more per lookup).
        # The month= folder is a partition too: dropped; `date` comes from the rows.
        files = ", ".join(f"'{_sql_literal(index.uri)}'" for index in [*indexes, *recents])
        parts = [
            "SELECT * EXCLUDE (month), CAST(timezone('UTC', interval_start) AS DATE) AS date "
            f"FROM read_parquet([{files}], hive_partitioning = true, hive_types = {{'tenant_id': VARCHAR, 'month': VARCHAR}})"
        ]
        if patterns:
            globs = ", ".join(f"'{_sql_literal(p)}'" for p in patterns)
            parts.append(f"SELECT * FROM read_parquet([{globs}], hive_partitioning = true, hive_types = {HIVE_TYPES}, union_by_name = true)")
        name = f"{_UNFILTERED}{INDEXED_TABLE}" if pending else INDEXED_TABLE
        self.connection.execute(f"CREATE OR REPLACE VIEW {name} AS\n" + "\nUNION ALL BY NAME\n".join(parts))


def _uncovered_day_globs(tenant: LakeLocation, covered: set[str]) -> tuple[list[str], list[str]]:
    """One tenant's globs of the ``alert_ips`` days its index does not cover (one per day,
    one per month where no day is covered), and the uncovered days with no file yet."""
    by_month: dict[str, list[str]] = {}
    for day in table_days(tenant, INDEXED_TABLE):
        by_month.setdefault(day[:7], []).append(day)
    patterns, waiting = [], []
    for month, days in sorted(by_month.items()):
        uncovered = [day for day in days if day not in covered]
        # A glob matching nothing is an error in DuckDB: days without a file yet are
        # left out and watched (_lake_state) until they get one.
        filled = [day for day in uncovered if day_has_data(tenant, INDEXED_TABLE, day)]
        waiting.extend(day for day in uncovered if day not in filled)
        if filled and len(filled) == len(days):
            patterns.append(tenant.uri(INDEXED_TABLE, f"{DATE_PREFIX}{month}-*", "*.parquet"))
        else:
            patterns.extend(tenant.uri(INDEXED_TABLE, f"{DATE_PREFIX}{day}", "*.parquet") for day in filled)
    return patterns, waiting


def _create_empty_view(connection, table: str, schema) -> None:
    import pyarrow as pa

    empty = schema.append(pa.field("date", pa.date32())).empty_table()
    connection.register(f"_empty_{table}", empty)
    connection.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _empty_{table}")


