"""MDE API client: an azure-core pipeline and one method per API call.

Pipeline, outermost first (a request runs down the list, the response back up)::

    HeadersPolicy            User-Agent, Accept
    MdeRetryPolicy           408/5xx, connection errors, read timeouts: retry_total
                             retries with exponential backoff; 429: retried for as long
                             as the Retry-After waits add up to max_throttle_wait_seconds
    RefreshingBearerPolicy   token from azure-identity (cached, refreshed before expiry);
                             a 401 gets one re-send with a freshly fetched token
    RateLimitPolicy          reserves a ledger slot for EVERY attempt (retries and
                             re-sends included), settles it when the attempt ends;
                             records a 429's Retry-After in the ledger
    RequestLoggingPolicy     method, URL without secrets, status, attempt: never headers
    RequestsTransport        TLS verified against certifi + extra CAs, connect/read timeouts

What azure-core's RetryPolicy does on its own (read in azure-core 1.41 source): it
honours Retry-After without a cap (``retry_backoff_max`` caps only the exponential
backoff), retries any status >= 400 that carries Retry-After, counts a 429 against
``retry_status`` (3 by default) and sleeps with ``time.sleep``; its ``timeout`` is an
absolute deadline across all attempts and sleeps (7 days by default). We subclass it
so that (a) a 429 does not use up the few status retries but a time budget
(max_throttle_wait_seconds, default 3,900 s: more than the hourly window), (b) the
Retry-After wait happens in the rate limiter -- in the shared ledger, so every caller
on the host waits, not only the one that was throttled -- and (c) 4xx other than
408/429 are never retried even with a Retry-After header.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit

import requests
from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    HTTPPolicy,
    RequestHistory,
    RetryPolicy,
)
from azure.core.pipeline.policies._utils import get_retry_after
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest

from mde_pipeline import __version__
from mde_pipeline.clouds import Endpoints, resolve_endpoints
from mde_pipeline.credentials import AUTH_METHODS, build_credential, build_transport, credential_factory
from mde_pipeline.errors import (
    InvalidAlertIdError,
    MdeApiError,
    MdeAuthenticationError,
    MdeMalformedResponseError,
    MdeServerError,
    aadsts_code,
    error_from_response,
    redact,
    safe_url,
)
from mde_pipeline.rate_limiter import (
    DEFAULT_MARGIN_SECONDS,
    Clock,
    InMemoryLedger,
    Ledger,
    RateLimiter,
    SqliteLedger,
    SystemClock,
    Window,
    default_ledger_dir,
    ledger_key,
    parse_rate_limits,
    LEDGER_FILE_NAME,
)

log = logging.getLogger(__name__)

USER_AGENT = f"mde-alert-ips-airflow/{__version__}"
MAX_TOP = 10_000
# A 429 without Retry-After (never seen from MDE, but possible from a proxy).
DEFAULT_THROTTLE_WAIT_SECONDS = 60.0
# A service answering 429 with "Retry-After: 0" forever must not loop forever.
MAX_THROTTLE_RETRIES = 100
ALERT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CORRELATION = re.compile(r"Correlation ID:\s*([0-9a-fA-F-]{36})")

# --------------------------------------------------------------------------- config

KNOWN_EXTRA_KEYS = frozenset(
    {
        "tenant_id", "cloud", "authority_host", "scope", "rate_limits", "rate_limit_margin_seconds",
        "rate_limit_share", "rate_limit_ledger_dir", "rate_limit_ledger", "timeout", "connect_timeout",
        "read_timeout", "retry_total", "retry_backoff_factor", "retry_backoff_max", "max_throttle_wait_seconds",
        "certificate_path", "certificate_data", "certificate_password", "managed_identity_client_id",
        "use_managed_identity", "use_workload_identity", "federated_token_file", "disable_instance_discovery",
        "ca_bundle",
    }
)  # fmt: skip


class MdeConfigurationError(ValueError):
    """The connection does not describe a usable MDE client; the message says what to fix."""


def _number(extra: Mapping[str, Any], key: str, default: float, *, minimum: float = 0.0) -> float:
    value = extra.get(key, default)
    if value is None or value == "":
        return default
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number != number or number < minimum:
        raise MdeConfigurationError(f"extra {key} must be a number >= {minimum:g}, got {value!r}")
    return number


def _integer(extra: Mapping[str, Any], key: str, default: int) -> int:
    number = _number(extra, key, default)
    if not float(number).is_integer():
        raise MdeConfigurationError(f"extra {key} must be a whole number, got {extra.get(key)!r}")
    return int(number)


def _flag(extra: Mapping[str, Any], key: str, default: bool | None) -> bool | None:
    value = extra.get(key, default)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise MdeConfigurationError(f"extra {key} must be true or false, got {value!r}")


def _text(extra: Mapping[str, Any], key: str) -> str | None:
    value = extra.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MdeConfigurationError(f"extra {key} must be a string")
    return value.strip() or None


def _timeouts(extra: Mapping[str, Any]) -> tuple[float, float]:
    connect, read = 10.0, 60.0
    value = extra.get("timeout")
    if isinstance(value, Mapping):
        connect = _number(value, "connect", connect, minimum=0.001)
        read = _number(value, "read", read, minimum=0.001)
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise MdeConfigurationError("extra timeout as a list must be [connect, read]")
        connect = _number({"timeout": value[0]}, "timeout", connect, minimum=0.001)
        read = _number({"timeout": value[1]}, "timeout", read, minimum=0.001)
    elif value is not None:
        connect = read = _number(extra, "timeout", read, minimum=0.001)
    connect = _number(extra, "connect_timeout", connect, minimum=0.001)
    read = _number(extra, "read_timeout", read, minimum=0.001)
    return connect, read


@dataclass(frozen=True)
class MdeConnectionConfig:
    """A parsed, validated ``mde_default`` connection. Secrets are kept out of repr."""

    tenant_id: str
    client_id: str | None
    endpoints: Endpoints
    auth_method: str
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: str | None = None
    certificate_data: str | None = field(default=None, repr=False)
    certificate_password: str | None = field(default=None, repr=False)
    managed_identity_client_id: str | None = None
    federated_token_file: str | None = None
    disable_instance_discovery: bool = False
    rate_limits: tuple[Window, ...] = parse_rate_limits(None)
    rate_limit_margin_seconds: float = DEFAULT_MARGIN_SECONDS
    rate_limit_share: float = 1.0
    rate_limit_ledger: str = "sqlite"
    rate_limit_ledger_dir: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry_total: int = 5
    retry_backoff_factor: float = 0.8
    retry_backoff_max: float = 60.0
    max_throttle_wait_seconds: float = 3900.0
    ca_bundle: tuple[str, ...] = ()
    conn_id: str | None = None

    @property
    def api_base_url(self) -> str:
        return self.endpoints.api_base_url

    @property
    def budget_key(self) -> str:
        """Whose budget the calls spend: the service counts per application + tenant."""
        principal = self.client_id or self.managed_identity_client_id or "system-assigned-identity"
        return ledger_key(self.tenant_id, principal)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.client_secret, self.certificate_password, self.certificate_data) if s)

    @classmethod
    def from_parts(
        cls,
        *,
        host: str | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any] | str | None,
        conn_id: str | None = None,
    ) -> "MdeConnectionConfig":
        """Build from a connection's fields (host, login = client id, password =
        client secret, extra as dict or JSON text)."""
        where = f"connection {conn_id!r}" if conn_id else "MDE connection"
        if isinstance(extra, str):
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except ValueError:
                raise MdeConfigurationError(f"{where}: extra is not valid JSON") from None
        extra = dict(extra or {})
        if not isinstance(extra, dict):
            raise MdeConfigurationError(f"{where}: extra must be a JSON object")
        unknown = sorted(set(extra) - KNOWN_EXTRA_KEYS)
        if unknown:
            log.warning("%s: ignoring unknown extra key(s) %s", where, ", ".join(unknown))
        if "verify" in extra or "connection_verify" in extra:
            raise MdeConfigurationError(
                f"{where}: TLS verification cannot be turned off; add your CA with REQUESTS_CA_BUNDLE "
                "or extra ca_bundle"
            )
        try:
            return cls._from_extra(host=host, login=login, password=password, extra=extra, conn_id=conn_id)
        except MdeConfigurationError as exc:
            raise MdeConfigurationError(f"{where}: {exc}") from None
        except ValueError as exc:  # from clouds / rate_limiter validation
            raise MdeConfigurationError(f"{where}: {exc}") from None

    @classmethod
    def _from_extra(cls, *, host, login, password, extra, conn_id) -> "MdeConnectionConfig":
        tenant_id = _text(extra, "tenant_id")
        if not tenant_id:
            raise MdeConfigurationError("extra tenant_id is required (the Entra ID tenant of the app)")
        client_id = (login or "").strip() or None
        client_secret = password or None

        certificate_path = _text(extra, "certificate_path")
        certificate_data = extra.get("certificate_data") or None
        if certificate_data is not None and not isinstance(certificate_data, str):
            raise MdeConfigurationError("extra certificate_data must be PEM text")
        use_mi = _flag(extra, "use_managed_identity", False)
        use_wi = _flag(extra, "use_workload_identity", False)
        chosen = [
            name
            for name, wanted in (
                ("use_managed_identity", use_mi),
                ("use_workload_identity", use_wi),
                ("certificate_path/certificate_data", bool(certificate_path or certificate_data)),
            )
            if wanted
        ]
        if len(chosen) > 1 or (chosen and client_secret):
            both = chosen + (["password (client secret)"] if client_secret else [])
            raise MdeConfigurationError(f"choose one way to authenticate, got: {', '.join(both)}")
        if certificate_path and certificate_data:
            raise MdeConfigurationError("set certificate_path or certificate_data, not both")

        if use_mi:
            auth_method = "managed_identity"
        elif use_wi:
            auth_method = "workload_identity"
            if not client_id:
                raise MdeConfigurationError("login (client id of the federated app) is required for workload identity")
        elif certificate_path or certificate_data:
            auth_method = "certificate"
            if not client_id:
                raise MdeConfigurationError("login (the app's client id) is required with a certificate")
        else:
            auth_method = "client_secret"
            if not client_id:
                raise MdeConfigurationError("login (the app's client id) is required")
            if not client_secret:
                raise MdeConfigurationError(
                    "password (the client secret) is required; or set certificate_path/certificate_data, "
                    "use_managed_identity or use_workload_identity in extra"
                )
        assert auth_method in AUTH_METHODS

        endpoints = resolve_endpoints(
            cloud=_text(extra, "cloud"),
            host=(host or "").strip() or None,
            authority_host=_text(extra, "authority_host"),
            scope=_text(extra, "scope"),
        )
        discovery_off = _flag(extra, "disable_instance_discovery", None)
        if discovery_off is None:
            discovery_off = not endpoints.authority_is_known

        rate_limits = extra.get("rate_limits")
        if isinstance(rate_limits, str):
            try:
                rate_limits = json.loads(rate_limits)
            except ValueError:
                raise MdeConfigurationError("extra rate_limits is not JSON") from None
        ledger = (_text(extra, "rate_limit_ledger") or "sqlite").lower()
        if ledger not in ("sqlite", "memory"):
            raise MdeConfigurationError("extra rate_limit_ledger must be 'sqlite' or 'memory'")
        share = _number(extra, "rate_limit_share", 1.0)
        if not 0 < share <= 1:
            raise MdeConfigurationError(f"extra rate_limit_share must be in (0, 1], got {share!r}")
        ca_bundle = extra.get("ca_bundle") or ()
        if isinstance(ca_bundle, str):
            ca_bundle = (ca_bundle,)
        if not isinstance(ca_bundle, (list, tuple)) or not all(isinstance(p, str) and p for p in ca_bundle):
            raise MdeConfigurationError("extra ca_bundle must be a path or a list of paths")
        connect_timeout, read_timeout = _timeouts(extra)

        return cls(
            tenant_id=tenant_id,
            client_id=client_id,
            endpoints=endpoints,
            auth_method=auth_method,
            client_secret=client_secret if auth_method == "client_secret" else None,
            certificate_path=certificate_path,
            certificate_data=certificate_data,
            certificate_password=extra.get("certificate_password") or None,
            managed_identity_client_id=_text(extra, "managed_identity_client_id"),
            federated_token_file=_text(extra, "federated_token_file"),
            disable_instance_discovery=discovery_off,
            rate_limits=parse_rate_limits(rate_limits),
            rate_limit_margin_seconds=_number(extra, "rate_limit_margin_seconds", DEFAULT_MARGIN_SECONDS),
            rate_limit_share=share,
            rate_limit_ledger=ledger,
            rate_limit_ledger_dir=_text(extra, "rate_limit_ledger_dir"),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry_total=_integer(extra, "retry_total", 5),
            retry_backoff_factor=_number(extra, "retry_backoff_factor", 0.8),
            retry_backoff_max=_number(extra, "retry_backoff_max", 60.0),
            max_throttle_wait_seconds=_number(extra, "max_throttle_wait_seconds", 3900.0),
            ca_bundle=tuple(ca_bundle),
            conn_id=conn_id,
        )


# --------------------------------------------------------------------------- stats


@dataclass
class ClientStats:
    """What one client spent: attempts sent, 429s seen, retried attempts, and seconds
    waited (for budget, for Retry-After, or backing off)."""

    calls: int = 0
    throttled: int = 0
    retries: int = 0
    wait_seconds: float = 0.0

    def __post_init__(self) -> None:
        # Not a field: dataclasses.asdict()/replace() of stats must keep working.
        self._lock = threading.Lock()

    def add(self, *, calls: int = 0, throttled: int = 0, retries: int = 0, wait_seconds: float = 0.0) -> None:
        with self._lock:
            self.calls += calls
            self.throttled += throttled
            self.retries += retries
            self.wait_seconds += wait_seconds

    def snapshot(self) -> "ClientStats":
        with self._lock:
            return ClientStats(self.calls, self.throttled, self.retries, self.wait_seconds)


# --------------------------------------------------------------------------- policies


def throttle_delay(http_response) -> float:
    """Seconds a 429 asks us to wait (Retry-After, or a default when absent)."""
    fake = PipelineResponse(None, http_response, None)  # get_retry_after only reads headers
    delay = get_retry_after(fake)
    return DEFAULT_THROTTLE_WAIT_SECONDS if delay is None else delay


class MdeRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy with a time budget for 429s and a sleep through the clock seam."""

    def __init__(self, *, clock: Clock, stats: ClientStats, max_throttle_wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._stats = stats
        self.max_throttle_wait_seconds = max_throttle_wait_seconds

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["throttle_wait"] = 0.0
        settings["throttle_retries"] = 0
        return settings

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse) -> bool:
        status = response.http_response.status_code
        if status == 429:
            delay = throttle_delay(response.http_response)
            return (
                settings["throttle_wait"] + delay <= self.max_throttle_wait_seconds
                and settings["throttle_retries"] < MAX_THROTTLE_RETRIES
            )
        if status < 500 and status != 408:
            return False  # azure-core would retry any 4xx carrying Retry-After
        return super().is_retry(settings, response)

    def increment(self, settings: dict[str, Any], response=None, error=None) -> bool:
        if error is None and isinstance(response, PipelineResponse) and response.http_response.status_code == 429:
            # Throttling spends the time budget, not the retry count.
            settings["throttle_wait"] += throttle_delay(response.http_response)
            settings["throttle_retries"] += 1
            settings["history"].append(RequestHistory(response.http_request, http_response=response.http_response))
            return True
        return super().increment(settings, response=response, error=error)

    def sleep(self, settings: dict[str, Any], transport: HttpTransport, response: PipelineResponse | None = None) -> None:
        if response is not None and response.http_response.status_code == 429:
            return  # RateLimitPolicy put Retry-After in the ledger; the next reservation waits it out
        delay = self.get_retry_after(response) if response is not None else None
        if delay is None:
            delay = self.get_backoff_time(settings)
        delay = min(delay, self.max_throttle_wait_seconds)
        if delay > 0:
            self._clock.sleep(delay)
            self._stats.add(wait_seconds=delay)


