"""Tenants: Airflow Variable ``mde_tenants`` -> one hourly DAG, connection and pool per tenant.

``mde_tenants`` is a JSON list of tenant names, e.g. ``["contoso", "fabrikam"]``. Each
name ``N`` gets, from the one DAG file ``dags/mde_alert_ips.py``:

* DAG ``mde_alert_ips_N``, calling the API through connection ``mde_N`` (whose extra
  ``tenant_id`` is the Entra tenant id: the lake partition ``tenant_id=<id>``),
* pool ``mde_api_N`` (created by ``make run`` and docker-compose's init, from
  include/pools.json with the same slots as ``mde_api``).

Without the Variable, or with ``[]``: DAG ``mde_alert_ips`` on ``mde_default`` in pool
``mde_api``, as before tenants.

Read at every parse of the DAG file, so cheaply (:func:`read_tenants_text`): the
environment (``AIRFLOW_VAR_MDE_TENANTS``) first, a dict look-up; only without it
``airflow.sdk.Variable.get``, which in the DAG processor asks its manager over the
parsing process's socket (one SELECT through the in-process Execution API; cached per
``[secrets] use_cache``) after any configured secrets backend.

A Variable that does not parse or names a bad tenant raises :class:`TenantsConfigError`
at parse time, so the file shows as an import error naming the Variable instead of
silently dropping (or adding) DAGs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mde_pipeline.airflow.settings import DAG_ID, MDE_CONN_ID, MDE_POOL

TENANTS_VARIABLE = "mde_tenants"
TENANTS_ENV = f"AIRFLOW_VAR_{TENANTS_VARIABLE.upper()}"
CONN_PREFIX = "mde_"
MAX_NAME_LENGTH = 64  # DAG ids, pool names and connection ids stay short and readable
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_EXAMPLE = '["contoso", "fabrikam"]'


class TenantsConfigError(ValueError):
    """Variable ``mde_tenants`` cannot be used; the message names it and what to fix."""


@dataclass(frozen=True)
class TenantDag:
    """What one tenant's hourly DAG uses. ``name`` is None for the single-tenant default."""

    name: str | None
    dag_id: str
    conn_id: str
    pool: str


DEFAULT_TENANT_DAG = TenantDag(None, DAG_ID, MDE_CONN_ID, MDE_POOL)


def parse_tenants(text: str | None) -> list[str]:
    """The tenant names of the Variable's text; ``[]`` when it is unset, empty or ``[]``."""
    if text is None or not str(text).strip():
        return []
    try:
        names = json.loads(text)
    except ValueError:
        raise TenantsConfigError(
            f"Variable {TENANTS_VARIABLE} must be a JSON list of tenant names like {_EXAMPLE}, "
            f"got text that is not JSON"
        ) from None
    if not isinstance(names, list):
        raise TenantsConfigError(
            f"Variable {TENANTS_VARIABLE} must be a JSON list of tenant names like {_EXAMPLE}, "
            f"got a JSON {type(names).__name__}"
        )
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise TenantsConfigError(
                f"Variable {TENANTS_VARIABLE}: tenant name {name!r:.80} is not 1-{MAX_NAME_LENGTH} letters, "
                f"digits, '_' or '-' (it names DAG mde_alert_ips_<name>, connection mde_<name>, pool mde_api_<name>)"
            )
        # Connections given as environment variables are looked up upper-cased
        # (AIRFLOW_CONN_MDE_<NAME>): names differing only in case would share one.
        folded = name.casefold()
        if folded in seen:
            same = "twice" if seen[folded] == name else f"twice ({seen[folded]!r} and {name!r} differ only in case)"
            raise TenantsConfigError(f"Variable {TENANTS_VARIABLE} names tenant {name!r} {same}")
        seen[folded] = name
    return list(names)


def tenant_dag(name: str) -> TenantDag:
    return TenantDag(name, f"{DAG_ID}_{name}", f"{CONN_PREFIX}{name}", f"{MDE_POOL}_{name}")


def tenant_dags(names: list[str]) -> list[TenantDag]:
    """One :class:`TenantDag` per name; the single-tenant default for none."""
    return [tenant_dag(name) for name in names] or [DEFAULT_TENANT_DAG]


def read_tenants_text(environ: Mapping[str, str] | None = None) -> str | None:
    """The Variable's text: ``AIRFLOW_VAR_MDE_TENANTS`` when set (no metadata DB, no
    secrets backend touched), else ``Variable.get`` (None when it is not defined)."""
    environ = os.environ if environ is None else environ
    if TENANTS_ENV in environ:
        return environ[TENANTS_ENV]
    from airflow.sdk import Variable

    value = Variable.get(TENANTS_VARIABLE, default=None)
    return None if value is None else str(value)


def configured_tenants(environ: Mapping[str, str] | None = None) -> list[str]:
    """The tenant names Variable ``mde_tenants`` names (validated)."""
    return parse_tenants(read_tenants_text(environ))


def configured_tenant_dags(environ: Mapping[str, str] | None = None) -> list[TenantDag]:
    """The hourly DAGs the DAG file defines: one per tenant, or the default one."""
    return tenant_dags(configured_tenants(environ))


def tenant_pools(pools: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """An ``airflow pools import`` document: ``pools`` plus ``mde_api_<name>`` for each
    tenant, with the slots and settings of ``mde_api`` (kept too: it costs nothing and a
    later switch back to one tenant finds it)."""
    if MDE_POOL not in pools:
        raise ValueError(f"the pools document has no pool {MDE_POOL!r} to copy for the tenants")
    base = pools[MDE_POOL]
    document = dict(pools)
    for dag in tenant_dags(names):
        if dag.name is None:
            continue
        document[dag.pool] = {
            **base,
            "description": f"Tenant {dag.name} (connection {dag.conn_id}, DAG {dag.dag_id}). {base.get('description', '')}".strip(),
        }
    return document
