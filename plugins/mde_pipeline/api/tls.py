"""TLS trust for every call (token requests and API calls): certifi plus the extra CAs.

TLS is always verified. The trust bundle is certifi's roots plus any CA files named by
REQUESTS_CA_BUNDLE / SSL_CERT_FILE (and the connection's ``ca_bundle``): the extra CAs
are *added* to the default roots, not substituted for them. A bundle that is missing,
holds no certificate, or does not verify the server is a configuration problem: only a
change of configuration can fix it, so it is never retried.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from typing import Iterable

import certifi
import requests
from azure.core.pipeline.transport import RequestsTransport

from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.api.private_dirs import private_temp_dir

CA_ENV_VARS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


class TrustBundleError(MdeConfigurationError):
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
    return private_temp_dir("mde_ca_bundles") or tempfile.mkdtemp(prefix="mde_ca_bundles_")


def _holds(path: str, content: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read() == content
    except OSError:
        return False

def build_transport(connect_timeout: float, read_timeout: float, ca_bundle: Iterable[str] = ()) -> RequestsTransport:
    """An HTTPS transport with these timeouts, verifying against :func:`trust_bundle`."""
    return RequestsTransport(
        connection_timeout=connect_timeout,
        read_timeout=read_timeout,
        connection_verify=trust_bundle(ca_bundle),
    )


def trust_sources_text(configured: Iterable[str] = ()) -> str:
    """The CAs a failed verification was checked against, for the error message."""
    extra = [f"{origin}={path}" for origin, path in extra_ca_sources(configured)]
    return "certifi's roots" + (" plus " + ", ".join(extra) if extra else " only (no REQUESTS_CA_BUNDLE set)")


def is_tls_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a certificate verification failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ssl.SSLError, requests.exceptions.SSLError)):
            return True
        inner = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
        current = inner if isinstance(inner, BaseException) else None
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
