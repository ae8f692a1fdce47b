"""Keep secrets out of messages: tokens, JWTs, storage keys and known secret values.

Known secrets are registered once, where they are read (:func:`remember_secrets`: the
connection config when it is parsed, in every process: task, status page, CLI), so every
:func:`redact` of the process strips them, not only the calls that were handed them.
"""

from __future__ import annotations

import re
import threading
from typing import Iterable

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_SECRET_VALUE = re.compile(r"(?i)(AccountKey=|SharedAccessSignature=|sig=|client_secret=|password=)[^;&\s'\"]+")
# Shorter values would blank out ordinary words; a remembered secret applies to every
# message of the process, so it must be longer still (no real secret is this short).
MIN_SECRET_LENGTH = 4
MIN_REMEMBERED_LENGTH = 8

_known: frozenset[str] = frozenset()
_known_lock = threading.Lock()


def remember_secrets(secrets: Iterable[str | None]) -> None:
    """Secret values every later :func:`redact` of this process strips."""
    global _known
    new = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_REMEMBERED_LENGTH}
    if new - _known:
        with _known_lock:
            _known = _known | new


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given or remembered secret values, bearer tokens, JWTs,
    account keys and SAS signatures."""
    if not text:
        return text
    values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} | _known
    for secret in sorted(values, key=len, reverse=True):  # longest first: one may hold another
        text = text.replace(secret, "***")
    text = _BEARER.sub("Bearer ***", text)
    text = _JWT.sub("***", text)
    return _SECRET_VALUE.sub(r"\1***", text)
