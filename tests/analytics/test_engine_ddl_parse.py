"""Every statement of include/sql/ parses in its engine's SQL dialect (sqlglot).

Neither Trino nor Synapse runs here, so a maintained parser stands in for them: sqlglot's
"trino" and "tsql" dialects parse each statement the way a user runs it, ``${LAKE_ROOT}``
filled in as the file's header says, T-SQL cut at its ``GO`` batch separators, and the
one-time Synapse setup in the header comment with its placeholders filled. The Spark and
DuckDB files are parsed too (cheap; their engines also run them: test_spark_sql.py,
test_duckdb_views.py). test_engine_ddl.py checks what the statements say (columns,
types, partitions); this checks that they are well-formed statements of their dialect.

Two gaps of sqlglot are handled here, not hidden:
* it parses a statement it does not know into a generic ``exp.Command`` (a logged warning,
  even at ErrorLevel.RAISE), so a typo such as ``CREATE SCHEMAS`` would pass. A Command
  fails here, except the three statement kinds sqlglot only has as a Command
  (``ALLOWED_COMMANDS``), whose remainder is parsed on its own;
* its tsql dialect rejects Synapse's ``OPENROWSET(BULK '<path>', ...) WITH (<columns>)``
  (valid per Microsoft's OPENROWSET docs; declared out of scope by sqlglot's maintainers,
  tobymao/sqlglot#8151 / #8155: tsql covers SQL Server, not Azure Synapse). ``split_openrowset``
  cuts it out of the view and parses its two parts separately (see there).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError
from sqlglot.tokens import Token, TokenType

SQL = Path(__file__).resolve().parents[2] / "include" / "sql"

FILES = {  # file -> sqlglot dialect
    "trino/tables.sql": "trino",
    "trino/views.sql": "trino",
    "synapse/views.sql": "tsql",
    "spark/tables.sql": "spark",
    "spark/views.sql": "spark",
    "duckdb/views.sql": "duckdb",
}
# ${LAKE_ROOT} as each engine's header tells the user to fill it (Synapse has none: its
# views name the data source created in the setup).
LAKE_ROOTS = {
    "trino": "abfs://container@account.dfs.core.windows.net/prefix",
    "spark": "abfss://container@account.dfs.core.windows.net/prefix",
    "duckdb": "/data/lake",
}
# The placeholders of the Synapse setup comment.
SYNAPSE_PLACEHOLDERS = {"account": "mdelakeaccount", "container": "mde-lake", "prefix": "mde"}
# The name the Synapse views see in place of their OPENROWSET(...) WITH (...) source.
OPENROWSET_STAND_IN = "openrowset_result"


def rendered(name: str) -> str:
    text = (SQL / name).read_text(encoding="utf-8")
    engine = name.split("/")[0]
    if engine in LAKE_ROOTS:
        text = text.replace("${LAKE_ROOT}", LAKE_ROOTS[engine])
    assert "${" not in text, f"{name}: a placeholder left unfilled"
    return text


def tokens(sql: str, dialect: str) -> list[Token]:
    return Dialect.get_or_raise(dialect).tokenize(sql)


def batches(sql: str, dialect: str) -> list[str]:
    """T-SQL's client batches: GO alone on its line ends one (it is no T-SQL statement)."""
    if dialect != "tsql":
        return [sql]
    return [batch for batch in re.split(r"^[ \t]*GO[ \t]*$", sql, flags=re.M | re.I) if tokens(batch, dialect)]


def statement_count(sql: str, dialect: str) -> int:
    """What the text holds: runs of tokens between semicolons (comments are no tokens).

    The tokenizer is the parser's first stage, not the parser: a statement the parser
    merged into another or dropped still counts here.
    """
    count, in_statement = 0, False
    for token in tokens(sql, dialect):
        if token.token_type == TokenType.SEMICOLON:
            in_statement = False
        elif not in_statement:
            count, in_statement = count + 1, True
    return count


def matching_paren(toks: list[Token], open_index: int) -> int:
    assert toks[open_index].token_type == TokenType.L_PAREN
    depth = 0
    for index in range(open_index, len(toks)):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(toks[index].token_type, 0)
        if depth == 0:
            return index
    raise ParseError("unbalanced parentheses after OPENROWSET")


