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

Token requests go through the same TLS transport as API calls (:mod:`mde_pipeline.api.tls`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Callable

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import RequestsTransport

from mde_pipeline.api.config import AUTH_METHODS, MdeConnectionConfig
from mde_pipeline.api.entra_answers import EntraAnswers
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.api.policies import TokenRetryPolicy
from mde_pipeline.api.tls import build_transport
from mde_pipeline.common.redaction import redact


def transport_for(config: MdeConnectionConfig) -> RequestsTransport:
    """The TLS transport of ``config`` (its timeouts and extra CAs)."""
    return build_transport(config.connect_timeout, config.read_timeout, config.ca_bundle)


def _certificate_bytes(config: MdeConnectionConfig) -> bytes | None:
    data = config.certificate_data
    if not data:
        return None
    if "-----BEGIN" in data:
        return data.encode("utf-8")
    try:  # a base64 PKCS#12 blob (what Key Vault exports)
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("certificate_data is neither PEM text nor base64 PKCS#12") from None


def build_credential(config: MdeConnectionConfig, *, transport: RequestsTransport | None = None,
                     answers: EntraAnswers | None = None) -> TokenCredential:  # fmt: skip
    """The azure-identity credential for ``config.auth_method``; ``answers`` records what
    Entra answers it (api/entra_answers.py). A value azure-identity refuses (a tenant id
    with characters no tenant has, a certificate that does not load) is an
    MdeConfigurationError naming the setting."""
    try:
        return _credential(config, transport or transport_for(config), answers)
    except ValueError as exc:
        setting = "extra tenant_id" if "tenant" in str(exc).lower() else {
            "certificate": "extra certificate_path / certificate_data / certificate_password",
            "workload_identity": "extra federated_token_file and login (client id)",
        }.get(config.auth_method, "the connection's login, password and extra")  # fmt: skip
        raise MdeConfigurationError(
            f"azure-identity refused the {config.auth_method} credential: check {setting}: "
            f"{redact(str(exc), config.secrets())[:300]}"
        ) from None


def _credential(config: MdeConnectionConfig, transport: RequestsTransport, answers: EntraAnswers | None) -> TokenCredential:
    from azure.identity import (
        CertificateCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    authority = {
        "authority": config.endpoints.authority_host,
        "disable_instance_discovery": config.disable_instance_discovery,
        # azure-identity's own RetryPolicy for token requests: the connection's retry knobs
        "retry_total": config.retry_total,
        "retry_backoff_factor": config.retry_backoff_factor,
        "retry_backoff_max": config.retry_backoff_max,
        "retry_policy_class": TokenRetryPolicy,  # ... except for TLS failures
    }
    if answers is not None:  # azure-core's CustomHookPolicy calls it with every answer
        authority["raw_response_hook"] = answers.record
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


def credential_factory(config: MdeConnectionConfig, answers: EntraAnswers | None = None) -> Callable[[], TokenCredential]:
    """A factory of fresh credentials (each with an empty token cache and its own
    transport): used to get a new token when the service rejects a cached one."""
    return lambda: build_credential(config, answers=answers)
