"""Canonical IP strings: one spelling per address, invalid strings reported with a reason."""

from __future__ import annotations

import pytest

from mde_pipeline.api.ip_addresses import InvalidIpError, canonical_ip, canonical_ips


@pytest.mark.parametrize(
    "raw, canonical, version",
    [
        ("104.80.104.128", "104.80.104.128", 4),
        ("  104.80.104.128\n", "104.80.104.128", 4),
        ("0.0.0.0", "0.0.0.0", 4),
        ("255.255.255.255", "255.255.255.255", 4),
        ("2001:DB8::0001", "2001:db8::1", 6),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", 6),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", 6),  # RFC 5952: the first longest run
        ("FE80::ABCD", "fe80::abcd", 6),
        ("::", "::", 6),
        ("::1", "::1", 6),
        # IPv4-mapped IPv6 is the IPv4 address (how dual-stack sockets report IPv4 peers)
        ("::ffff:192.0.2.1", "192.0.2.1", 4),
        ("::FFFF:C000:0201", "192.0.2.1", 4),
        # the deprecated IPv4-compatible form is not mapped: it stays IPv6
        ("::192.0.2.1", "::c000:201", 6),
        # zone ids are interface names on the reporting host: the address is kept without it
        ("fe80::1%eth0", "fe80::1", 6),
        ("FE80::0001%12", "fe80::1", 6),
    ],
)
def test_canonical_forms(raw, canonical, version):
    ip = canonical_ip(raw)
    assert (ip.address, ip.version) == (canonical, version)
    assert ip.as_pair() == [canonical, version]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("010.1.1.1", "leading zero"),  # octal 8 or decimal 10?
        ("1.2.3.04", "leading zero"),
        ("::ffff:010.1.1.1", "leading zero"),
        ("10.0.0.0/8", "network"),
        ("192.0.2.1/32", "network"),
        ("", "empty"),
        ("   ", "empty"),
        ("256.1.1.1", "not an IPv4 or IPv6"),
        ("1.2.3", "not an IPv4 or IPv6"),
        ("1.2.3.4:443", "not an IPv4 or IPv6"),
        ("[2001:db8::1]", "not an IPv4 or IPv6"),
        ("2001:db8::1::2", "not an IPv4 or IPv6"),
        ("fe80::1%", "not an IPv4 or IPv6"),
        ("1.2.3.4%eth0", "not an IPv4 or IPv6"),
        ("1.2. 3.4", "not an IPv4 or IPv6"),
        ("contoso.com", "not an IPv4 or IPv6"),
        ("0x7f.0.0.1", "not an IPv4 or IPv6"),
        (16909060, "not a string"),  # ipaddress would accept an int: the API sends strings
        (None, "not a string"),
    ],
)
def test_invalid_values_carry_a_reason(raw, reason):
    with pytest.raises(InvalidIpError, match=reason) as caught:
        canonical_ip(raw)
    assert caught.value.value == raw


def test_hex_groups_with_leading_zeros_are_fine_in_ipv6():
    assert canonical_ip("2001:0db8:0a0b::0001").address == "2001:db8:a0b::1"


def test_one_alerts_values_are_deduplicated_sorted_and_invalid_ones_kept_aside():
    values = [
        "2001:db8::1",
        "2001:DB8::0001",
        " 2001:db8::1 ",
        "::ffff:10.1.1.1",
        "10.1.1.1",
        "9.9.9.9",
        "fe80::1%eth0",
        "fe80::1",
        "not-an-ip",
        "010.1.1.1",
        "not-an-ip",
        "",
    ]
    result = canonical_ips(values)
    assert [ip.as_pair() for ip in result.ips] == [
        ["9.9.9.9", 4],
        ["10.1.1.1", 4],
        ["2001:db8::1", 6],
        ["fe80::1", 6],
    ]
    assert [(bad.value, bad.reason.split(" ")[0]) for bad in result.invalid] == [
        ("not-an-ip", "not"),
        ("010.1.1.1", "leading"),
        ("", "empty"),
    ]


def test_nothing_in_nothing_out():
    result = canonical_ips([])
    assert result.ips == () and result.invalid == ()
