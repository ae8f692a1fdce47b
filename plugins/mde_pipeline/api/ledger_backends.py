"""Which ledger a connection's extra ``rate_limit_ledger`` names, and opening it.

``sqlite`` (the default): one file per host, every task of the host shares it.
``redis://[:password@]host:port/db`` or ``rediss://...``: one Redis shared by every
host, so all workers together get exactly the app's budget and every caller sees a
429's Retry-After (api/redis_ledger.py).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, Ledger, SqliteLedger, default_ledger_dir
from mde_pipeline.api.redis_ledger import RedisLedger, is_redis_url

SQLITE = "sqlite"
LEDGER_CHOICES = "'sqlite' or a redis:// / rediss:// URL"


def check_ledger_spec(value: str | None) -> str:
    """The normalised ``rate_limit_ledger`` value; ValueError for anything else."""
    text = (value or SQLITE).strip()
    if text.lower() == SQLITE:
        return SQLITE
    if is_redis_url(text):
        parts = urlsplit(text)
        if not parts.hostname:
            raise ValueError(f"rate_limit_ledger {safe_ledger_display(text)!r} names no Redis host")
        return text
    raise ValueError(f"rate_limit_ledger must be {LEDGER_CHOICES}, got {safe_ledger_display(text)!r}")


def safe_ledger_display(spec: str) -> str:
    """The spec without a password, for messages and logs."""
    if not is_redis_url(spec):
        return spec
    parts = urlsplit(spec)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ("***@" if parts.password else "")
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def ledger_password(spec: str) -> str | None:
    """The password in a Redis URL (a secret to keep out of logs and messages)."""
    return urlsplit(spec).password if is_redis_url(spec) else None


def open_ledger(spec: str, directory: str | None = None, *, ca_file: str | None = None) -> Ledger:
    """The ledger of ``spec`` (see :func:`check_ledger_spec`); ``directory`` is SQLite's folder."""
    if is_redis_url(spec):
        return RedisLedger(spec, ca_file=ca_file)
    return SqliteLedger(os.path.join(default_ledger_dir(directory), LEDGER_FILE_NAME))
