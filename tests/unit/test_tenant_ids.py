"""Canonical tenant ids: a GUID in any case is its lower case, offline; a domain name is
resolved from the access token's tid claim (decoded, not verified); the lake names a
partition by the canonical id only."""

from __future__ import annotations

import base64
import json

import pytest

from mde_pipeline.common.tenant_ids import is_guid, offline_tenant_id, tid_claim
from mde_pipeline.lake.location import LakeLocationError, canonical_partition_id, is_canonical_partition

GUID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize("spelling", [GUID, GUID.upper(), "72F988bf-86F1-41af-91AB-2d7cd011db47", f" {GUID.upper()} "])
def test_a_guid_in_any_case_is_its_lower_case_without_a_network_call(spelling):
    assert is_guid(spelling)
    assert offline_tenant_id(spelling) == GUID
    assert canonical_partition_id(spelling.strip()) == GUID


@pytest.mark.parametrize("domain", ["contoso.onmicrosoft.com", "Contoso.com"])
def test_a_domain_name_is_not_canonical_offline_and_never_names_a_partition(domain):
    assert offline_tenant_id(domain) is None and not is_guid(domain)
    with pytest.raises(LakeLocationError, match="domain name.*GUID"):
        canonical_partition_id(domain)
    assert not is_canonical_partition(domain)


def test_partition_names_are_canonical_only_in_lower_case():
    assert is_canonical_partition(GUID) and not is_canonical_partition(GUID.upper())
    assert is_canonical_partition("tenant-a")  # test ids without a dot lower-case like a GUID
    assert not is_canonical_partition("..")


@pytest.mark.parametrize("tid", [GUID, GUID.upper()])
def test_the_tid_claim_of_a_token_is_the_lower_case_guid(tid):
    assert tid_claim(jwt({"tid": tid, "aud": "https://api.securitycenter.microsoft.com", "roles": []})) == GUID


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-jwt", "not a JWT"),
        ("a.!!!.c", "not base64url JSON"),
        (jwt({"aud": "x"}), "no tenant GUID"),
        (jwt({"tid": "contoso.onmicrosoft.com"}), "no tenant GUID"),
        (jwt(["tid"]), "no tenant GUID"),  # type: ignore[arg-type]
    ],
)
def test_a_token_without_a_guid_tid_is_refused_without_quoting_it(token, reason):
    with pytest.raises(ValueError, match=reason) as info:
        tid_claim(token)
    assert token not in str(info.value)
