"""The OData subset GET /api/alerts understands: $filter, $orderby, $top, $skip, $expand.

Datetime literals are compared as integer 100-ns ticks, so `ge`/`gt` at the 7th
fractional digit behave exactly like the service's .NET DateTimeOffset comparison.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .timeutil import parse_iso

MAX_TOP = 10000

DATETIME_FIELDS = {"lastupdatetime": "lastUpdateTime", "alertcreationtime": "alertCreationTime",
                   "lasteventtime": "lastEventTime", "firsteventtime": "firstEventTime",
                   "resolvedtime": "resolvedTime"}
INT_FIELDS = {"incidentid": "incidentId", "investigationid": "investigationId"}
STRING_FIELDS = {"id": "id", "status": "status", "severity": "severity", "category": "category",
                 "detectionsource": "detectionSource", "assignedto": "assignedTo",
                 "classification": "classification", "determination": "determination",
                 "machineid": "machineId"}
ORDERABLE = {**DATETIME_FIELDS, **INT_FIELDS, "id": "id", "severity": "severity",
             "status": "status"}
OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le")
SUPPORTED_OPTIONS = ("$filter", "$top", "$skip", "$orderby", "$expand")


class ODataError(ValueError):
    """The query is not valid: the service answers 400."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:\d{2}))
  | (?P<number>-?\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)


def _tokens(text: str):
    position = 0
    out = []
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise ODataError(f"Syntax error at position {position} in $filter '{text}'.")
        position = match.end()
        kind = match.lastgroup
        if kind != "ws":
            out.append((kind, match.group()))
    return out


@dataclass
class Comparison:
    field: str       # service field name
    op: str
    value: object    # ticks for datetime fields, int, str or None

    def matches(self, record) -> bool:
        actual = record(self.field)
        expected = self.value
        if self.op == "eq":
            return actual == expected
        if self.op == "ne":
            return actual != expected
        if actual is None or expected is None:
            return False
        if self.op == "gt":
            return actual > expected
        if self.op == "ge":
            return actual >= expected
        if self.op == "lt":
            return actual < expected
        return actual <= expected


@dataclass
class Junction:
    op: str                                    # and | or
    parts: list = field(default_factory=list)

    def matches(self, record) -> bool:
        if self.op == "and":
            return all(p.matches(record) for p in self.parts)
        return any(p.matches(record) for p in self.parts)


@dataclass
class Negation:
    part: object

    def matches(self, record) -> bool:
        return not self.part.matches(record)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else (None, None)

    def take(self):
        token = self.peek()
        if token[0] is None:
            raise ODataError(f"Unexpected end of $filter '{self.text}'.")
        self.position += 1
        return token

    def keyword(self, word: str) -> bool:
        kind, text = self.peek()
        if kind == "word" and text.lower() == word:
            self.position += 1
            return True
        return False

    def parse(self):
        expression = self.parse_or()
        if self.position != len(self.tokens):
            raise ODataError(f"Syntax error at '{self.peek()[1]}' in $filter '{self.text}'.")
        return expression

    def parse_or(self):
        parts = [self.parse_and()]
        while self.keyword("or"):
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Junction("or", parts)

    def parse_and(self):
        parts = [self.parse_unary()]
        while self.keyword("and"):
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else Junction("and", parts)

    def parse_unary(self):
        if self.keyword("not"):
            return Negation(self.parse_unary())
        kind, _ = self.peek()
        if kind == "lparen":
            self.take()
            inner = self.parse_or()
            if self.take()[0] != "rparen":
                raise ODataError(f"Missing ')' in $filter '{self.text}'.")
            return inner
        return self.parse_comparison()

    def parse_comparison(self):
        kind, name = self.take()
        if kind != "word":
            raise ODataError(f"Expected a property name, found '{name}' in $filter '{self.text}'.")
        key = name.lower()
        op_kind, op = self.take()
        if op_kind != "word" or op.lower() not in OPERATORS:
            raise ODataError(f"Expected an operator after '{name}', found '{op}'.")
        op = op.lower()
        literal_kind, literal = self.take()
        if key in DATETIME_FIELDS:
            text = literal[1:-1] if literal_kind == "string" else literal
            if literal_kind == "word" and literal == "null":
                value = None
            else:
                try:
                    value = parse_iso(text)
                except ValueError as exc:
                    raise ODataError(
                        f"The DateTimeOffset text '{literal}' should be in format "
                        f"'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is "
                        f"within valid range.") from exc
            return Comparison(DATETIME_FIELDS[key], op, value)
        if key in INT_FIELDS:
            if literal_kind == "word" and literal == "null":
                return Comparison(INT_FIELDS[key], op, None)
            if literal_kind != "number":
                raise ODataError(f"'{literal}' is not a valid Int64 for '{name}'.")
            return Comparison(INT_FIELDS[key], op, int(literal))
        if key in STRING_FIELDS:
            if literal_kind == "word" and literal == "null":
                return Comparison(STRING_FIELDS[key], op, None)
            if literal_kind != "string":
                raise ODataError(f"'{literal}' is not a string literal for '{name}'.")
            return Comparison(STRING_FIELDS[key], op, literal[1:-1].replace("''", "'"))
        raise ODataError(f"Could not find a property named '{name}' on type "
                         f"'Microsoft.WindowsDefenderATP.ServiceModels.Alert' usable in $filter.")


