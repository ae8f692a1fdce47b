"""common/ip_scope.py: every scope with IPv4 and IPv6 examples, the precedence where the
standard library's flags overlap, range edges, IPv4-mapped addresses."""

from __future__ import annotations

import ipaddress

import pytest

from mde_pipeline.common.ip_scope import (
    DOCUMENTATION, GLOBAL, IP_SCOPES, LINK_LOCAL, LOOPBACK, MULTICAST, PRIVATE, RESERVED, SHARED, ip_scope,
)

EXAMPLES = {
    GLOBAL: ["8.8.8.8", "1.1.1.1", "223.255.255.255", "2606:4700::1111", "2a00:1450:4001::200e", "2002::1"],
    PRIVATE: ["10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12:3456::1"],
    LOOPBACK: ["127.0.0.1", "127.255.255.254", "::1"],
    LINK_LOCAL: ["169.254.0.1", "169.254.255.255", "fe80::1", "febf::1"],
    SHARED: ["100.64.0.0", "100.64.0.1", "100.127.255.255"],
    MULTICAST: ["224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1"],
    DOCUMENTATION: ["192.0.2.1", "198.51.100.7", "203.0.113.255", "2001:db8::1", "2001:db8:ffff::1", "3fff::1"],
    RESERVED: [
        "0.0.0.0", "0.1.2.3", "240.0.0.1", "255.255.255.255", "198.18.0.1", "198.19.255.255", "192.0.0.1",
        "::", "fec0::1", "100::1", "2001::1", "64:ff9b::808:808", "::102:304",
    ],
}  # fmt: skip


def test_the_examples_cover_every_scope_with_both_versions():
    assert set(EXAMPLES) == set(IP_SCOPES)
    for scope, ips in EXAMPLES.items():
        versions = {ipaddress.ip_address(ip).version for ip in ips}
        assert versions == ({4} if scope == SHARED else {4, 6}), scope  # CGNAT has no IPv6 range


@pytest.mark.parametrize("scope, ip", [(scope, ip) for scope, ips in EXAMPLES.items() for ip in ips])
def test_each_address_gets_its_scope(scope, ip):
    assert ip_scope(ip) == scope


@pytest.mark.parametrize("ip, flags, scope", [
    ("192.0.2.1", "is_private", DOCUMENTATION),   # documentation before the stdlib's private
    ("2001:db8::1", "is_private", DOCUMENTATION),
    ("ff0e::1", "is_global", MULTICAST),          # multicast before the stdlib's global
    ("224.0.1.1", "is_global", MULTICAST),
    ("fec0::1", "is_global", RESERVED),           # site-local: stdlib says global
    ("3fff::1", "is_global", DOCUMENTATION),      # RFC 9637, newer than Python 3.11's list
    ("64:ff9b::808:808", "is_global", RESERVED),  # NAT64 is not unwrapped; an IETF-reserved block
    ("127.0.0.1", "is_private", LOOPBACK),
    ("169.254.1.1", "is_private", LINK_LOCAL),
    ("198.18.0.1", "is_private", RESERVED),       # benchmarking is not an internal network
    ("0.0.0.0", "is_private", RESERVED),
])  # fmt: skip
def test_explicit_order_wins_over_the_standard_library_flags(ip, flags, scope):
    assert getattr(ipaddress.ip_address(ip), flags)  # the overlap this case is about
    assert ip_scope(ip) == scope


@pytest.mark.parametrize("ip, scope", [
    ("9.255.255.255", GLOBAL), ("11.0.0.0", GLOBAL),            # around 10/8
    ("172.15.255.255", GLOBAL), ("172.32.0.0", GLOBAL),         # around 172.16/12
    ("100.63.255.255", GLOBAL), ("100.128.0.0", GLOBAL),        # around 100.64/10
    ("192.0.1.255", GLOBAL), ("192.0.3.0", GLOBAL),             # around 192.0.2/24
    ("223.255.255.255", GLOBAL), ("224.0.0.0", MULTICAST),
    ("239.255.255.255", MULTICAST), ("240.0.0.0", RESERVED),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", RESERVED),      # the end of 2001::/23
    ("2001:200::", GLOBAL), ("2001:db9::", GLOBAL),
    ("fbff:ffff::", RESERVED), ("fc00::", PRIVATE), ("fdff:ffff::", PRIVATE), ("fe00::", RESERVED),
    ("febf:ffff::", LINK_LOCAL), ("fec0::", RESERVED), ("feff:ffff::", RESERVED), ("ff00::", MULTICAST),
])  # fmt: skip
def test_range_edges(ip, scope):
    assert ip_scope(ip) == scope


@pytest.mark.parametrize("mapped, ipv4", [
    ("::ffff:8.8.8.8", "8.8.8.8"), ("::ffff:10.0.0.1", "10.0.0.1"), ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::ffff:100.64.0.1", "100.64.0.1"), ("::ffff:192.0.2.1", "192.0.2.1"), ("::ffff:0.0.0.0", "0.0.0.0"),
    ("::ffff:a9fe:101", "169.254.1.1"),
])  # fmt: skip
def test_ipv4_mapped_ipv6_is_classified_as_its_ipv4_address(mapped, ipv4):
    assert ip_scope(mapped) == ip_scope(ipv4)


def test_any_spelling_and_only_addresses():
    assert ip_scope("2001:DB8:0::1") == DOCUMENTATION and ip_scope("FE80::1") == LINK_LOCAL
    for bad in ("", "not an ip", "10.0.0.0/8", "1.2.3"):
        with pytest.raises(ValueError):
            ip_scope(bad)
