"""Typed errors of the MDE API client, and the mapping from an HTTP answer to them.

Every error keeps what a user needs to act (HTTP status, the service's error code, the
correlation id the service returns as ``target``, the request URL without its query)
and never a token or a secret: messages pass through :func:`redact` before they are
stored, and the service's message is trimmed.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mde_pipeline.common.redaction import redact

# What the service answers 403 for, by API path: the application permission to grant.
PERMISSION_BY_PATH = (
    (re.compile(r"^/api/alerts/[^/]+/ips/?$"), "Ip.Read.All"),
    (re.compile(r"^/api/alerts/?$"), "Alert.Read.All"),
    (re.compile(r"^/api/alerts/[^/]+/?$"), "Alert.Read.All"),
)

_MAX_SERVICE_MESSAGE = 400
# JWTs (access tokens, client assertions) and "Bearer xyz" never reach a message.
_AADSTS = re.compile(r"\bAADSTS\d{4,}\b")
# OData query parameters are safe to show (they are our own $filter/$top/...);
# anything else in a query string is dropped from URLs kept in errors and logs.
_SHOWN_QUERY_PREFIX = "$"


class MdeApiError(Exception):
    """A call to the MDE API (or its token endpoint) failed.

    ``status``: HTTP status or None (no answer); ``code``: the service's error code;
    ``target``: the service's correlation id (what Microsoft support asks for);
    ``request_url``: the URL called, without non-OData query parameters.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        target: str | None = None,
        request_url: str | None = None,
    ) -> None:
        self.message = redact(message)
        self.status = status
        self.code = redact(code) if code else code
        self.target = redact(target) if target else target
        self.request_url = safe_url(request_url) if request_url else request_url
        super().__init__(self.message)

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.code:
            details.append(f"code={self.code}")
        if self.target:
            details.append(f"target={self.target}")
        if self.request_url:
            details.append(f"url={self.request_url}")
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r}, "
            f"target={self.target!r}, request_url={self.request_url!r})"
        )

    def _init_kwargs(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "target": self.target,
            "request_url": self.request_url,
        }

    def __reduce__(self):
        # Exceptions with keyword-only arguments do not pickle by default; Airflow and
        # multiprocessing may ship them across processes.
        return (_rebuild, (type(self), self.message, self._init_kwargs()))


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


class MdeAuthenticationError(MdeApiError):
    """Token request refused (bad secret or certificate, wrong tenant) or a 401 that a
    fresh token did not cure."""


class MdePermissionError(MdeApiError):
    """403: the token is valid but the application lacks the permission named in
    ``permission`` (Ip.Read.All for /ips, Alert.Read.All for /alerts)."""

    def __init__(self, message: str, *, permission: str | None = None, **kwargs: Any) -> None:
        self.permission = permission
        super().__init__(message, **kwargs)

    def _init_kwargs(self) -> dict[str, Any]:
        return {**super()._init_kwargs(), "permission": self.permission}


class MdeNotFoundError(MdeApiError):
    """404: the resource (for /ips: the alert) does not exist or is past retention."""


class MdeThrottledError(MdeApiError):
    """429 beyond the throttle budget (``max_throttle_wait_seconds``).

    ``retry_after``: seconds the service (or the shared ledger) asked to wait.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)

    def _init_kwargs(self) -> dict[str, Any]:
        return {**super()._init_kwargs(), "retry_after": self.retry_after}


class MdeServerError(MdeApiError):
    """5xx/408 after retries, connection errors, TLS failures and timeouts."""


class MdeUnexpectedNotFoundError(MdeServerError):
    """404 whose body is not the service's error JSON (a proxy's HTML page, an empty body,
    a wrong host): never read as "alert gone". Retried within retry_total first."""


class MdeMostlyNotFoundError(MdeApiError):
    """Most alerts of a batch came back "not found": more likely a wrong host or a proxy
    than a mass deletion, so the run stops instead of committing an hour of nothing."""


class MdeTooManyFailedAlertsError(MdeApiError):
    """More alerts of a batch failed for good than one poison alert explains: an outage,
    not a bad alert, so the batch fails (and its task retries) instead of recording them."""


class MdeBadRequestError(MdeApiError):
    """400: the service rejected the request (for example an invalid $filter)."""


class MdeMalformedResponseError(MdeApiError):
    """The body is not the documented JSON (never treated as an empty result)."""


class MdeConfigurationError(ValueError):
    """Only a change of configuration can fix this (the connection, a CA bundle); never retried.

    The message says what to fix."""


class MdeEntraConfigurationError(MdeAuthenticationError, MdeConfigurationError):
    """Entra ID answered 400 to the tenant's metadata lookup or to the token request (an
    unknown tenant, the wrong cloud, an unknown client id or scope), or MSAL refused the
    authority: an authentication error that only the configuration can fix; the message
    names the setting (api/entra_answers.py)."""


class MdeTrustError(MdeConfigurationError):
    """TLS verification failed: the server's certificate is not trusted by the bundle named."""