def parse_filter(text: str):
    return _Parser(text).parse()


def update_time_bounds(expression):
    """(low, low_inclusive, high, high_inclusive) on lastUpdateTime implied by a conjunction.

    Used only to narrow the candidates; the full expression is still evaluated on each.
    """
    low = high = None
    low_inc = high_inc = True
    parts = expression.parts if isinstance(expression, Junction) and expression.op == "and" \
        else [expression]
    for part in parts:
        if not isinstance(part, Comparison) or part.field != "lastUpdateTime" or part.value is None:
            continue
        value = part.value
        if part.op in ("gt", "ge", "eq"):
            inclusive = part.op != "gt"
            if low is None or value > low or (value == low and not inclusive):
                low, low_inc = value, inclusive
        if part.op in ("lt", "le", "eq"):
            inclusive = part.op != "lt"
            if high is None or value < high or (value == high and not inclusive):
                high, high_inc = value, inclusive
    return low, low_inc, high, high_inc


@dataclass
class Query:
    filter: object = None
    top: int | None = None
    skip: int = 0
    orderby: list = field(default_factory=list)   # [(field, descending)]
    expand_evidence: bool = False


def _integer(name: str, text: str) -> int:
    if not re.fullmatch(r"-?\d+", text.strip()):
        raise ODataError(f"Invalid value '{text}' for {name} query option found. "
                         f"The {name} query option requires a non-negative integer value.")
    value = int(text)
    if value < 0:
        raise ODataError(f"Invalid value '{text}' for {name} query option found. "
                         f"The {name} query option requires a non-negative integer value.")
    return value


def parse_query(pairs: list[tuple[str, str]]) -> Query:
    """pairs: decoded query parameters in order (urllib.parse.parse_qsl)."""
    seen = {}
    for name, value in pairs:
        if not name.startswith("$"):
            continue  # non-OData parameters are ignored, as ASP.NET does
        key = name.lower()
        if key not in SUPPORTED_OPTIONS:
            raise ODataError(f"The query parameter '{name}' is not supported.")
        if key in seen:
            raise ODataError(f"Query option '{name}' was specified more than once, "
                             f"but it must be specified at most once.")
        seen[key] = value
    query = Query()
    if "$filter" in seen:
        query.filter = parse_filter(seen["$filter"])
    if "$top" in seen:
        query.top = _integer("$top", seen["$top"])
        if query.top > MAX_TOP:
            raise ODataError(f"The limit of '{MAX_TOP}' for Top query has been exceeded. "
                             f"The value from the incoming request is '{query.top}'.")
    if "$skip" in seen:
        query.skip = _integer("$skip", seen["$skip"])
    if "$orderby" in seen:
        for clause in seen["$orderby"].split(","):
            words = clause.split()
            if not words or len(words) > 2 or words[0].lower() not in ORDERABLE:
                raise ODataError(f"Invalid $orderby clause '{clause.strip()}'.")
            direction = words[1].lower() if len(words) == 2 else "asc"
            if direction not in ("asc", "desc"):
                raise ODataError(f"Invalid $orderby direction '{words[1]}'.")
            query.orderby.append((ORDERABLE[words[0].lower()], direction == "desc"))
    if "$expand" in seen:
        targets = [t.strip().lower() for t in seen["$expand"].split(",") if t.strip()]
        if targets != ["evidence"]:
            raise ODataError(f"Could not find a property named '{seen['$expand']}' to expand; "
                             f"only 'evidence' is supported.")
        query.expand_evidence = True
    return query
