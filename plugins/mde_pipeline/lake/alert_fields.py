"""Typed reading of one alert's JSON that survives any one bad field.

MDE's fields are data from a remote service: a type changes (``incidentId: 12.5``,
``severity: 3``, ``mitreTechniques: "T1059"``, a date-only timestamp) and new fields
appear. A field that does not fit its column becomes null and the problem is recorded
(``alerts.field_problems``); the whole alert is kept as JSON (``alerts.raw``), so
nothing is lost and a new field is queryable at once. Only what identifies the row
(``id``, ``lastUpdateTime``) must parse: the listing already checked both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Callable

from mde_pipeline.lake.schema import LakeSchemaError, parse_timestamp

MAX_PROBLEM_CHARS = 200  # per problem: a hostile value cannot bloat the row


def string(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise LakeSchemaError(f"{field}: expected a string, got {type(value).__name__}")


def integer(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise LakeSchemaError(f"{field}: expected an integer, got a boolean")
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        return int(value)
    raise LakeSchemaError(f"{field}: expected an integer, got {value!r:.80}")


def string_list(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise LakeSchemaError(f"{field}: expected a list, got {type(value).__name__}")
    return [string(item, f"{field}[]") for item in value]


def comments(value: Any, field: str = "comments") -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise LakeSchemaError(f"{field}: expected a list, got {type(value).__name__}")
    parsed = []
    for item in value:
        if not isinstance(item, Mapping):
            raise LakeSchemaError(f"{field}[]: expected an object, got {type(item).__name__}")
        parsed.append(
            {
                "comment": string(item.get("comment"), f"{field}[].comment"),
                "created_by": string(item.get("createdBy"), f"{field}[].createdBy"),
                "created_time": parse_timestamp(item.get("createdTime"), field=f"{field}[].createdTime"),
            }
        )
    return parsed


def timestamp(value: Any, field: str) -> datetime | None:
    return parse_timestamp(value, field=field)


def raw_json(alert: Mapping[str, Any]) -> str:
    """The alert as listed, as compact JSON with sorted keys (``alerts.raw``)."""
    return json.dumps(alert, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class AlertFields:
    """One alert's fields, read leniently: ``read(...)`` returns None for a value that
    does not fit and records why in :attr:`problems`."""

    def __init__(self, alert: Mapping[str, Any]) -> None:
        self.alert = alert
        self.problems: list[str] = []

    def read(self, parse: Callable[[Any, str], Any], source: str, value: Any = None, *, given: bool = False) -> Any:
        """``parse(self.alert[source])`` (or ``parse(value)`` when ``given``); None on a problem."""
        try:
            return parse(value if given else self.alert.get(source), source)
        except LakeSchemaError as exc:
            self.problems.append(str(exc)[:MAX_PROBLEM_CHARS])
            return None

    def related_user(self) -> Mapping[str, Any]:
        value = self.alert.get("relatedUser")
        if value is None or isinstance(value, Mapping):
            return value or {}
        self.problems.append(f"relatedUser: expected an object, got {type(value).__name__}")
        return {}