class RefreshingBearerPolicy(BearerTokenCredentialPolicy):
    """BearerTokenCredentialPolicy plus one re-send after a 401 with a *fresh* token.

    A 401 means the service rejected a token our cache still thinks valid (revoked,
    clock skew, signing-key rollover). MSAL refuses ``force_refresh`` for app tokens,
    so a new credential (empty cache) fetches a new token. A second 401 is returned
    as is and becomes MdeAuthenticationError.
    """

    def __init__(self, credential: TokenCredential, *scopes: str, fresh_credential: Callable[[], TokenCredential] | None):
        super().__init__(credential, *scopes)
        self._fresh_credential = fresh_credential
        self._credential_lock = threading.Lock()

    @property
    def credential(self) -> TokenCredential:
        return self._credential

    def send(self, request: PipelineRequest) -> PipelineResponse:
        self.on_request(request)
        response = self.next.send(request)
        if response.http_response.status_code != 401 or self._fresh_credential is None:
            return response
        log.info("MDE API answered 401; fetching a new token and sending once more")
        with self._credential_lock:
            stale, self._credential = self._credential, self._fresh_credential()
            self._token = None
        _close(stale)
        self.on_request(request)
        return self.next.send(request)


class RateLimitPolicy(HTTPPolicy):
    """Every attempt reserves a slot first; a 429 blocks the shared budget."""

    def __init__(self, limiter: RateLimiter, stats: ClientStats) -> None:
        super().__init__()
        self._limiter = limiter
        self._stats = stats

    def send(self, request: PipelineRequest) -> PipelineResponse:
        slot = self._limiter.acquire()
        attempt = request.context.get("mde_attempt", 0) + 1
        request.context["mde_attempt"] = attempt
        self._stats.add(calls=1, retries=int(attempt > 1), wait_seconds=slot.waited_seconds)
        try:
            response = self.next.send(request)
        finally:
            self._limiter.settle(slot)  # the request arrived before now, whatever happened
        if response.http_response.status_code == 429:
            delay = throttle_delay(response.http_response)
            self._limiter.record_throttle(delay)
            self._stats.add(throttled=1)
            log.warning(
                "MDE API throttled %s (429); every caller of this budget waits %.1fs (Retry-After)",
                safe_url(request.http_request.url),
                delay,
            )
        return response


