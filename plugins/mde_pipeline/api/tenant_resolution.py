"""A tenant configured by a verified domain name -> its GUID, from the access token's ``tid``.

Entra ID accepts ``contoso.onmicrosoft.com`` where the GUID goes; the lake partition,
the rows and the fetch cache need the one canonical id (common/tenant_ids.py). The
token is the one the API calls use anyway: the credential caches it, so resolving costs
no extra token request. The token itself never reaches a log or an error.
"""

from __future__ import annotations

import logging

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError

from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import MdeAuthenticationError, MdeConfigurationError, MdeTrustError, aadsts_code
from mde_pipeline.common.redaction import redact
from mde_pipeline.api.tls import is_tls_failure, trust_sources_text
from mde_pipeline.common.tenant_ids import tid_claim

log = logging.getLogger(__name__)


def token_tenant_id(credential: TokenCredential, config: MdeConnectionConfig) -> str:
    """The lower-case GUID of ``config``'s tenant, read from a token of ``credential``.

    Errors are the client's (api/client.py): an untrusted authority ``MdeTrustError``, a
    refusal ``MdeAuthenticationError`` with its AADSTS code (never retried), an authority
    out of reach one without a code (retried), a token without a GUID ``tid`` a
    configuration error.
    """
    authority = config.endpoints.authority_host
    try:
        token = credential.get_token(config.endpoints.scope)
    except ClientAuthenticationError as exc:
        if is_tls_failure(exc):
            raise MdeTrustError(
                f"TLS verification failed for the token authority {authority}: its certificate is not trusted "
                f"by {trust_sources_text(config.ca_bundle)} (add its CA with REQUESTS_CA_BUNDLE or extra ca_bundle)"
            ) from None
        message = redact(str(exc.message or exc), config.secrets())
        raise MdeAuthenticationError(
            f"could not get an access token from {authority} ({config.auth_method}, tenant {config.tenant_id}, "
            f"scope {config.endpoints.scope}): {message[:600]}",
            code=aadsts_code(message),
            request_url=authority,
        ) from None
    except AzureError as exc:
        raise MdeAuthenticationError(
            f"could not get an access token from {authority} to resolve tenant {config.tenant_id!r}: "
            f"{type(exc).__name__}: {redact(str(exc), config.secrets())[:300]}",
            request_url=authority,
        ) from None
    try:
        tenant = tid_claim(token.token)
    except ValueError as exc:  # the message never quotes the token
        raise MdeConfigurationError(
            f"extra tenant_id {config.tenant_id!r} is a domain name and {exc}: set extra tenant_id to the "
            f"tenant's GUID (Entra admin center, Tenant ID)"
        ) from None
    log.info("tenant %s is %s (the access token's tid claim)", config.tenant_id, tenant)
    return tenant