def split_openrowset(sql: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``sql`` with every ``OPENROWSET(<args>) [WITH (<columns>)]`` replaced by a table name,
    and the (args, columns) texts cut out.

    The rest of the view (its select list with ``r.filepath(n)``, the alias, the joins) is
    then parsed by sqlglot as usual; the arguments and the column list by
    ``check_openrowset``. Every character of the statement is parsed by one of them.
    """
    toks = tokens(sql, "tsql")
    kinds = [t.token_type for t in toks] + [None, None]  # None: past the end
    spans = []
    for index, token in enumerate(toks):
        if token.text.upper() == "OPENROWSET" and kinds[index + 1] == TokenType.L_PAREN:
            close = matching_paren(toks, index + 1)
            args = sql[toks[index + 1].end + 1 : toks[close].start]
            columns, end = None, toks[close].end
            if kinds[close + 1 : close + 3] == [TokenType.WITH, TokenType.L_PAREN]:
                with_close = matching_paren(toks, close + 2)
                columns, end = sql[toks[close + 2].end + 1 : toks[with_close].start], toks[with_close].end
            spans.append((token.start, end, args, columns))
    for start, end, _, _ in reversed(spans):
        sql = sql[:start] + OPENROWSET_STAND_IN + sql[end + 1 :]
    return sql, [(args, columns) for _, _, args, columns in spans]


def check_option_list(text: str, dialect: str) -> None:
    """``(NAME = 'value', ...)``: every item an assignment of a literal."""
    tree = sqlglot.parse_one(text, read=dialect, error_level=ErrorLevel.RAISE)
    items = tree.expressions if isinstance(tree, exp.Tuple) else [tree.this] if isinstance(tree, exp.Paren) else None
    assert items, f"{text}: (NAME = value, ...) expected"
    for item in items:
        assert isinstance(item, exp.EQ) and isinstance(item.this, exp.Column) and isinstance(item.expression, exp.Literal), (
            f"{item.sql(dialect)}: NAME = literal expected"
        )


def check_openrowset(args: str, columns: str | None) -> None:
    # BULK takes a path or a parenthesized list of paths (string literals), the options follow.
    bulk = re.fullmatch(r"\s*BULK\s+('[^']*'|\(\s*'[^']*'(?:\s*,\s*'[^']*')*\s*\))\s*,(?P<options>.+)", args, re.S | re.I)
    assert bulk, f"OPENROWSET({args}): BULK '<path>', <option> = <value>, ... expected"
    check_option_list(f"({bulk['options']})", "tsql")
    if columns is None:
        return
    # The WITH list has CREATE TABLE's column syntax (name type [COLLATE c]; the views use
    # neither of the other forms Synapse allows, a JSON path or a column ordinal).
    table = sqlglot.parse_one(f"CREATE TABLE openrowset_schema ({columns})", read="tsql", error_level=ErrorLevel.RAISE)
    assert isinstance(table, exp.Create) and not list(table.find_all(exp.Command)), columns
    definitions = table.this.expressions
    assert definitions, "OPENROWSET WITH () lists no column"
    for definition in definitions:
        assert isinstance(definition, exp.ColumnDef) and isinstance(definition.args.get("kind"), exp.DataType), (
            f"{definition.sql('tsql')}: <name> <type> expected"
        )
        for constraint in definition.args.get("constraints") or []:
            assert isinstance(constraint.args.get("kind"), exp.CollateColumnConstraint), (
                f"{definition.sql('tsql')}: only COLLATE may follow the type"
            )


def check_procedure_call(rest: str, dialect: str) -> None:
    """CALL's remainder: [catalog.schema.]procedure(name => value, ...)."""
    call = sqlglot.parse_one(rest, read=dialect, error_level=ErrorLevel.RAISE)
    function = call.expression if isinstance(call, exp.Dot) else call
    assert isinstance(function, exp.Anonymous), f"CALL {rest}: a procedure call expected"
    assert all(isinstance(arg, exp.Kwarg) for arg in function.expressions), f"CALL {rest}: name => value arguments expected"


def check_table_name(rest: str, dialect: str) -> None:
    table = exp.to_table(rest, dialect=dialect)
    assert table.sql(dialect) == rest, f"{rest}: a table name expected"


# Statements sqlglot has only as a Command: (dialect, the Command's text, check of the part
# the regex names "rest"). Anything else parsed into a Command fails.
ALLOWED_COMMANDS: list[tuple[str, re.Pattern[str], Callable[[str, str], None]]] = [
    # Trino's CALL (sync_partition_metadata): sqlglot's base tokenizer turns CALL into a
    # Command keyword in every dialect; there is no CALL node.
    ("trino", re.compile(r"CALL\s+(?P<rest>.+)", re.S), check_procedure_call),
    # Spark's MSCK REPAIR TABLE: the Hive/Spark tokenizer turns "MSCK REPAIR" into a Command.
    ("spark", re.compile(r"MSCK REPAIR\s+TABLE\s+(?P<rest>\S+)\s*", re.S), check_table_name),
    # Synapse's CREATE EXTERNAL DATA SOURCE (the setup in the views file's header): no node.
    ("tsql", re.compile(r"CREATE\s+EXTERNAL\s+DATA\s+SOURCE\s+\w+\s+WITH\s*(?P<rest>\(.*\))\s*", re.S | re.I), check_option_list),
]


def check_commands(tree: exp.Expression, dialect: str) -> None:
    for command in tree.find_all(exp.Command):
        text = f"{command.this} {command.text('expression').strip()}"
        for allowed_dialect, pattern, check in ALLOWED_COMMANDS:
            match = pattern.fullmatch(text) if allowed_dialect == dialect else None
            if match:
                check(match["rest"], dialect)
                break
        else:
            raise AssertionError(f"sqlglot ({dialect}) could only parse this as a generic Command: {text[:200]}")


def parse_batch(sql: str, dialect: str) -> list[exp.Expression]:
    """Every statement of one script (or T-SQL batch), parsed; fails on any error."""
    parsed_sql, rowsets = split_openrowset(sql) if dialect == "tsql" else (sql, [])
    for args, columns in rowsets:
        check_openrowset(args, columns)
    # A comment after the last ';' comes back as an exp.Semicolon: no statement.
    trees = [
        tree
        for tree in sqlglot.parse(parsed_sql, read=dialect, error_level=ErrorLevel.RAISE)
        if tree is not None and not isinstance(tree, exp.Semicolon)
    ]
    assert len(trees) == statement_count(sql, dialect), f"{len(trees)} statements parsed of {statement_count(sql, dialect)}"
    for tree in trees:
        check_commands(tree, dialect)
    return trees


def parse_file_text(sql: str, dialect: str) -> list[exp.Expression]:
    trees = []
    for batch in batches(sql, dialect):
        statements = parse_batch(batch, dialect)
        # T-SQL: CREATE VIEW must be the only statement of its batch.
        if dialect == "tsql" and any(isinstance(s, exp.Create) and s.kind == "VIEW" for s in statements):
            assert len(statements) == 1, f"{len(statements)} statements in one batch with a CREATE VIEW: GO missing"
        trees += statements
    return trees


def statement_containing(sql: str, dialect: str, needle: str) -> str:
    """The text of the first statement of ``sql`` that contains ``needle``."""
    for batch in batches(sql, dialect):
        start = 0
        ends = [t.start for t in tokens(batch, dialect) if t.token_type == TokenType.SEMICOLON]
        for end in [*ends, len(batch)]:
            if needle in batch[start:end]:
                return batch[start:end]
            start = end + 1
    raise AssertionError(f"no statement contains {needle!r}")


def synapse_setup() -> str:
    """The one-time statements in the header of synapse/views.sql, placeholders filled."""
    text = (SQL / "synapse" / "views.sql").read_text(encoding="utf-8")
    block = re.search(r"^-- Once per database.*?\n--\n((?:--   [^\n]*\n)+)", text, flags=re.M | re.S)
    assert block, "synapse/views.sql: the one-time setup block (after 'Once per database') not found"
    sql = "".join(line[len("--   ") :] + "\n" for line in block[1].splitlines())
    sql = re.sub(r"<(\w+)>", lambda m: SYNAPSE_PLACEHOLDERS[m[1]], sql)
    assert "<" not in sql and ">" not in sql, sql
    return sql


# --------------------------------------------------------------------------- the files


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_statement_parses_in_its_engine_dialect(name):
    dialect = FILES[name]
    trees = parse_file_text(rendered(name), dialect)
    assert trees, f"{name}: no statement"
    creates = [t for t in trees if isinstance(t, exp.Create)]
    if name.endswith("views.sql"):
        assert creates == trees and {t.kind for t in trees} == {"VIEW"}, f"{name}: views only"
    else:  # tables.sql: the tables (and Trino's schema), plus the partition-sync commands
        assert {t.kind for t in creates} <= {"TABLE", "SCHEMA"} and any(t.kind == "TABLE" for t in creates)


def test_synapse_one_time_setup_parses():
    trees = parse_file_text(synapse_setup(), "tsql")
    assert [type(t) for t in trees] == [exp.Create, exp.Use, exp.Command]
    assert trees[0].kind == "DATABASE" and trees[2].this == "CREATE"


# --------------------------------------------------------------------------- the checks can fail

# (file, text in one of its statements, the broken text): a copy of that statement with
# the change must fail, the statement as it is must pass.
BROKEN = [
    pytest.param("trino/tables.sql", "ip_version              tinyint,", "ip_version              tinyint", id="trino-missing-comma"),
    pytest.param("trino/tables.sql", "timestamp(6),", "timestamp(6,", id="trino-unclosed-type"),
    # sqlglot takes this typo for a Command; the Command check catches it.
    pytest.param("trino/tables.sql", "CREATE SCHEMA IF NOT EXISTS", "CREATE SCHEMAS IF NOT EXISTS", id="trino-command-fallback"),
    pytest.param("trino/tables.sql", "table_name => 'alerts',", "table_name => ,", id="trino-call-argument"),
    # (Not a doubled comma: sqlglot reads "a,, b" as "a, b" in every dialect.)
    pytest.param("trino/views.sql", "max(last_update_time) AS", "max(last_update_time AS", id="trino-view"),
    pytest.param("synapse/views.sql", "CAST(r.filepath(2) AS date)", "CAST(r.filepath(2) AS)", id="tsql-view-select"),
    pytest.param("synapse/views.sql", "DATA_SOURCE = 'mde_lake',", "DATA_SOURCE 'mde_lake',", id="tsql-openrowset-option"),
    pytest.param("synapse/views.sql", "BULK 'alerts/", "BULK alerts/'", id="tsql-openrowset-bulk"),
    pytest.param("synapse/views.sql", "ip_version              smallint,", "ip_version              ,", id="tsql-openrowset-with-type"),
    pytest.param("synapse/views.sql", "bigint,", "bigint NOT,", id="tsql-openrowset-with-constraint"),
    pytest.param("synapse/views.sql", "count(DISTINCT CASE WHEN", "count(DISTINCT CASE", id="tsql-case"),
    pytest.param("spark/tables.sql", "USING PARQUET", "USING PARQUET PARQUET", id="spark-table"),
    pytest.param("spark/tables.sql", "MSCK REPAIR TABLE alerts", "MSCK REPAIR TABLE alerts alert_ips", id="spark-msck"),
    pytest.param("duckdb/views.sql", "QUALIFY row_number() OVER (", "QUALIFY row_number() OVER ((", id="duckdb-view"),
]


@pytest.mark.parametrize("name, good, bad", BROKEN)
def test_a_broken_statement_fails(name, good, bad):
    dialect = FILES[name]
    statement = statement_containing(rendered(name), dialect, good)
    parse_file_text(statement, dialect)  # the real statement passes
    with pytest.raises((ParseError, AssertionError)):
        parse_file_text(statement.replace(good, bad, 1), dialect)


def test_a_broken_synapse_setup_fails():
    setup = synapse_setup()
    assert "LOCATION = '" in setup
    with pytest.raises(AssertionError):
        parse_file_text(setup.replace("LOCATION = '", "LOCATION '", 1), "tsql")


def test_a_missing_go_between_two_views_fails():
    text = rendered("synapse/views.sql")
    merged = text.replace(") AS r;\nGO\n", ") AS r;\n", 1)
    assert merged != text
    with pytest.raises(AssertionError, match="GO missing"):
        parse_file_text(merged, "tsql")


def test_a_dropped_statement_is_counted():
    """The count check sees what the parser returns: a statement missing from it fails."""
    sql = "CREATE OR REPLACE VIEW hive.mde.a AS SELECT 1;\nCREATE OR REPLACE VIEW hive.mde.b AS SELECT 2;"
    assert statement_count(sql, "trino") == 2 == len(parse_batch(sql, "trino"))
    assert statement_count(sql + "  -- a comment, no statement", "trino") == 2