class RequestLoggingPolicy(HTTPPolicy):
    """One line per attempt: method, URL (OData query only), status, duration, attempt.
    Never headers or bodies (the Authorization header carries the token)."""

    def send(self, request: PipelineRequest) -> PipelineResponse:
        started = time.monotonic()
        url = safe_url(request.http_request.url)
        attempt = request.context.get("mde_attempt", 1)
        try:
            response = self.next.send(request)
        except AzureError as exc:
            log.warning("%s %s failed on attempt %d: %s", request.http_request.method, url, attempt, type(exc).__name__)
            raise
        status = response.http_response.status_code
        level = logging.DEBUG if status < 400 or status == 404 else logging.WARNING
        log.log(level, "%s %s -> %d in %.2fs (attempt %d)", request.http_request.method, url, status,
                time.monotonic() - started, attempt)  # fmt: skip
        return response


def _close(resource: Any) -> None:
    close = getattr(resource, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing a stale credential must not fail a call
            log.debug("closing %s failed", type(resource).__name__, exc_info=True)


# --------------------------------------------------------------------------- client


def validate_alert_id(alert_id: object) -> str:
    """The id if it looks like an MDE alert id; never one that could alter a path."""
    if not isinstance(alert_id, str) or not ALERT_ID_PATTERN.fullmatch(alert_id) or ".." in alert_id:
        shown = repr(alert_id)[:80]
        raise InvalidAlertIdError(
            f"refusing alert id {shown}: expected 1-128 characters of letters, digits, '_', '-', '.'"
        )
    return alert_id


_ODATA_SAFE = "$',():-."


def _odata_query(params: list[tuple[str, str]]) -> str:
    # Spaces as %20 (not '+'), OData punctuation kept readable.
    return "&".join(f"{key}={quote(value, safe=_ODATA_SAFE)}" for key, value in params)


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ssl.SSLError, requests.exceptions.SSLError)):
            return True
        inner = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
        current = inner if isinstance(inner, BaseException) else None
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


