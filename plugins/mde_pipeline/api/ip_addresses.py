"""Canonical IP addresses from the strings ``GET /api/alerts/{id}/ips`` returns.

One address has one spelling in the lake, so that ``2001:DB8::0001`` and ``2001:db8::1``
are one row and SQL joins on ``ip`` work. The canonical form is the standard library's
``ipaddress`` ``compressed`` text (RFC 5952 for IPv6: lower case, zeros compressed).

Decisions (each covered by tests/unit/test_ip_addresses.py):

* Surrounding whitespace is stripped; whitespace inside is invalid.
* IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is the IPv4 address ``192.0.2.1``, version 4:
  it is how a dual-stack socket reports an IPv4 peer, and analysts join on the IPv4
  text. (The deprecated IPv4-compatible form ``::192.0.2.1`` stays IPv6, ``::c000:201``.)
* An IPv6 zone id (``fe80::1%eth0``) names an interface on the machine that saw the
  address; it means nothing off that machine and SQL engines' inet types reject it. The
  address is kept without it (``fe80::1``); the zone is dropped, not the address.
* IPv4 with a leading zero in an octet (``010.1.1.1``) is ambiguous (octal 8 or decimal
  10, depending on the parser that produced it) and is reported as invalid, not guessed.
* Networks (``10.0.0.0/8``), ports, brackets, empty strings and non-strings are invalid.

Invalid values are never dropped silently: they come back in ``IpSet.invalid`` with the
reason, the caller logs them and stores them in ``invalid_ip_values``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

_LEADING_ZERO_OCTET = re.compile(r"(?:^|\.)0\d")
_IPV4_TAIL = re.compile(r"(\d+\.\d+\.\d+\.\d+)$")


@dataclass(frozen=True, order=True)
class CanonicalIp:
    version: int  # 4 or 6 (first, so sorting groups versions)
    packed: int  # the address as an integer, for a numeric sort
    address: str  # the canonical text

    def as_pair(self) -> list:
        return [self.address, self.version]


@dataclass(frozen=True)
class InvalidIp:
    value: object  # exactly what the service sent
    reason: str


@dataclass(frozen=True)
class IpSet:
    ips: tuple[CanonicalIp, ...]  # distinct, sorted by (version, numeric value)
    invalid: tuple[InvalidIp, ...]  # distinct values, in the order first seen


class InvalidIpError(ValueError):
    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value!r} is not an IP address: {reason}")


def canonical_ip(value: object) -> CanonicalIp:
    """The canonical form of one IP string; ``InvalidIpError`` with a reason otherwise."""
    if not isinstance(value, str):
        raise InvalidIpError(value, f"not a string ({type(value).__name__})")
    text = value.strip()
    if not text:
        raise InvalidIpError(value, "empty")
    if "/" in text:
        raise InvalidIpError(value, "a network (CIDR prefix), not an address")
    address_part = text.split("%", 1)[0]
    # Only the dotted-quad part can hold octets; IPv6 hex groups may start with 0.
    if ":" in address_part:
        tail = _IPV4_TAIL.search(address_part)
        ipv4_part = tail.group(1) if tail else ""
    else:
        ipv4_part = address_part
    if _LEADING_ZERO_OCTET.search(ipv4_part):
        raise InvalidIpError(value, "leading zero in an IPv4 octet (ambiguous: octal or decimal)")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidIpError(value, "not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.scope_id is not None:
            address = ipaddress.IPv6Address(int(address))  # drop the zone id
    return CanonicalIp(address.version, int(address), address.compressed)


def canonical_ips(values: Iterable[object]) -> IpSet:
    """Canonicalise and deduplicate one alert's IP strings; invalid ones set aside."""
    distinct: dict[tuple[int, int], CanonicalIp] = {}
    invalid: dict[str, InvalidIp] = {}
    for value in values:
        try:
            ip = canonical_ip(value)
        except InvalidIpError as exc:
            invalid.setdefault(repr(value), InvalidIp(value, exc.reason))
            continue
        distinct.setdefault((ip.version, ip.packed), ip)
    return IpSet(tuple(sorted(distinct.values())), tuple(invalid.values()))
