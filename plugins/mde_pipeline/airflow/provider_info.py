"""What Airflow learns from the wheel's ``apache_airflow_provider`` entry point.

The connection type ``mde`` ("Microsoft Defender for Endpoint"), its hook (MdeHook: the
tasks' config parsing and the connection test) and its form: the fields a user must
choose, declared here as Airflow 3.3 reads them (``conn-fields``: one JSON-schema per
extra key, ``ui-field-behaviour``: labels of the standard fields). Every field is an
extra key of mde_pipeline.api.config, so an ``mde`` connection parses exactly like the
equivalent ``http`` one; keys without a field (timeouts, retries, authority_host, ...)
still go into the Extra JSON.

Airflow calls :func:`get_provider_info` in every process that lists providers, so this
module imports nothing but the cloud names.
"""

from __future__ import annotations

from typing import Any

from mde_pipeline import __version__
from mde_pipeline.api.clouds import CLOUDS, DEFAULT_CLOUD

DISTRIBUTION = "mde-alert-ips"  # must equal the wheel's name: Airflow refuses a mismatch
CONN_TYPE = "mde"
HOOK_NAME = "Microsoft Defender for Endpoint"
HOOK_CLASS = "mde_pipeline.airflow.hooks.MdeHook"


def _text(label: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"  # masked in the form and in the API's answers
    return {"label": label, "description": description, "schema": schema}


def _flag(label: str, description: str) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": ["boolean", "null"]}}


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "tenant_id": _text("Tenant ID", "Entra ID tenant of the app registration (GUID, or its domain name)."),
    "cloud": {
        "label": "Cloud",
        "description": f"Which Defender API and sign-in authority; empty: the cloud of Host, else {DEFAULT_CLOUD}. "
        "Host, when set, overrides the API address.",
        # No null in the list (Airflow 3's forms fail to render one, apache/airflow#62049) and
        # no default: left empty, the cloud follows Host (e.g. a GCC High host), else commercial.
        "schema": {"type": ["string", "null"], "enum": list(CLOUDS)},
    },
    "certificate_path": _text(
        "Certificate file", "Instead of a client secret: path of a PEM file (certificate and private key)."
    ),
    "certificate_data": _text(
        "Certificate (PEM)", "Instead of a client secret: the PEM text (certificate and private key).", secret=True
    ),
    "certificate_password": _text("Certificate password", "Password of the certificate's private key, if any.", secret=True),
    "use_managed_identity": _flag("Use managed identity", "Sign in as the host's managed identity (no secret)."),
    "managed_identity_client_id": _text(
        "Managed identity client ID", "A user-assigned identity's client ID (empty: the system-assigned one)."
    ),
    "use_workload_identity": _flag(
        "Use workload identity", "Sign in with a federated token (Kubernetes workload identity); Client ID = the app's."
    ),
    "federated_token_file": _text(
        "Federated token file", "Path of the projected token (default: AZURE_FEDERATED_TOKEN_FILE)."
    ),
    "rate_limits": _text(
        "Rate limits", 'The API\'s limits as JSON [[calls, seconds], ...] (default [[100, 60], [1500, 3600]]).'
    ),
    "rate_limit_share": {
        "label": "Rate limit share",
        "description": "Fraction (0, 1] of the limits this connection may spend (others share the app).",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    },
    "rate_limit_ledger": _text(
        "Budget ledger",
        "Where the calls spent are counted: sqlite (default, a file on shared storage) or a redis:// URL.",
        secret=True,  # a Redis URL may hold a password
    ),
    "rate_limit_ledger_dir": _text("Budget ledger folder", "Folder of the sqlite ledger (shared by every worker)."),
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "API base URL (optional)", "login": "Client ID", "password": "Client secret"},
    # Placeholders of the standard fields (the 3.3 form shows none for the extra fields:
    # their descriptions carry the examples).
    "placeholders": {
        "host": "empty: from Cloud",
        "login": "application (client) id",
        "password": "client secret (or a certificate / identity below)",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": DISTRIBUTION,
        "name": "MDE alert IPs",
        "description": "IP addresses of Microsoft Defender for Endpoint alerts into a Parquet lake.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": HOOK_NAME,
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
