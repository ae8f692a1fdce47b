"""MdeHook: Airflow connection -> validated config -> MDE API client.

Connection ``mde_default``, of type ``mde`` ("Microsoft Defender for Endpoint": the
wheel's provider metadata gives it a form, provider_info.py, and a Test button) or ``http``
(read the same way): host = API base URL (optional when extra ``cloud`` is set), login =
client id, password = client secret, extra = JSON with ``tenant_id`` and the options
listed in :data:`mde_pipeline.api.config.KNOWN_EXTRA_KEYS` (docs/DESIGN.md). For example::

    AIRFLOW_CONN_MDE_DEFAULT='{"conn_type": "mde", "login": "<client id>",
        "password": "<secret>", "extra": {"tenant_id": "<tenant>", "cloud": "eu"}}'
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig, pem_lines
from mde_pipeline.api.ledger_backends import ledger_secrets
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.airflow.provider_info import CONN_TYPE, HOOK_NAME
from mde_pipeline.airflow.settings import MDE_CONN_ID
from mde_pipeline.common.log_text import error_text
from mde_pipeline.common.redaction import redact
from mde_pipeline.common.tenant_ids import offline_tenant_id

__all__ = ["MdeHook", "MdeConnectionConfig", "MdeConfigurationError", "connection_tenant_id", "mask_connection_secrets"]

# Airflow 3's connection form saves each field of provider_info.CONN_FIELDS under its bare
# name (``tenant_id``), which the config reads; Airflow 2's saved ``extra__<type>__<name>``,
# the spelling ProvidersManager still uses for the widgets. Either is read (a connection
# written by an older tool or copied from one parses the same); both, differing, is an error.
FORM_PREFIX = f"extra__{CONN_TYPE}__"

# Extra keys that hold secrets although their names hold none of Airflow's sensitive
# words, so Airflow would not mask them by itself.
SECRET_EXTRA_KEYS = ("certificate_data", "certificate_password")


def mask_connection_secrets(extra: Any) -> None:
    """Register the connection's secret extras with Airflow's log masker (task and
    supervisor): the whole value and, for PEM text, each line long enough to be key
    material, since a traceback or a wrapped log line may show it line by line; a Redis
    ledger URL's password in every form it can take (api/redis_url.py)."""
    if not isinstance(extra, dict):
        return
    for secret in ledger_secrets(str(extra.get("rate_limit_ledger") or "")):
        mask_secret(secret)  # the URL as a whole stays readable
    for key in SECRET_EXTRA_KEYS:
        value = extra.get(key)
        if not isinstance(value, str) or not value:
            continue
        mask_secret(value)
        for line in pem_lines(value):
            mask_secret(line)


def unprefixed_extra(extra: dict[str, Any], conn_id: str) -> dict[str, Any]:
    """``extra`` with each ``extra__mde__<name>`` key read as ``<name>`` (an empty value, as
    the form leaves an unset field, gives way to the other spelling's)."""
    out = {key: value for key, value in extra.items() if not key.startswith(FORM_PREFIX)}
    for key, value in extra.items():
        if not key.startswith(FORM_PREFIX):
            continue
        name = key[len(FORM_PREFIX):]
        if out.get(name) in (None, ""):
            out[name] = value
        elif value not in (None, "") and value != out[name]:
            raise MdeConfigurationError(
                f"connection {conn_id!r}: extra {name} and {key} are the same setting with different values; keep one"
            )
    return out


def _host_with_port(host: str | None, port: int | None) -> str | None:
    """The connection's host, with its separate port field folded in when set."""
    if not host or not port:
        return host
    parts = urlsplit(host if "://" in host else f"https://{host}")
    if parts.port is not None:
        return host
    return f"{host.rstrip('/')}:{port}"


def connection_tenant_id(conn_id: str) -> str:
    """The canonical tenant of an MDE connection (extra ``tenant_id``, a GUID lower-cased),
    without a network call: the lake partition ``tenant_id=<id>`` of what it lists.

    A tenant given by a domain name has no canonical id without a token: the caller takes
    it from where the list task put it (XCom), or this raises naming the fix."""
    configured = MdeHook(conn_id).get_config().tenant_id
    canonical = offline_tenant_id(configured)
    if canonical is None:
        raise MdeConfigurationError(
            f"connection {conn_id!r}: extra tenant_id {configured!r} is a domain name, whose lake partition "
            f"(the tenant's GUID) is known only from an access token here; set extra tenant_id to the GUID"
        )
    return canonical


class MdeHook(BaseHook):
    """Hook for the Microsoft Defender for Endpoint API.

    :param mde_conn_id: Airflow connection id (default ``mde_default``).
    :param background: the calls are a backfill's: they leave the hourly loads their
        reserve of the budget (``mde_pipeline.api.backfill_reserve``).
    """

    conn_name_attr = "mde_conn_id"
    default_conn_name = MDE_CONN_ID
    conn_type = CONN_TYPE  # `http` connections are read the same way (only the UI differs)
    hook_name = HOOK_NAME

    def __init__(self, mde_conn_id: str = default_conn_name, *, background: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mde_conn_id = mde_conn_id
        self.background = background
        self._config: MdeConnectionConfig | None = None
        self._client: MdeClient | None = None

    def get_config(self) -> MdeConnectionConfig:
        """The connection, parsed and validated (cached). Raises MdeConfigurationError
        naming the connection and what to fix."""
        if self._config is None:
            conn = self.get_connection(self.mde_conn_id)
            try:
                extra = conn.extra_dejson
            except Exception:  # a malformed extra is reported by from_parts below
                extra = None
            # The text as stored unless it has prefixed keys: a malformed extra (which
            # extra_dejson reads as {}) is then reported as such by from_parts below.
            extra_text: Any = conn.extra
            if isinstance(extra, dict) and any(key.startswith(FORM_PREFIX) for key in extra):
                extra_text = extra = unprefixed_extra(extra, self.mde_conn_id)
            mask_connection_secrets(extra)
            self._config = MdeConnectionConfig.from_parts(
                host=_host_with_port(conn.host, conn.port),
                login=conn.login,
                password=conn.password,
                extra=extra_text,
                conn_id=self.mde_conn_id,
            )
        return self._config

    def get_client(self) -> MdeClient:
        """The API client for this connection (one per hook, so its stats add up)."""
        if self._client is None:
            self._client = MdeClient(self.get_config(), background=self.background)
        return self._client

    def get_conn(self) -> MdeClient:
        return self.get_client()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's connection test (``airflow connections test``, the UI's Test button):
        the connection parsed, a token, then one listing call of one alert (needs
        Alert.Read.All). A failure reads as the tasks' own message: which setting is wrong
        (tenant, client id, secret, permission, cloud), never a secret."""
        try:
            config = self.get_config()
            page = self.get_client().list_alerts_page(filter=None, top=1)
        except Exception as exc:  # the UI and the CLI show the message
            return False, redact(error_text(exc))
        finally:
            self.close()
        listed = len(page.get("value") or [])
        return True, (
            f"Token for tenant {config.tenant_id} ({config.auth_method}) from {config.endpoints.authority_host}; "
            f"listed {listed} alert{'' if listed == 1 else 's'} from {config.api_base_url} (Alert.Read.All granted)"
        )