class MdeClient:
    """Calls the MDE API for one connection (one tenant, one budget).

    Thread-safe for concurrent calls; close() when done (or use as a context manager).
    """

    def __init__(
        self,
        config: MdeConnectionConfig,
        *,
        credential: TokenCredential | None = None,
        clock: Clock | None = None,
        ledger: Ledger | None = None,
        transport: HttpTransport | None = None,
    ) -> None:
        self.config = config
        self.stats = ClientStats()
        self._clock = clock or SystemClock()
        if ledger is None:
            if config.rate_limit_ledger == "memory":
                ledger = InMemoryLedger()
            else:
                ledger = SqliteLedger(f"{default_ledger_dir(config.rate_limit_ledger_dir)}/{LEDGER_FILE_NAME}")
        self._ledger = ledger
        self.limiter = RateLimiter(
            config.rate_limits,
            key=config.budget_key,
            ledger=ledger,
            clock=self._clock,
            margin_seconds=config.rate_limit_margin_seconds,
            share=config.rate_limit_share,
            max_blocked_wait=config.max_throttle_wait_seconds,
        )
        # An injected credential is not ours to rebuild; ours is rebuilt on a 401.
        fresh = None if credential is not None else credential_factory(config)
        self._auth_policy = RefreshingBearerPolicy(
            credential or build_credential(config), config.endpoints.scope, fresh_credential=fresh
        )
        retries = config.retry_total
        policies = [
            HeadersPolicy({"User-Agent": USER_AGENT, "Accept": "application/json"}),
            MdeRetryPolicy(
                clock=self._clock,
                stats=self.stats,
                max_throttle_wait_seconds=config.max_throttle_wait_seconds,
                retry_total=retries,
                retry_connect=retries,
                retry_read=retries,
                retry_status=retries,
                retry_backoff_factor=config.retry_backoff_factor,
                retry_backoff_max=config.retry_backoff_max,
            ),
            self._auth_policy,
            RateLimitPolicy(self.limiter, self.stats),
            RequestLoggingPolicy(),
        ]
        self._pipeline_client = PipelineClient(
            config.api_base_url, policies=policies, transport=transport or build_transport(config)
        )

    @property
    def tenant_id(self) -> str:
        return self.config.tenant_id

    def __enter__(self) -> "MdeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pipeline_client.close()
        _close(self._auth_policy.credential)
        if isinstance(self._ledger, SqliteLedger):
            self._ledger.close()

    def __repr__(self) -> str:
        return f"MdeClient(api={self.config.api_base_url!r}, tenant_id={self.tenant_id!r})"

    # ------------------------------------------------------------------ API calls

    def list_alerts_page(
        self,
        *,
        filter: str | None,
        top: int,
        skip: int = 0,
        orderby: str | None = "lastUpdateTime asc",
        expand: str | None = None,
    ) -> dict:
        """One GET /api/alerts page: the parsed JSON, ``value`` checked to be a list of
        objects; may hold ``@odata.nextLink``."""
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
            raise ValueError(f"top must be an integer between 1 and {MAX_TOP}, got {top!r}")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError(f"skip must be an integer >= 0, got {skip!r}")
        params: list[tuple[str, str]] = []
        if filter:
            params.append(("$filter", filter))
        if orderby:
            params.append(("$orderby", orderby))
        params.append(("$top", str(top)))
        if skip:
            params.append(("$skip", str(skip)))
        if expand:
            params.append(("$expand", expand))
        url = f"{self.config.api_base_url}/api/alerts?{_odata_query(params)}"
        return self._alerts_page(self._get(url), url)

    def get_next_link(self, url: str) -> dict:
        """Follow an ``@odata.nextLink``: only to the API's own scheme, host and port."""
        if not isinstance(url, str):
            raise MdeMalformedResponseError("@odata.nextLink is not a string")
        link, base = urlsplit(url), urlsplit(self.config.api_base_url)
        if (link.scheme.lower(), link.netloc.lower()) != (base.scheme, base.netloc) or not link.path.startswith("/api/"):
            raise MdeMalformedResponseError(
                "refusing @odata.nextLink outside the API base URL (the bearer token would go elsewhere)",
                request_url=f"{link.scheme}://{link.netloc}{link.path}",
            )
        return self._alerts_page(self._get(url), url)

    def get_alert_ips(self, alert_id: str) -> list[str] | None:
        """The raw ``id`` strings of GET /api/alerts/{id}/ips; None if the alert is gone (404)."""
        url = f"{self.config.api_base_url}/api/alerts/{quote(validate_alert_id(alert_id), safe='')}/ips"
        body = self._get(url, not_found_ok=True)
        if body is None:
            return None
        document = self._json(body, url)
        values = self._value_list(document, url)
        ips = []
        for index, item in enumerate(values):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise MdeMalformedResponseError(
                    f"ips value[{index}] is not an object with a string 'id': {str(item)[:80]!r}", request_url=url
                )
            ips.append(item["id"])
        return ips

    # ------------------------------------------------------------------ plumbing

    def _alerts_page(self, body: bytes | None, url: str) -> dict:
        document = self._json(body or b"", url)
        values = self._value_list(document, url)
        for index, item in enumerate(values):
            if not isinstance(item, dict):
                raise MdeMalformedResponseError(f"alerts value[{index}] is not an object", request_url=url)
        link = document.get("@odata.nextLink")
        if link is not None and not isinstance(link, str):
            raise MdeMalformedResponseError("@odata.nextLink is not a string", request_url=url)
        return document

    @staticmethod
    def _json(body: bytes, url: str) -> Any:
        def refuse_constant(name: str) -> None:
            raise ValueError(f"non-JSON constant {name}")

        try:
            return json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
        except (UnicodeDecodeError, ValueError):
            raise MdeMalformedResponseError(
                f"response body is not valid JSON ({len(body)} bytes)", request_url=url
            ) from None

    @staticmethod
    def _value_list(document: Any, url: str) -> list:
        if not isinstance(document, dict) or not isinstance(document.get("value"), list):
            raise MdeMalformedResponseError("response JSON has no 'value' list", request_url=url)
        return document["value"]

    def _get(self, url: str, *, not_found_ok: bool = False) -> bytes | None:
        request = HttpRequest("GET", url)
        secrets = self.config.secrets()
        try:
            response = self._pipeline_client.send_request(request)
        except MdeApiError as exc:  # raised inside the pipeline (the limiter)
            if exc.request_url is None:
                exc.request_url = safe_url(url)
            raise
        except ClientAuthenticationError as exc:
            if _is_tls_failure(exc):
                raise MdeServerError(
                    f"TLS verification failed for the token authority {self.config.endpoints.authority_host}: "
                    "its certificate is not trusted (add the CA with REQUESTS_CA_BUNDLE or extra ca_bundle; "
                    "verification stays on)",
                    request_url=url,
                ) from None
            message = redact(str(exc.message or exc), secrets)
            correlation = _CORRELATION.search(message)
            raise MdeAuthenticationError(
                f"could not get an access token from {self.config.endpoints.authority_host} "
                f"({self.config.auth_method}, tenant {self.tenant_id}, scope {self.config.endpoints.scope}): "
                f"{message[:600]}",
                code=aadsts_code(message),
                target=correlation.group(1) if correlation else None,
                request_url=url,
            ) from None
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as exc:
            kind = "connect" if isinstance(exc, ServiceRequestTimeoutError) else "read"
            raise MdeServerError(
                f"MDE API timed out ({kind} timeout; connect {self.config.connect_timeout:g}s, "
                f"read {self.config.read_timeout:g}s) (retry_total={self.config.retry_total})",
                request_url=url,
            ) from None
        except ServiceRequestError as exc:
            if _is_tls_failure(exc):
                raise MdeServerError(
                    f"TLS verification failed for {urlsplit(url).netloc}: the server certificate is not "
                    "trusted (add its CA with REQUESTS_CA_BUNDLE or extra ca_bundle; verification stays on)",
                    request_url=url,
                ) from None
            raise MdeServerError(
                f"could not connect to the MDE API (retry_total={self.config.retry_total}): "
                f"{redact(str(exc), secrets)[:300]}",
                request_url=url,
            ) from None
        except ServiceResponseError as exc:
            raise MdeServerError(
                f"MDE API connection dropped before a complete response "
                f"(retry_total={self.config.retry_total}): {redact(str(exc), secrets)[:300]}",
                request_url=url,
            ) from None
        except AzureError as exc:
            raise MdeServerError(
                f"MDE API call failed: {type(exc).__name__}: {redact(str(exc), secrets)[:300]}", request_url=url
            ) from None

        status = response.status_code
        if 200 <= status < 300:
            return response.content
        if status == 404 and not_found_ok:
            return None
        retry_after = throttle_delay(response) if status == 429 else None
        raise error_from_response(status, response.content, url, retry_after=retry_after, secrets=secrets)
