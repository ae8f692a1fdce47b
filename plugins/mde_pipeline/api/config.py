"""The ``mde_default`` connection, parsed and validated: :class:`MdeConnectionConfig`.

host = API base URL (optional with extra ``cloud``), login = client id, password =
client secret, extra = JSON with ``tenant_id`` and the keys in :data:`KNOWN_EXTRA_KEYS`
(docs/DESIGN.md lists them). Every problem is an :class:`MdeConfigurationError` that
says what to fix; secrets stay out of ``repr``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from mde_pipeline.api.backfill_reserve import DEFAULT_SCHEDULED_RESERVE_SHARE
from mde_pipeline.api.clouds import Endpoints, resolve_endpoints
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.api.ledger_backends import check_ledger_spec, ledger_secrets
from mde_pipeline.api.ledgers import ledger_key
from mde_pipeline.api.rate_limiter import DEFAULT_MARGIN_SECONDS
from mde_pipeline.api.windows import Window, parse_rate_limits
from mde_pipeline.common.redaction import remember_secrets

log = logging.getLogger(__name__)

AUTH_METHODS = ("client_secret", "certificate", "managed_identity", "workload_identity")

KNOWN_EXTRA_KEYS = frozenset(
    {
        "tenant_id", "cloud", "authority_host", "scope", "rate_limits", "rate_limit_margin_seconds",
        "scheduled_reserve_share",
        "rate_limit_share", "rate_limit_ledger_dir", "rate_limit_ledger", "timeout", "connect_timeout",
        "read_timeout", "retry_total", "retry_backoff_factor", "retry_backoff_max", "max_throttle_wait_seconds",
        "throttle_backoff_seconds", "request_deadline_seconds",
        "certificate_path", "certificate_data", "certificate_password", "managed_identity_client_id",
        "use_managed_identity", "use_workload_identity", "federated_token_file", "disable_instance_discovery",
        "ca_bundle",
    }
)  # fmt: skip


# A PEM line this long is key material (a traceback may show the PEM line by line).
_MIN_PEM_LINE = 16


def pem_lines(value: Any) -> list[str]:
    """The key-material lines of PEM text (each a secret of its own)."""
    if not isinstance(value, str):
        return []
    lines = (line.strip() for line in value.splitlines())
    return [line for line in lines if len(line) >= _MIN_PEM_LINE and not line.startswith("-----")]


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
    # Share of the hourly budget a running backfill leaves free for the hourly loads to
    # start at full speed (api/backfill_reserve.py; default none: fill over lag).
    scheduled_reserve_share: float = DEFAULT_SCHEDULED_RESERVE_SHARE
    rate_limit_ledger: str = field(default="sqlite", repr=False)  # a Redis URL may hold a password
    rate_limit_ledger_dir: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry_total: int = 5
    retry_backoff_factor: float = 0.8
    retry_backoff_max: float = 60.0
    max_throttle_wait_seconds: float = 3900.0
    # First wait after a 429 without a usable Retry-After, and the floor of every 429
    # wait; doubles per 429 of one call up to retry_backoff_max (api/waits.py).
    throttle_backoff_seconds: float = 2.0
    # One attempt, connect to the body's last byte (api/deadline.py): a read timeout is
    # per read, so a trickling body would never time out.
    request_deadline_seconds: float = 120.0
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
        """Every secret value of the connection, in every form it may show up in text."""
        candidates = [self.client_secret, self.certificate_password, self.certificate_data,
                      *pem_lines(self.certificate_data), *ledger_secrets(self.rate_limit_ledger)]  # fmt: skip
        return tuple(dict.fromkeys(s for s in candidates if s))

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
        # Known before anything can fail: redact() strips them from every message after.
        remember_secrets([password, extra.get("certificate_password"), *pem_lines(extra.get("certificate_data")),
                          *ledger_secrets(str(extra.get("rate_limit_ledger") or ""))])  # fmt: skip
        try:
            config = cls._from_extra(host=host, login=login, password=password, extra=extra, conn_id=conn_id)
        except MdeConfigurationError as exc:
            raise MdeConfigurationError(f"{where}: {exc}") from None
        except ValueError as exc:  # from clouds / rate_limiter validation
            raise MdeConfigurationError(f"{where}: {exc}") from None
        remember_secrets(config.secrets())
        return config

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
        if isinstance(rate_limits, str) and not rate_limits.strip():
            rate_limits = None  # an empty form field (connection type mde): the default
        if isinstance(rate_limits, str):
            try:
                rate_limits = json.loads(rate_limits)
            except ValueError:
                raise MdeConfigurationError("extra rate_limits is not JSON") from None
        ledger = check_ledger_spec(_text(extra, "rate_limit_ledger"))
        share = _number(extra, "rate_limit_share", 1.0)
        if not 0 < share <= 1:
            raise MdeConfigurationError(f"extra rate_limit_share must be in (0, 1], got {share!r}")
        reserve_share = _number(extra, "scheduled_reserve_share", DEFAULT_SCHEDULED_RESERVE_SHARE)
        if not 0 <= reserve_share < 1:
            raise MdeConfigurationError(f"extra scheduled_reserve_share must be in [0, 1), got {reserve_share!r}")
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
            scheduled_reserve_share=reserve_share,
            rate_limit_ledger=ledger,
            rate_limit_ledger_dir=_text(extra, "rate_limit_ledger_dir"),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry_total=_integer(extra, "retry_total", 5),
            retry_backoff_factor=_number(extra, "retry_backoff_factor", 0.8),
            retry_backoff_max=_number(extra, "retry_backoff_max", 60.0),
            max_throttle_wait_seconds=_number(extra, "max_throttle_wait_seconds", 3900.0),
            throttle_backoff_seconds=_number(extra, "throttle_backoff_seconds", 2.0, minimum=0.001),
            request_deadline_seconds=_number(extra, "request_deadline_seconds", 120.0, minimum=0.001),
            ca_bundle=tuple(ca_bundle),
            conn_id=conn_id,
        )


# --------------------------------------------------------------------------- stats
