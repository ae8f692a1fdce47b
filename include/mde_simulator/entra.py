"""Microsoft Entra ID stand-in: client registry, token endpoint, OIDC metadata.

A tenant is its GUID, accepted in any letter case, or a verified domain name registered
with ``add_domain`` (``--tenant-domain``); tokens carry the lower-case GUID in ``tid``,
as Entra's do.

Error bodies follow Entra's shape (error, error_description with an AADSTS code,
error_codes, timestamp, trace_id, correlation_id, error_uri). Secrets are never echoed.
"""
from __future__ import annotations

import hmac
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from . import jws
from .config import DEFAULT_SCOPES

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Permission each API endpoint needs (any one of the listed roles).
REQUIRED_ROLES = {
    "list": ("Alert.Read.All", "Alert.ReadWrite.All"),
    "alert": ("Alert.Read.All", "Alert.ReadWrite.All"),
    "ips": ("Ip.Read.All",),
}


class EntraError(Exception):
    """An OAuth error response: HTTP status plus Entra's JSON body."""

    def __init__(self, status: int, error: str, code: int | None, description: str,
                 correlation_id: str | None = None):
        super().__init__(description)
        now = datetime.now(timezone.utc)
        trace_id = str(uuid.uuid4())
        correlation_id = correlation_id or str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        self.status = status
        prefix = f"AADSTS{code}: " if code is not None else ""
        self.body = {
            "error": error,
            "error_description": (f"{prefix}{description} Trace ID: {trace_id} "
                                  f"Correlation ID: {correlation_id} Timestamp: {stamp}"),
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        }
        if code is not None:  # code None: a 400 without any AADSTS code (entra_400)
            self.body["error_codes"] = [code]
            self.body["error_uri"] = f"https://login.microsoftonline.com/error?code={code}"


