"""The one timestamp parser: the service's ISO 8601 text as exact 100 ns ticks.

MDE writes up to 7 fractional digits (``2020-01-26T20:33:57.7220239Z``). Python's
``datetime`` keeps microseconds, so the listing cursor works in integer ticks since
the Unix epoch (exact), and the lake derives its microsecond values from the same ticks
(:func:`to_utc_datetime`, the 7th digit truncated, never rounded, so a time never moves
into the next interval).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MICROSECOND = 10

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# 'T' or ' ' between date and time: the service writes 'T', Airflow renders
# "{{ data_interval_start }}" as "2024-01-01 00:00:00+00:00".
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_timestamp(text: str, *, assume_utc: bool = False) -> int:
    """An ISO 8601 timestamp as 100 ns ticks since the Unix epoch (exact).

    More than 7 fractional digits is a ``ValueError``. So is a missing offset, unless
    ``assume_utc`` (the service writes only UTC; an interval bound without an offset
    would be a guess).
    """
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be a string, got {type(text).__name__}")
    match = _TIMESTAMP.match(text.strip())
    if not match or (match.group(8) is None and not assume_utc):
        raise ValueError(f"not an ISO 8601 timestamp with offset and at most 7 fractional digits: {text!r:.80}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"invalid timestamp {text!r:.80}: {exc}") from None
    ticks = _ticks_of(moment) + (int(fraction.ljust(7, "0")) if fraction else 0)
    if offset and offset.upper() != "Z":
        digits = offset.replace(":", "")
        sign = 1 if digits[0] == "+" else -1
        ticks -= sign * (int(digits[1:3]) * 3600 + int(digits[3:5]) * 60) * TICKS_PER_SECOND
    return ticks


def to_ticks(value: datetime | str) -> int:
    """An aware datetime (pendulum's too) or ISO text with offset as ticks."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp must be timezone-aware: {value!r}")
        return _ticks_of(value)
    return parse_timestamp(value)


def format_timestamp(ticks: int) -> str:
    """Ticks as an OData DateTimeOffset literal in UTC: 7 digits when there is a fraction.

    ``2020-01-26T20:33:57.7220239Z``; a whole second is written without fraction.
    """
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    base = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{fraction:07d}Z" if fraction else f"{base}Z"


def ticks_to_datetime(ticks: int) -> datetime:
    """A plain aware UTC datetime, the 7th digit truncated (the lake stores microseconds).

    A moment outside datetime's range (year 9999 with a negative offset) is a ValueError."""
    try:
        return _EPOCH + timedelta(microseconds=ticks // TICKS_PER_MICROSECOND)
    except OverflowError:
        raise ValueError(f"timestamp out of range: {ticks} ticks") from None


def to_utc_datetime(value: datetime | str) -> datetime:
    """The lake's view of a timestamp: a plain UTC ``datetime`` in microseconds.

    Text goes through :func:`parse_timestamp` (no offset means UTC: the service writes
    only UTC); an aware datetime is converted; a naive one is a ``ValueError`` because
    in Python it usually means local time by mistake.
    """
    if isinstance(value, datetime):
        return ticks_to_datetime(to_ticks(value))
    return ticks_to_datetime(parse_timestamp(value, assume_utc=True))


def _ticks_of(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * TICKS_PER_MICROSECOND
