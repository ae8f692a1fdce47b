"""Keep secrets out of messages: tokens, JWTs, storage keys and known secret values."""

from __future__ import annotations

import re
from typing import Iterable

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_SECRET_VALUE = re.compile(r"(?i)(AccountKey=|SharedAccessSignature=|sig=|client_secret=|password=)[^;&\s'\"]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secret values, bearer tokens, JWTs, account keys and SAS signatures."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub("Bearer ***", text)
    text = _JWT.sub("***", text)
    return _SECRET_VALUE.sub(r"\1***", text)
