"""Check, before any Airflow service starts, that the pipeline's connections are usable.

docker-compose's airflow-init runs this (include/deploy/airflow_init.sh); tests run it
on the example env files. It reads the connections exactly the way a task does:

* ``mde_default`` (or with ``AIRFLOW_VAR_MDE_TENANTS`` each tenant's ``mde_<name>``):
  ``MdeHook(conn_id).get_config()``, the parser the operators use (tenant, credential
  choice, cloud and endpoints, rate limits, timeouts);
* the lake: ``configured_lake_location()`` with Variables ``mde_lake_root`` and
  ``mde_lake_conn_id`` (``AIRFLOW_VAR_*``); an ``abfs://`` root opens its filesystem
  through connection ``mde_lake`` (no network call is made).

Values still holding a ``<placeholder>`` from .env.example are reported by variable
and field. Messages name variables and fields, never values: .env holds secrets and
init logs are kept.

With ``--probe`` it also talks to both (``airflow-init`` does not: the sandbox's
simulator starts after it): ``mde_default`` lists one alert, the way the connection
test of MdeHook does (one call of the budget, through the rate limiter), and an
``abfs://`` lake looks its container up. Use it from a running deployment:

    docker compose run --rm airflow-cli python /opt/airflow/include/deploy/check_connections.py --probe

Usage: python check_connections.py [--probe]   (exit status 0 when usable, 1 otherwise)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

MDE_CONN_ID = "mde_default"
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")


def env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def placeholder_fields(value: str) -> list[str]:
    """Where a connection value still holds a ``<...>`` placeholder: JSON field paths
    (``extra.tenant_id``), or ``value`` for a URI."""
    try:
        document = json.loads(value)
    except ValueError:
        return ["value"] if PLACEHOLDER.search(value) else []
    found: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{path}[{index}]")
        elif isinstance(node, str):
            if path == "extra" and node.strip().startswith("{"):
                # extra given as JSON text inside the JSON document
                try:
                    walk(json.loads(node), path)
                    return
                except ValueError:
                    pass
            if PLACEHOLDER.search(node):
                found.append(path or "value")

    walk(document, "")
    return found


def uses_other_secrets_backend(environ: os._Environ | dict) -> bool:
    """Connections may live in a secrets backend (Key Vault, ...), not in env vars."""
    return bool((environ.get("AIRFLOW__SECRETS__BACKEND") or "").strip())


def precheck(conn_id: str, environ, *, required: bool) -> list[str]:
    """Problems visible in the env var alone: missing, not JSON, placeholders left."""
    name = env_var(conn_id)
    value = environ.get(name)
    if not value or not value.strip():
        if required and not uses_other_secrets_backend(environ):
            return [f"{name} is not set: copy .env.example to .env (include/deploy/make_env.py) and fill it in"]
        return []
    problems = []
    text = value.strip()
    if text.startswith(("{", "[")):  # Airflow reads JSON when it looks like JSON
        try:
            document = json.loads(text)
        except ValueError as exc:
            # The decoder's message gives a position, never the text itself.
            return [f"{name} is not valid JSON ({exc.msg} at char {exc.pos}); in .env wrap it in single quotes"]
        if not isinstance(document, dict):
            return [f"{name} must be a JSON object"]
    fields = placeholder_fields(text)
    if fields:
        problems.append(f"{name} still holds placeholder(s) from .env.example in: {', '.join(fields)}")
    return problems


def mde_conn_ids(environ) -> tuple[list[str], list[str]]:
    """(connection ids the hourly DAGs use, problems): ``mde_default``, or ``mde_<name>``
    per tenant of ``AIRFLOW_VAR_MDE_TENANTS`` (mde_pipeline.airflow.tenants)."""
    from mde_pipeline.airflow.tenants import TENANTS_ENV, TenantsConfigError, parse_tenants, tenant_dags

    try:
        return [dag.conn_id for dag in tenant_dags(parse_tenants(environ.get(TENANTS_ENV)))], []
    except TenantsConfigError as exc:
        return [], [f"{TENANTS_ENV}: {exc}"]


def check_mde(environ, probe: bool = False, conn_id: str = MDE_CONN_ID) -> tuple[list[str], str | None]:
    problems = precheck(conn_id, environ, required=True)
    if problems:
        return problems, None
    from mde_pipeline.airflow.hooks import MdeConfigurationError, MdeHook

    hook = MdeHook(conn_id)
    try:
        config = hook.get_config()
    except MdeConfigurationError as exc:
        return [str(exc)], None  # names the field to fix, never its value
    except Exception as exc:  # lookup errors: say which, not the content
        return [f"connection {conn_id!r} cannot be read: {type(exc).__name__}"], None
    limits = [[w.limit, w.seconds] for w in config.rate_limits]
    summary = (
        f"{conn_id}: {config.auth_method} auth, cloud {config.endpoints.cloud}, "
        f"API {config.api_base_url}, rate limits {limits} x share {config.rate_limit_share}"
    )
    if probe:
        try:
            works, message = hook.test_connection()  # the client's errors carry no secret
        finally:
            hook.close()
        if not works:
            return [f"{conn_id}: {message}"], None
        summary += "; listed an alert"
    return [], summary


def check_tenants(environ, probe: bool = False) -> tuple[list[str], list[str]]:
    """Every MDE connection the hourly DAGs use: (problems, summaries)."""
    conn_ids, problems = mde_conn_ids(environ)
    summaries = []
    for conn_id in conn_ids:
        found, summary = check_mde(environ, probe=probe, conn_id=conn_id)
        problems += found
        summaries += [summary] if summary else []
    return problems, summaries


def check_lake(environ, probe: bool = False) -> tuple[list[str], str | None]:
    from mde_pipeline.airflow.lake_location import configured_lake_conn_id, configured_lake_location, configured_lake_root
    from mde_pipeline.lake.location import LakeLocationError

    root = configured_lake_root()
    if PLACEHOLDER.search(root):
        return ["AIRFLOW_VAR_MDE_LAKE_ROOT still holds a placeholder from .env.example"], None
    problems: list[str] = []
    if "://" in root and not root.lower().startswith(("file://", "local://")):
        problems = precheck(configured_lake_conn_id(), environ, required=True)
    if problems:
        return problems, None
    try:
        location = configured_lake_location(root)
    except LakeLocationError as exc:
        return [str(exc)], None
    where = location.root if location.is_local else f"{location.protocol}://{location.root}"
    via = "" if location.is_local else f" via connection {location.conn_id!r}"
    if probe and not location.is_local:
        container = location.root.split("/", 1)[0]
        # adlfs reads lookup errors as "the container exists" unless told otherwise.
        location.fs.assume_container_exists = False
        try:
            if not location.fs.exists(container):
                return [f"lake container {container!r} does not exist (connection {location.conn_id!r})"], None
        except Exception as exc:  # the storage SDK names account and status, not keys
            return [f"lake {where}{via} cannot be reached: {type(exc).__name__}: {exc}"], None
        via += "; container found"
    return [], f"lake: {where}{via}"


def _put_plugins_on_path() -> None:
    # Airflow processes import mde_pipeline from the plugins folder; a plain python
    # process (this one) has to be told where that is.
    from airflow.configuration import conf

    plugins = conf.get("core", "plugins_folder")
    if plugins and plugins not in sys.path:
        sys.path.insert(0, plugins)


def main(argv: list[str] | None = None, environ=os.environ) -> int:
    parser = argparse.ArgumentParser(description="Check the pipeline's connections.")
    parser.add_argument("--probe", action="store_true",
                        help="also call the API once and look the lake container up")
    args = parser.parse_args(argv)
    _put_plugins_on_path()
    problems, summaries = check_tenants(environ, probe=args.probe)
    found, summary = check_lake(environ, probe=args.probe)
    problems += found
    for line in summaries + ([summary] if summary else []):
        print(f"OK  {line}")
    for problem in problems:
        print(f"ERROR  {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) with the connections: see docs/DEPLOYMENT.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
