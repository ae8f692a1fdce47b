"""Timestamps as integer 100-ns ticks since the Unix epoch.

The service writes up to 7 fractional digits (.NET ticks); keeping integers makes
filter comparisons exact at the 7th digit, which float seconds cannot do.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

TICKS_PER_SECOND = 10_000_000

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|z|[+-]\d{2}:\d{2})$"
)


def now_ticks() -> int:
    return time.time_ns() // 100


def parse_iso(text: str) -> int:
    """Parse an ISO 8601 / OData DateTimeOffset literal into ticks. ValueError if invalid."""
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 date-time with offset: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if fraction and len(fraction) > 7:
        raise ValueError(f"more than 7 fractional digits: {text!r}")
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
        tzinfo=timezone.utc,
    )
    ticks = _ticks_of(moment)
    if fraction:
        ticks += int(fraction.ljust(7, "0"))
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        ticks -= sign * (hours * 3600 + minutes * 60) * TICKS_PER_SECOND
    return ticks


def parse_cli_time(text: str) -> int:
    """--start/--end: ISO 8601; without an offset it means UTC (as datetime.isoformat())."""
    try:
        return parse_iso(text)
    except ValueError:
        return parse_iso(text.strip() + "Z")


def _ticks_of(moment: datetime) -> int:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    delta = moment - epoch
    return (delta.days * 86400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def format_ticks(ticks: int, digits: int = 7) -> str:
    """ISO string with `digits` fractional digits (0 = none), always UTC 'Z'."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if digits <= 0:
        return base + "Z"
    return f"{base}.{f'{fraction:07d}'[:digits]}Z"


def format_timespan(seconds: float) -> str:
    """.NET TimeSpan text as in the service's 429 message: 3600 -> '01:00:00'."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    fraction = seconds - whole
    if fraction > 0:
        text += f".{int(round(fraction * TICKS_PER_SECOND)):07d}"
    return text
