"""Which ledger a connection's extra ``rate_limit_ledger`` names, and opening it.

``sqlite`` (the default): one file per host, every task of the host shares it.
``redis://[:password@]host:port/db`` or ``rediss://...``: one Redis shared by every
host, so all workers together get exactly the app's budget and every caller sees a
429's Retry-After (api/redis_ledger.py).
"""

from __future__ import annotations

import os
import re

from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, Ledger, SqliteLedger, default_ledger_dir
from mde_pipeline.api.redis_ledger import RedisLedger
from mde_pipeline.api.redis_url import is_redis_url, parse_redis_url

SQLITE = "sqlite"
LEDGER_CHOICES = "'sqlite' or a redis:// / rediss:// URL"


def check_ledger_spec(value: str | None) -> str:
    """The normalised ``rate_limit_ledger`` value; ValueError for anything else (never
    echoing a password: api/redis_url.py)."""
    text = (value or SQLITE).strip()
    if text.lower() == SQLITE:
        return SQLITE
    if is_redis_url(text):
        parse_redis_url(text)  # names no host, bad port: ValueError naming host and port only
        return text
    # A mistyped URL may hold a password: only a plain word is echoed.
    shown = repr(text) if re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", text) else "a value that is neither"
    raise ValueError(f"rate_limit_ledger must be {LEDGER_CHOICES}, got {shown}")


def safe_ledger_display(spec: str) -> str:
    """The spec without user info or query, for messages, logs and the status page."""
    if not is_redis_url(spec):
        return spec
    try:
        return parse_redis_url(spec).display
    except ValueError:
        return spec.split("://", 1)[0].lower() + "://..."


def ledger_secrets(spec: str) -> tuple[str, ...]:
    """Every form of the password in a Redis URL (secrets to keep out of logs and messages)."""
    if not is_redis_url(spec):
        return ()
    try:
        return parse_redis_url(spec).secrets()
    except ValueError:  # unparseable: the whole text after the scheme is the secret
        return (spec.split("://", 1)[1],)


def open_ledger(spec: str, directory: str | None = None, *, ca_file: str | None = None) -> Ledger:
    """The ledger of ``spec`` (see :func:`check_ledger_spec`); ``directory`` is SQLite's folder."""
    if is_redis_url(spec):
        return RedisLedger(spec, ca_file=ca_file)
    return SqliteLedger(os.path.join(default_ledger_dir(directory), LEDGER_FILE_NAME))
