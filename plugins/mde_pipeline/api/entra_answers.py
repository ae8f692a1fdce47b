"""What Entra ID answered the credential, and the error a failed token request becomes.

azure-identity and MSAL hand a refused token request over as ClientAuthenticationError
with a message and no status: a 400 from the tenant's metadata lookup
(``{authority}/{tenant}/v2.0/.well-known/openid-configuration``: an unknown tenant, the
wrong cloud) reads "Unable to get authority configuration"; a 400 from the token endpoint
"Authentication failed: <Entra's description>", with an AADSTS code or without; a 5xx
after the credential's retries can read much the same. So the credential's pipeline
reports every answer to an :class:`EntraAnswers` (azure-core's ``raw_response_hook``,
api/credentials.py) and :func:`token_request_error` judges by the status of the last one:

* 400 from the metadata, instance-discovery or token endpoint: only the configuration
  can fix it: :class:`MdeEntraConfigurationError`, naming the setting (extra
  ``tenant_id``, ``cloud``/``authority_host``, login = client id, ``scope``);
* 401 (``invalid_client``: a wrong secret or certificate): MdeAuthenticationError with
  status 401 (the operators treat it as configuration too);
* anything else (a 5xx after the retries, no answer at all): MdeAuthenticationError
  without a status: the task's retries apply.

Entra's description names the tenant and the client id, never the secret; it is
redacted anyway.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from mde_pipeline.api.errors import MdeAuthenticationError, MdeEntraConfigurationError, aadsts_code
from mde_pipeline.common.redaction import redact

_CORRELATION = re.compile(r"Correlation ID:\s*([0-9a-fA-F-]{36})")
_MAX_DESCRIPTION = 300

# AADSTS codes of a 400 and the setting they point at (else: every setting that may be it).
_TENANT = "extra tenant_id (the directory (tenant) id of the app registration) and extra cloud / authority_host (the cloud that tenant lives in)"  # noqa: E501
_CLIENT = "login (the application (client) id) and extra tenant_id (the tenant where the app is registered and consented)"  # noqa: E501
_SCOPE = "extra scope and extra cloud (the scope must be the MDE API's of that cloud, ending in /.default)"
_ANY = "extra tenant_id, extra cloud / authority_host, login (the client id) and extra scope"
FIX_BY_CODE = {
    "AADSTS90002": _TENANT,  # tenant not found
    "AADSTS900023": _TENANT,  # tenant identifier neither a GUID nor a domain name
    "AADSTS90019": _TENANT,  # no tenant-identifying information
    "AADSTS50128": _TENANT,  # invalid domain name
    "AADSTS700016": _CLIENT,  # application not found in the directory
    "AADSTS500011": _SCOPE,  # resource principal not found
    "AADSTS1002012": _SCOPE,  # scope without /.default
    "AADSTS70011": _SCOPE,  # invalid scope
}


@dataclass(frozen=True)
class EntraAnswer:
    endpoint: str  # "metadata", "instance discovery", "token" or the path
    status: int
    code: str | None = None
    description: str | None = None
    correlation_id: str | None = None  # what Microsoft support asks for


class EntraAnswers:
    """The last answer Entra gave this thread's token request (the hook never raises)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def forget(self) -> None:
        self._local.last = None

    def last(self) -> EntraAnswer | None:
        return getattr(self._local, "last", None)

    def record(self, response: Any) -> None:
        """azure-core ``raw_response_hook``: called with every PipelineResponse."""
        try:
            path = urlsplit(response.http_request.url).path
            status = int(response.http_response.status_code)
            error = _error_of(response.http_response.text()) if status >= 400 else (None, None, None)
            self._local.last = EntraAnswer(_endpoint(path), status, *error)
        except Exception:  # a hook that fails would fail the token request itself
            self._local.last = None


def _endpoint(path: str) -> str:
    if path.endswith("/.well-known/openid-configuration"):
        return "metadata"
    if path.endswith("/discovery/instance"):
        return "instance discovery"
    return "token" if path.endswith("/token") else path[:80]


def _error_of(text: str) -> tuple[str | None, str | None, str | None]:
    """(AADSTS code, description, correlation id) of an Entra error body."""
    try:
        body = json.loads(text)
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    description = str(body.get("error_description") or body.get("error") or "")
    code = aadsts_code(description)
    codes = body.get("error_codes")
    if code is None and isinstance(codes, list) and codes and isinstance(codes[0], int):
        code = f"AADSTS{codes[0]}"
    correlation = _CORRELATION.search(description)
    correlation_id = body.get("correlation_id") or (correlation.group(1) if correlation else None)
    return code, description[:_MAX_DESCRIPTION] or None, str(correlation_id)[:64] if correlation_id else None


def token_request_error(config: Any, message: str, answer: EntraAnswer | None, url: str,
                        secrets: Iterable[str | None], cause: BaseException | None = None) -> MdeAuthenticationError:  # fmt: skip
    """The error a failed token request of ``config`` becomes (see the module doc)."""
    secrets = list(secrets)
    message = redact(message, secrets)
    where = (f"{config.endpoints.authority_host} ({config.auth_method}, tenant {config.tenant_id}, "
             f"client id {config.client_id}, scope {config.endpoints.scope})")  # fmt: skip
    correlation = _CORRELATION.search(message)
    target = (answer.correlation_id if answer else None) or (correlation.group(1) if correlation else None)
    if answer is not None and answer.status == 400 and answer.endpoint in ("metadata", "instance discovery", "token"):
        code = answer.code or aadsts_code(message)
        fix = _TENANT if answer.endpoint != "token" else FIX_BY_CODE.get(code or "", _ANY)
        said = redact(answer.description or message, secrets)[:_MAX_DESCRIPTION]
        return MdeEntraConfigurationError(
            f"Entra ID refused the {answer.endpoint} request for {where} with HTTP 400: check {fix}. "
            f"Entra said: {said}",
            status=400, code=code, target=target, request_url=url,
        )  # fmt: skip
    if answer is None and isinstance(cause, ValueError):
        # MSAL refused the authority before asking anybody (a malformed authority or tenant).
        return MdeEntraConfigurationError(
            f"the token authority refused {where} before any request: check {_TENANT}: {message[:600]}",
            code=aadsts_code(message), request_url=url,
        )  # fmt: skip
    status = answer.status if answer is not None and answer.status == 401 else None
    return MdeAuthenticationError(
        f"could not get an access token from {where}: {message[:600]}",
        status=status, code=(answer.code if answer is not None else None) or aadsts_code(message),
        target=target, request_url=url,
    )  # fmt: skip