class TokenError(Exception):
    """An API call whose bearer token is missing, invalid, expired or lacks a role."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Client:
    client_id: str
    tenant_id: str
    secret: str | None
    roles: list
    certificates: dict = field(default_factory=dict)   # thumbprint (x5t or x5t#S256) -> cert


@dataclass
class TokenClaims:
    client_id: str
    tenant_id: str
    roles: list
    expires_at: float


def _thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    return (jws.b64url_encode(cert.fingerprint(hashes.SHA1())),   # x5t (what MSAL sends for RS256)
            jws.b64url_encode(cert.fingerprint(hashes.SHA256())))  # x5t#S256 (PS256)


def load_certificate(pem: str | bytes) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ValueError("client certificates must carry an RSA public key")
    return cert


class Entra:
    def __init__(self, *, scopes=DEFAULT_SCOPES, token_lifetime: float = 3599):
        self._lock = threading.Lock()
        # Keyed by (client id, tenant): one multi-tenant app can be registered in several
        # tenants, and limits count per application + tenant.
        self._clients: dict[tuple[str, str], Client] = {}
        self._domains: dict[str, str] = {}  # verified domain name (lower case) -> tenant GUID
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = uuid.uuid4().hex
        self.scopes = list(scopes)
        self.token_lifetime = token_lifetime
        self._revoked_before = 0.0
        # entra_400: {"endpoint": "metadata" | "token", "code": int | None} or None.
        self.refuse_400: dict | None = None

    # -------------------------------------------------------------- registry
    def canonical(self, tenant: str) -> str:
        """The tenant's GUID (lower case) for any spelling: a GUID in any case, a domain."""
        spelled = tenant.strip().lower()
        with self._lock:
            return self._domains.get(spelled, spelled)

    def add_domain(self, domain: str, tenant_id: str) -> None:
        """``domain`` names tenant ``tenant_id`` too (a verified domain of the directory)."""
        with self._lock:
            self._domains[domain.strip().lower()] = tenant_id.strip().lower()

    def register(self, client_id: str, tenant_id: str, secret: str | None, roles,
                 certificates=()) -> None:
        tenant_id = tenant_id.strip().lower()
        with self._lock:
            client = Client(client_id, tenant_id, secret, list(roles))
            for other in self._clients.values():   # certificates belong to the app
                if other.client_id == client_id:
                    client.certificates.update(other.certificates)
            self._clients[(client_id, tenant_id)] = client
        for pem in certificates:
            self.add_certificate(client_id, pem)

    def add_certificate(self, client_id: str, pem: str | bytes) -> None:
        cert = load_certificate(pem)
        with self._lock:
            registrations = [c for c in self._clients.values() if c.client_id == client_id]
            if not registrations:
                raise KeyError(client_id)
            for client in registrations:
                for thumbprint in _thumbprints(cert):
                    client.certificates[thumbprint] = cert

    def tenants(self) -> set:
        with self._lock:
            return {c.tenant_id for c in self._clients.values()}

    def clients(self) -> list[dict]:
        with self._lock:
            return [{"client_id": c.client_id, "client_secret": c.secret,
                     "tenant_id": c.tenant_id, "roles": list(c.roles),
                     "certificates": len({id(x) for x in c.certificates.values()})}
                    for c in self._clients.values()]

    def revoke_all(self) -> None:
        """Tokens issued before now stop working (tests of re-authentication)."""
        with self._lock:
            self._revoked_before = time.time()

    # -------------------------------------------------------------- metadata
    def refuse(self, endpoint: str, tenant: str, correlation_id: str | None = None) -> None:
        """entra_400: every call of ``endpoint`` answers 400 (with the AADSTS code set, or none)."""
        refusal = self.refuse_400
        if refusal and refusal["endpoint"] == endpoint:
            raise EntraError(400, "invalid_request", refusal["code"],
                             f"The request for tenant '{tenant}' is not valid (simulated).",
                             correlation_id)

    def openid_configuration(self, base_url: str, tenant: str) -> dict:
        self.refuse("metadata", tenant)
        self.check_tenant(tenant)
        root = f"{base_url}/{self.canonical(tenant)}"  # Entra answers with the GUID
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base_url}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "roles"],
            "kerberos_endpoint": f"{root}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self) -> dict:
        return {"keys": [jws.rsa_jwk(self._signing_key.public_key(), self._kid)]}

    def check_tenant(self, tenant: str, correlation_id: str | None = None) -> None:
        if self.canonical(tenant) not in self.tenants():
            raise EntraError(
                400, "invalid_request", 90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant "
                f"ID and are signing into the correct cloud. Check with your subscription "
                f"administrator, this may happen if there are no active subscriptions for "
                f"the tenant.", correlation_id)

    # -------------------------------------------------------------- token endpoint
    def issue_token(self, base_url: str, tenant: str, form: dict,
                    correlation_id: str | None = None) -> dict:
        def fail(status, error, code, text):
            return EntraError(status, error, code, text, correlation_id)

        self.refuse("token", tenant, correlation_id)
        self.check_tenant(tenant, correlation_id)
        spelled, tenant = tenant, self.canonical(tenant)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise fail(400, "invalid_request", 900144,
                       "The request body must contain the following parameter: 'grant_type'.")
        if grant_type != "client_credentials":
            raise fail(400, "unsupported_grant_type", 70003,
                       "The app requested an unsupported grant type.")
        client_id = form.get("client_id")
        if not client_id:
            raise fail(400, "invalid_request", 900144,
                       "The request body must contain the following parameter: 'client_id'.")
        with self._lock:
            client = self._clients.get((client_id, tenant))
        if client is None:
            raise fail(400, "unauthorized_client", 700016,
                       f"Application with identifier '{client_id}' was not found in the "
                       f"directory '{tenant}'. This can happen if the application has not been "
                       f"installed by the administrator of the tenant or consented to by any "
                       f"user in the tenant. You may have sent your authentication request to "
                       f"the wrong tenant.")
        scope = form.get("scope")
        if not scope:
            raise fail(400, "invalid_request", 900144,
                       "The request body must contain the following parameter: 'scope'.")
        if "client_assertion" in form:
            self._check_assertion(client, form, base_url, {spelled, tenant}, fail)
        elif "client_secret" in form:
            given = form["client_secret"].encode()
            if client.secret is None or not hmac.compare_digest(given, client.secret.encode()):
                raise fail(401, "invalid_client", 7000215,
                           "Invalid client secret provided. Ensure the secret being sent in the "
                           "request is the client secret value, not the client secret ID, for a "
                           f"secret added to app '{client_id}'.")
        else:
            raise fail(401, "invalid_client", 7000218,
                       "The request body must contain the following parameter: "
                       "'client_assertion' or 'client_secret'.")
        scopes = scope.split()
        resource_scopes = [s for s in scopes if s not in ("openid", "profile", "offline_access")]
        if len(resource_scopes) != 1 or not resource_scopes[0].endswith("/.default"):
            raise fail(400, "invalid_scope", 1002012,
                       f"The provided value for scope {scope} is not valid. Client credential "
                       f"flows must have a scope value with /.default suffixed to the resource "
                       f"identifier (application ID URI).")
        requested = resource_scopes[0]
        if requested not in self.scopes:
            resource = requested[: -len("/.default")]
            raise fail(400, "invalid_resource", 500011,
                       f"The resource principal named {resource} was not found in the tenant "
                       f"named {tenant}. This can happen if the application has not been "
                       f"installed by the administrator of the tenant or consented to by any "
                       f"user in the tenant. You might have sent your authentication request to "
                       f"the wrong tenant.")
        now = time.time()
        lifetime = self.token_lifetime
        claims = {
            "aud": requested[: -len("/.default")],
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": int(now), "nbf": int(now) - 1, "iat_ms": int(now * 1000),
            # Fractional lifetimes (tests of expiry) keep their precision in 'exp_ms'.
            "exp": int(now + lifetime), "exp_ms": int((now + lifetime) * 1000),
            "appid": client.client_id, "azp": client.client_id, "tid": tenant,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client.client_id)),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client.client_id)),
            "roles": list(client.roles), "ver": "1.0", "jti": uuid.uuid4().hex,
        }
        token = jws.sign_rs256(self._signing_key, {"kid": self._kid, "x5t": self._kid}, claims)
        expires_in = max(1, int(round(lifetime)))
        return {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                "access_token": token}

    def _check_assertion(self, client: Client, form: dict, base_url: str, tenants: set, fail):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise fail(400, "invalid_request", 700025,
                       f"client_assertion_type must be '{ASSERTION_TYPE}'.")
        assertion = form["client_assertion"]
        try:
            header, claims, _, _ = jws.split(assertion)
        except jws.JwsError:
            raise fail(401, "invalid_client", 700027,
                       "Client assertion failed signature validation: not a JWT.") from None
        thumbprint = header.get("x5t#S256") or header.get("x5t")
        if isinstance(thumbprint, str):
            thumbprint = thumbprint.rstrip("=")   # MSAL keeps base64 padding; JOSE drops it
        with self._lock:
            cert = client.certificates.get(thumbprint) if isinstance(thumbprint, str) else None
        if cert is None:
            raise fail(401, "invalid_client", 700027,
                       f"The certificate with identifier used to sign the client assertion is "
                       f"not registered on application. [Reason - The key was not found., "
                       f"Thumbprint of key used by client: '{thumbprint}']")
        try:
            jws.verify(assertion, cert.public_key())
        except jws.JwsError:
            raise fail(401, "invalid_client", 700027,
                       "Client assertion failed signature validation.") from None
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, (int, float)) or exp < now - 300 or (
                isinstance(nbf, (int, float)) and nbf > now + 300):
            raise fail(401, "invalid_client", 700024,
                       "Client assertion is not within its valid time range.")
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise fail(401, "invalid_client", 700021,
                       "Client assertion application identifier doesn't match "
                       "'client_id' parameter.")
        accepted = {url for tenant in tenants for url in (
            f"{base_url}/{tenant}/oauth2/v2.0/token", f"{base_url}/{tenant}/v2.0",
            f"{base_url}/{tenant}/oauth2/token", f"{base_url}/{tenant}")}
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(a in accepted for a in audiences):
            raise fail(401, "invalid_client", 700016,
                       f"Client assertion audience '{audience}' is not valid for this token "
                       f"endpoint.")

    # -------------------------------------------------------------- API side
    def check_bearer(self, authorization: str | None) -> TokenClaims:
        """Validate the Authorization header of an API call; TokenError(401) if bad."""
        if not authorization:
            raise TokenError(401, "Authorization header is missing.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenError(401, "Authorization header must be 'Bearer <token>'.")
        try:
            _, claims = jws.verify(token.strip(), self._signing_key.public_key())
        except jws.JwsError:
            raise TokenError(401, "The access token is invalid.") from None
        now = time.time()
        expires_at = claims.get("exp_ms", claims.get("exp", 0) * 1000) / 1000
        if expires_at <= now:
            raise TokenError(401, "The access token has expired.")
        if claims.get("iat_ms", 0) / 1000 <= self._revoked_before:
            raise TokenError(401, "The access token has been revoked.")
        if claims.get("aud") not in [s[: -len("/.default")] for s in self.scopes]:
            raise TokenError(401, "The access token audience is not valid for this API.")
        with self._lock:
            client = self._clients.get((claims.get("appid"), claims.get("tid")))
        if client is None:
            raise TokenError(401, "The access token was issued to an unknown application.")
        return TokenClaims(client.client_id, client.tenant_id, list(claims.get("roles", [])),
                           expires_at)

    @staticmethod
    def check_roles(claims: TokenClaims, endpoint: str) -> None:
        needed = REQUIRED_ROLES.get(endpoint, ())
        if needed and not any(role in claims.roles for role in needed):
            raise TokenError(
                403, f"The application does not have any of the required application "
                     f"permissions ({', '.join(needed)}) to access the resource.")
