"""Cloud presets: URLs, authority and scope per cloud; overrides; the scope rule."""

from __future__ import annotations

import pytest

from mde_pipeline.api.clouds import CLOUDS, GEOS, normalize_https_url, resolve_endpoints

COMMERCIAL_SCOPE = "https://api.securitycenter.microsoft.com/.default"
GOV_SCOPE = "https://securitycenter.onmicrosoft.us/windowsatpservice/.default"

EXPECTED = {
    "commercial": ("https://api.security.microsoft.com", "https://login.microsoftonline.com", COMMERCIAL_SCOPE),
    "commercial_legacy": (
        "https://api.securitycenter.microsoft.com",
        "https://login.microsoftonline.com",
        COMMERCIAL_SCOPE,
    ),
    **{
        geo: (f"https://{geo}.api.security.microsoft.com", "https://login.microsoftonline.com", COMMERCIAL_SCOPE)
        for geo in ("us", "eu", "uk", "au", "swa", "ina")
    },
    "gcc": (
        "https://api-gcc.securitycenter.microsoft.us",
        "https://login.microsoftonline.com",
        "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
    ),
    "gcc_high": ("https://api-gov.securitycenter.microsoft.us", "https://login.microsoftonline.us", GOV_SCOPE),
    "dod": ("https://api-gov.securitycenter.microsoft.us", "https://login.microsoftonline.us", GOV_SCOPE),
}


@pytest.mark.parametrize("cloud", sorted(EXPECTED))
def test_each_preset_has_its_urls_and_scope(cloud):
    endpoints = resolve_endpoints(cloud=cloud)
    assert (endpoints.api_base_url, endpoints.authority_host, endpoints.scope) == EXPECTED[cloud]
    assert endpoints.authority_is_known


def test_every_preset_is_covered():
    assert set(CLOUDS) == set(EXPECTED)
    assert set(GEOS) <= set(CLOUDS)


@pytest.mark.parametrize("geo", GEOS)
def test_scope_never_follows_a_regional_host(geo):
    regional = f"https://{geo}.api.security.microsoft.com"
    for endpoints in (resolve_endpoints(cloud=geo), resolve_endpoints(host=regional)):
        assert endpoints.api_base_url == regional
        assert endpoints.scope == COMMERCIAL_SCOPE
        assert f"{geo}.api" not in endpoints.scope


def test_default_is_commercial():
    assert resolve_endpoints().api_base_url == "https://api.security.microsoft.com"


def test_a_known_host_implies_its_cloud_authority_and_scope():
    endpoints = resolve_endpoints(host="api-gov.securitycenter.microsoft.us")
    assert endpoints.authority_host == "https://login.microsoftonline.us"
    assert endpoints.scope == GOV_SCOPE


def test_each_field_overrides_only_itself():
    base = resolve_endpoints(cloud="gcc_high")
    host = resolve_endpoints(cloud="gcc_high", host="https://proxy.example.org:8443")
    assert host.api_base_url == "https://proxy.example.org:8443"
    assert (host.authority_host, host.scope) == (base.authority_host, base.scope)

    authority = resolve_endpoints(cloud="gcc_high", authority_host="https://127.0.0.1:9443")
    assert authority.authority_host == "https://127.0.0.1:9443"
    assert not authority.authority_is_known
    assert (authority.api_base_url, authority.scope) == (base.api_base_url, base.scope)

    scope = resolve_endpoints(cloud="gcc_high", scope="https://api.securitycenter.microsoft.com/.default")
    assert scope.scope == COMMERCIAL_SCOPE
    assert (scope.api_base_url, scope.authority_host) == (base.api_base_url, base.authority_host)


def test_a_scope_given_as_a_resource_gets_default_appended():
    assert resolve_endpoints(scope="https://securitycenter.onmicrosoft.us/windowsatpservice").scope == GOV_SCOPE


def test_an_unknown_host_uses_the_commercial_token_settings():
    endpoints = resolve_endpoints(host="https://127.0.0.1:4443")
    assert endpoints.api_base_url == "https://127.0.0.1:4443"
    assert endpoints.scope == COMMERCIAL_SCOPE


@pytest.mark.parametrize(
    "value, expected",
    [
        ("api.security.microsoft.com", "https://api.security.microsoft.com"),
        ("HTTPS://API.Security.Microsoft.com/", "https://api.security.microsoft.com"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("https://[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_urls_are_normalised(value, expected):
    assert normalize_https_url(value, "host") == expected


@pytest.mark.parametrize(
    "value",
    ["http://api.security.microsoft.com", "https://user:pw@host", "https://host/api", "https://host?x=1", "", "https://"],
)
def test_unsafe_or_odd_urls_are_refused(value):
    with pytest.raises(ValueError):
        normalize_https_url(value, "host")


def test_unknown_cloud_lists_the_choices():
    with pytest.raises(ValueError, match="gcc_high"):
        resolve_endpoints(cloud="mars")
