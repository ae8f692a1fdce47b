"""Cloud presets: API base URL, token authority and token scope per Microsoft cloud.

Source: docs "Hosts" table (shared API notes). Two rules the presets encode:

* The token scope belongs to the MDE *application*, not to the host the API is called
  on. Regional hosts (``eu.api.security.microsoft.com``) take the commercial scope; a
  scope built from a regional host fails with AADSTS500011.
* GCC tenants live in commercial Entra ID (login.microsoftonline.com, commercial
  resource), only the API host is in the .us domain. GCC High and DoD use the US
  Government authority and resource.

Every field can be overridden by the connection (``host``, ``authority_host``,
``scope``); an override of one field never changes the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
US_GOVERNMENT_AUTHORITY = "https://login.microsoftonline.us"
COMMERCIAL_SCOPE = "https://api.securitycenter.microsoft.com/.default"
# GCC: the commercial WindowsDefenderATP application, addressed by its app id URI.
GCC_SCOPE = "https://securitycenter.onmicrosoft.com/windowsatpservice/.default"
US_GOVERNMENT_SCOPE = "https://securitycenter.onmicrosoft.us/windowsatpservice/.default"

# Authorities MSAL knows; any other one must skip instance discovery (which would ask
# login.microsoftonline.com about it) -- see credentials.py.
KNOWN_AUTHORITY_HOSTS = frozenset(
    {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
)

GEOS = ("us", "eu", "uk", "au", "swa", "ina")


@dataclass(frozen=True)
class CloudPreset:
    name: str
    api_base_url: str
    authority_host: str
    scope: str


def _presets() -> dict[str, CloudPreset]:
    presets = [
        CloudPreset("commercial", "https://api.security.microsoft.com", PUBLIC_AUTHORITY, COMMERCIAL_SCOPE),
        CloudPreset(
            "commercial_legacy", "https://api.securitycenter.microsoft.com", PUBLIC_AUTHORITY, COMMERCIAL_SCOPE
        ),
        *(
            CloudPreset(geo, f"https://{geo}.api.security.microsoft.com", PUBLIC_AUTHORITY, COMMERCIAL_SCOPE)
            for geo in GEOS
        ),
        CloudPreset("gcc", "https://api-gcc.securitycenter.microsoft.us", PUBLIC_AUTHORITY, GCC_SCOPE),
        CloudPreset(
            "gcc_high", "https://api-gov.securitycenter.microsoft.us", US_GOVERNMENT_AUTHORITY, US_GOVERNMENT_SCOPE
        ),
        CloudPreset("dod", "https://api-gov.securitycenter.microsoft.us", US_GOVERNMENT_AUTHORITY, US_GOVERNMENT_SCOPE),
    ]
    return {preset.name: preset for preset in presets}


CLOUDS: dict[str, CloudPreset] = _presets()
DEFAULT_CLOUD = "commercial"


@dataclass(frozen=True)
class Endpoints:
    """Where to call and how to get a token, after presets and overrides."""

    cloud: str
    api_base_url: str
    authority_host: str
    scope: str

    @property
    def authority_is_known(self) -> bool:
        return (urlsplit(self.authority_host).hostname or "") in KNOWN_AUTHORITY_HOSTS


def normalize_https_url(value: str, field: str) -> str:
    """``host`` or ``https://host[:port]`` -> ``https://host[:port]``; no path beyond '/'.

    Plain http is refused: the API and the token endpoint carry secrets.
    """
    value = (value or "").strip()
    if not value:
        raise ValueError(f"{field} is empty")
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme.lower() != "https":
        raise ValueError(f"{field} must be an https:// URL (TLS is always used), got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"{field} has no host name: {value!r}")
    if parts.username or parts.password:
        raise ValueError(f"{field} must not contain user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{field} must be a scheme and host (optionally a port), without path or query: {value!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{field} has an invalid port: {value!r}") from exc
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"https://{host}:{port}" if port else f"https://{host}"


def get_cloud(name: str) -> CloudPreset:
    try:
        return CLOUDS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown cloud {name!r}; expected one of: {', '.join(sorted(CLOUDS))}") from None


def cloud_for_host(api_base_url: str) -> CloudPreset | None:
    """The preset whose API host is ``api_base_url`` (first match), else None."""
    for preset in CLOUDS.values():
        if preset.api_base_url == api_base_url:
            return preset
    return None


def resolve_endpoints(
    *,
    cloud: str | None = None,
    host: str | None = None,
    authority_host: str | None = None,
    scope: str | None = None,
) -> Endpoints:
    """Preset for ``cloud`` (default: the preset owning ``host``, else commercial), with
    each of ``host``/``authority_host``/``scope`` overriding its own field only."""
    api_base_url = normalize_https_url(host, "host") if host else None
    if cloud:
        preset = get_cloud(cloud)
    else:
        # A known host implies its cloud (so a GCC High host gets the .us authority);
        # any other host (a proxy, the simulator) defaults to the commercial preset.
        preset = (cloud_for_host(api_base_url) if api_base_url else None) or CLOUDS[DEFAULT_CLOUD]
    resolved_scope = (scope or preset.scope).strip()
    if not resolved_scope:
        raise ValueError("scope is empty")
    if not resolved_scope.endswith("/.default"):
        # The client-credentials flow only accepts "<resource>/.default".
        resolved_scope = resolved_scope.rstrip("/") + "/.default"
    return Endpoints(
        cloud=preset.name,
        api_base_url=api_base_url or preset.api_base_url,
        authority_host=normalize_https_url(authority_host, "authority_host") if authority_host else preset.authority_host,
        scope=resolved_scope,
    )