class InvalidAlertIdError(ValueError):
    """An alert id that could change a request path (or is not an MDE id at all)."""


def safe_url(url: str) -> str:
    """The URL with only OData ($...) query parameters kept, and no user info."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    # For display only (errors, logs): decoded spaces read better than %20.
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.startswith(_SHOWN_QUERY_PREFIX)],
        safe="$ ',():",
        quote_via=quote,
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def aadsts_code(message: str) -> str | None:
    """The first AADSTS error code in an Entra ID error message, if any."""
    match = _AADSTS.search(message or "")
    return match.group(0) if match else None


def permission_for_path(path: str) -> str | None:
    for pattern, permission in PERMISSION_BY_PATH:
        if pattern.match(path):
            return permission
    return None


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, target) from ``{"error": {...}}``; Nones when the body is not that."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, None, None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None, None, None

    def text(key: str) -> str | None:
        value = error.get(key)
        return str(value)[:_MAX_SERVICE_MESSAGE] if value is not None else None

    return text("code"), text("message"), text("target")


def is_service_error(content_type: str | None, body: bytes) -> bool:
    """True when an answer is the service's own error: a JSON (or untyped) body shaped
    ``{"error": {"code": "<text>", ...}}``. An HTML page, an empty body or other JSON is
    not: a proxy or another host said it, not MDE (API_NOTES "Errors")."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        return False
    code, _, _ = parse_error_body(body)
    return bool(code and code.strip())


def is_service_error_answer(http_response: Any) -> bool:
    """:func:`is_service_error` of an azure-core response (pipeline or rest)."""
    body = http_response.body() if callable(getattr(http_response, "body", None)) else http_response.content
    return is_service_error(http_response.headers.get("Content-Type"), body or b"")


def error_from_response(
    status: int,
    body: bytes,
    url: str,
    *,
    retry_after: float | None = None,
    secrets: Iterable[str | None] = (),
    content_type: str | None = None,
) -> MdeApiError:
    """The typed error for a non-2xx answer from the API."""
    code, service_message, target = parse_error_body(body)
    secrets = list(secrets)
    service_message = redact(service_message or "", secrets)
    suffix = f": {service_message}" if service_message else ""
    common = {"status": status, "code": code, "target": target, "request_url": url}
    path = urlsplit(url).path

    if status == 400:
        return MdeBadRequestError(f"MDE API rejected the request{suffix}", **common)
    if status == 401:
        return MdeAuthenticationError(
            "MDE API refused the access token even after a fresh token was fetched; check the "
            f"tenant id, the cloud/scope and the app registration{suffix}",
            **common,
        )
    if status == 403:
        permission = permission_for_path(path)
        need = (
            f"the application permission {permission} (admin consent granted) is missing"
            if permission
            else "the application lacks the permission for this API"
        )
        return MdePermissionError(f"MDE API forbids the call: {need}{suffix}", permission=permission, **common)
    if status == 404 and not is_service_error(content_type, body):
        return MdeUnexpectedNotFoundError(
            f"{urlsplit(url).netloc} answered 404 without the MDE API's error body (a proxy, or not the "
            "MDE API at all: check the connection's host and any proxy in between); not read as 'alert gone'",
            **common,
        )
    if status == 404:
        return MdeNotFoundError(f"MDE API found no such resource{suffix}", **common)
    if status == 429:
        wait = f"; service asked to retry after {retry_after:g}s" if retry_after is not None else ""
        return MdeThrottledError(
            f"MDE API throttled the call beyond the wait budget{wait}{suffix}", retry_after=retry_after, **common
        )
    if status == 408 or status >= 500:
        return MdeServerError(f"MDE API failed after retries{suffix}", **common)
    return MdeApiError(f"MDE API answered an unexpected status{suffix}", **common)
