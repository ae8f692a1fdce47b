"""Which part of the address space an IP is in: the ``ip_scope`` column of ``alert_ips``.

Analysts leave internal addresses out of almost every IP question; this is the one
definition, computed when the rows are built, so no engine re-derives it in SQL.

An explicit ordered rule list, first match wins (the standard library's flags overlap:
``192.0.2.1`` is both ``is_private`` and documentation, ``ff0e::1`` both ``is_global``
and multicast):

1. an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is classified as its IPv4 address,
   as the fetch step stores it (api/ip_addresses.py): it is how a dual-stack socket
   reports an IPv4 peer. No other embedding is unwrapped: NAT64 ``64:ff9b::/96``,
   6to4 and the deprecated IPv4-compatible ``::a.b.c.d`` are IPv6 addresses like others.
2. ``loopback``       127.0.0.0/8, ::1
3. ``link_local``     169.254.0.0/16, fe80::/10
4. ``multicast``      224.0.0.0/4, ff00::/8 (globally scoped groups too)
5. ``shared``         100.64.0.0/10 (carrier-grade NAT, RFC 6598)
6. ``documentation``  192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32,
                      3fff::/20 (RFC 9637)
7. ``private``        10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 (RFC 1918, ULA)
8. ``global``         ``ipaddress``' ``is_global``, except IETF-reserved blocks
                      (``is_reserved``: 240.0.0.0/4, ::/8 ...) and IPv6 site-local fec0::/10
9. ``reserved``       everything else: unspecified (0.0.0.0, ::), 0.0.0.0/8, 240.0.0.0/4
                      and 255.255.255.255, benchmarking 198.18.0.0/15, IETF protocol
                      assignments 192.0.0.0/24, 2001::/23, discard 100::/64, NAT64,
                      site-local fec0::/10, ...

Rules 2-7 are written out (not the flags) so the order and the ranges are visible and do
not move with Python releases; only rule 8 follows the running Python's special-purpose
list (a few IETF ranges moved between patch releases; the lake keeps what its writer
computed).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

GLOBAL = "global"
PRIVATE = "private"
LOOPBACK = "loopback"
LINK_LOCAL = "link_local"
SHARED = "shared"
MULTICAST = "multicast"
DOCUMENTATION = "documentation"
RESERVED = "reserved"
IP_SCOPES = (GLOBAL, PRIVATE, LOOPBACK, LINK_LOCAL, SHARED, MULTICAST, DOCUMENTATION, RESERVED)


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Rules 2-7 of the module's docstring, in order; an address is never in a network of the
# other version (``in`` is then False).
NETWORK_RULES = (
    (LOOPBACK, _networks("127.0.0.0/8", "::1/128")),
    (LINK_LOCAL, _networks("169.254.0.0/16", "fe80::/10")),
    (MULTICAST, _networks("224.0.0.0/4", "ff00::/8")),
    (SHARED, _networks("100.64.0.0/10")),
    (DOCUMENTATION, _networks("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")),
    (PRIVATE, _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
)


@lru_cache(maxsize=65536)  # the same internal hosts recur in most alerts
def ip_scope(ip: str) -> str:
    """The scope of one IP address (text, any valid spelling); ``ValueError`` if it is none."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for scope, networks in NETWORK_RULES:
        if any(address in network for network in networks):
            return scope
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    if address.is_global and not address.is_reserved and not site_local:
        return GLOBAL
    return RESERVED
