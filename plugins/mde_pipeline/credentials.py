"""azure-identity credentials for the MDE API, and the TLS transport they share.

Which credential (``auth_method`` of the connection config):

* ``client_secret``     -> ClientSecretCredential (login + password)
* ``certificate``       -> CertificateCredential (``certificate_path`` or PEM in
                           ``certificate_data``, optional ``certificate_password``)
* ``managed_identity``  -> ManagedIdentityCredential (``managed_identity_client_id``
                           for a user-assigned identity)
* ``workload_identity`` -> WorkloadIdentityCredential (federated token file from the
                           AKS webhook's AZURE_FEDERATED_TOKEN_FILE, or
                           ``federated_token_file``)

Tokens are cached and refreshed by azure-identity/MSAL (in memory, per credential) and
by azure-core's BearerTokenCredentialPolicy; nothing here logs or stores them.

An authority that is not a known Microsoft cloud is used with
``disable_instance_discovery=True``: otherwise MSAL asks login.microsoftonline.com
whether the authority is valid before it talks to it.

TLS is always verified. Token requests go through the same kind of transport as API
calls, verifying against one trust bundle: certifi's roots plus any CA files named by
REQUESTS_CA_BUNDLE / SSL_CERT_FILE (and the connection's ``ca_bundle``). The extra CAs
are *added* to the default roots, not substituted for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from typing import TYPE_CHECKING, Callable, Iterable

import certifi
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import RequestsTransport

if TYPE_CHECKING:
    from mde_pipeline.client import MdeConnectionConfig

CA_ENV_VARS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
AUTH_METHODS = ("client_secret", "certificate", "managed_identity", "workload_identity")


class TrustBundleError(ValueError):
    """A named CA file is missing or holds no certificate."""


def _certificates_in(path: str, origin: str) -> list[bytes]:
    """PEM blocks of a CA file, or of every file in a CA directory."""
    if os.path.isdir(path):
        files = [os.path.join(path, name) for name in sorted(os.listdir(path))]
        files = [f for f in files if os.path.isfile(f)]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise TrustBundleError(f"{origin} names {path!r}, which does not exist")
    blocks: list[bytes] = []
    for file in files:
        with open(file, "rb") as handle:
            data = handle.read()
        if b"-----BEGIN CERTIFICATE-----" in data:
            blocks.append(data.strip() + b"\n")
    if not blocks:
        raise TrustBundleError(f"{origin} names {path!r}, which holds no PEM certificate")
    return blocks


def extra_ca_sources(configured: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(origin, path) of every extra CA location: env vars, then the connection's."""
    sources: list[tuple[str, str]] = []
    for var in CA_ENV_VARS:
        for path in filter(None, (os.environ.get(var) or "").split(os.pathsep)):
            sources.append((var, path))
    for path in configured:
        sources.append(("connection extra ca_bundle", path))
    return sources


def trust_bundle(configured: Iterable[str] = ()) -> str:
    """Path of a CA bundle = certifi + the extra CAs; certifi's own file when none.

    The combined file is content-addressed in the temp dir, so every process builds
    the same file and a changed CA yields a new one.
    """
    sources = extra_ca_sources(configured)
    if not sources:
        return certifi.where()
    with open(certifi.where(), "rb") as handle:
        parts = [handle.read().strip() + b"\n"]
    seen: set[str] = set()
    for origin, path in sources:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        parts.extend(_certificates_in(path, origin))
    bundle = b"".join(parts)
    directory = _private_dir()
    target = os.path.join(directory, hashlib.sha256(bundle).hexdigest()[:32] + ".pem")
    if not _holds(target, bundle):  # never trust a file just for its name
        fd, scratch = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(bundle)
        os.replace(scratch, target)  # atomic: concurrent builders write the same bytes
    return target


def _private_dir() -> str:
    """A temp directory only this user can write (a trust store must not be planted)."""
    directory = os.path.join(tempfile.gettempdir(), f"mde_ca_bundles_{os.getuid()}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if not os.path.isdir(directory) or os.path.islink(directory) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        directory = tempfile.mkdtemp(prefix="mde_ca_bundles_")
    return directory


def _holds(path: str, content: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read() == content
    except OSError:
        return False


def build_transport(config: "MdeConnectionConfig") -> RequestsTransport:
    """An HTTPS transport with the config's timeouts, verifying against trust_bundle()."""
    return RequestsTransport(
        connection_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        connection_verify=trust_bundle(config.ca_bundle),
    )


def _certificate_bytes(config: "MdeConnectionConfig") -> bytes | None:
    data = config.certificate_data
    if not data:
        return None
    if "-----BEGIN" in data:
        return data.encode("utf-8")
    try:  # a base64 PKCS#12 blob (what Key Vault exports)
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("certificate_data is neither PEM text nor base64 PKCS#12") from None


def build_credential(config: "MdeConnectionConfig", *, transport: RequestsTransport | None = None) -> TokenCredential:
    """The azure-identity credential for ``config.auth_method``."""
    from azure.identity import (
        CertificateCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    transport = transport or build_transport(config)
    authority = {
        "authority": config.endpoints.authority_host,
        "disable_instance_discovery": config.disable_instance_discovery,
        # azure-identity's own RetryPolicy for token requests: the connection's retry knobs
        "retry_total": config.retry_total,
        "retry_backoff_factor": config.retry_backoff_factor,
        "retry_backoff_max": config.retry_backoff_max,
    }
    method = config.auth_method
    if method == "client_secret":
        return ClientSecretCredential(
            config.tenant_id, config.client_id, config.client_secret, transport=transport, **authority
        )
    if method == "certificate":
        return CertificateCredential(
            config.tenant_id,
            config.client_id,
            certificate_path=config.certificate_path,
            certificate_data=_certificate_bytes(config),
            password=config.certificate_password,
            transport=transport,
            **authority,
        )
    if method == "managed_identity":
        return ManagedIdentityCredential(client_id=config.managed_identity_client_id, transport=transport)
    if method == "workload_identity":
        return WorkloadIdentityCredential(
            tenant_id=config.tenant_id,
            client_id=config.client_id,
            token_file_path=config.federated_token_file,
            transport=transport,
            **authority,
        )
    raise ValueError(f"unknown auth_method {method!r}; expected one of {AUTH_METHODS}")


def credential_factory(config: "MdeConnectionConfig") -> Callable[[], TokenCredential]:
    """A factory of fresh credentials (each with an empty token cache and its own
    transport): used to get a new token when the service rejects a cached one."""
    return lambda: build_credential(config)
