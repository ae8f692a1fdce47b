"""One tenant, one spelling: the canonical tenant id is the lower-case directory GUID.

Entra ID takes a tenant as its GUID in any letter case or as a verified domain name
(``contoso.onmicrosoft.com``); the access token's ``tid`` claim always holds the GUID in
lower case. The lake partition, the ``tenant_id`` column, the fetch cache and the status
page use that canonical form, so one tenant never becomes two partitions.

A GUID (or any id without a dot) is canonicalised here, without a network call. A
domain name (it has a dot; a GUID never does) needs a token: :func:`tid_claim` reads the
GUID from one (api/client.py asks for it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def is_guid(text: object) -> bool:
    return isinstance(text, str) and GUID.fullmatch(text.strip()) is not None


def is_domain_name(text: str) -> bool:
    """A verified domain (``contoso.onmicrosoft.com``): the only tenant spelling with a dot."""
    return "." in text


def offline_tenant_id(text: str) -> str | None:
    """The canonical id of ``text`` when it is known without a network call (a GUID in any
    case -> lower case), or None for a domain name (resolved from a token's ``tid``)."""
    text = text.strip()
    return None if is_domain_name(text) else text.lower()


def tid_claim(access_token: str) -> str:
    """The ``tid`` claim (lower-case GUID) of a JWT access token.

    The payload is decoded without verifying the signature: the token came over TLS from
    the authority, and only the API it is meant for verifies it. Errors never quote the
    token.
    """
    parts = access_token.split(".") if isinstance(access_token, str) else []
    if len(parts) != 3:
        raise ValueError("the access token is not a JWT (three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError("the access token's payload is not base64url JSON") from None
    tid = claims.get("tid") if isinstance(claims, dict) else None
    if not is_guid(tid):
        raise ValueError("the access token carries no tenant GUID in its tid claim")
    return tid.strip().lower()
