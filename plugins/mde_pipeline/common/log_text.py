"""Strings from the service as they may appear in a log line or an error message.

An alert id, an IP value or a field comes from the service (or whoever answers in its
place): it can hold newlines and terminal escapes that forge log lines, or megabytes.
:func:`for_log` is its ``repr()`` (every control or non-printable character escaped,
quoted), cut to ``limit`` characters with the length it had.
"""

from __future__ import annotations

MAX_LOGGED_CHARS = 200


def for_log(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``repr(value)``, at most ``limit`` characters (plus a note of what was cut)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...<{len(text) - limit} more chars>"


def error_text(exc: BaseException, limit: int = 1000) -> str:
    """How a task and the connection test show an error: its class and its message (as
    :func:`for_log` writes it). The messages of this package's errors hold no secrets."""
    return f"{type(exc).__name__}: {for_log(str(exc), limit)}"
