"""airflow-init: include/deploy/airflow_init.sh and include/deploy/check_connections.py.

The init script runs for real here -- real connection check, real chown of its volume
folders, real `airflow db migrate` and `airflow pools import` -- with the environment
docker-compose gives the airflow-init container, changed only where this machine
differs from the image: SQLite instead of the postgres service, the stock auth manager
and executor (the FAB and Celery providers are in the image, not in this venv), and a
stand-in for the image's /entrypoint that runs this venv's `airflow` and `python`.
`airflow users create` (a FAB command) is the one call the stand-in records instead of
running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, compose_model, host_path, venv_tool

INIT_SCRIPT = REPO / "include" / "deploy" / "airflow_init.sh"
CHECK_SCRIPT = REPO / "include" / "deploy" / "check_connections.py"
VENV_BIN = Path(sys.executable).parent

ENTRYPOINT_STAND_IN = """#!/usr/bin/env bash
# Stand-in for the image's /entrypoint: this venv's airflow / python.
set -euo pipefail
echo "$1 ${2:-} ${3:-}" >> "${SHIM_LOG}"
case "$1" in
  python) shift; exec "${VENV_BIN}/python" "$@" ;;
  airflow)
    if [[ "${2:-}" == users ]]; then exit 0; fi  # FAB is in the image, not in this venv
    shift; exec "${VENV_BIN}/airflow" "$@" ;;
  *) echo "unexpected entrypoint command: $1" >&2; exit 99 ;;
esac
"""


def test_shellcheck_finds_nothing():
    proc = subprocess.run([venv_tool("shellcheck"), "--severity=style", str(INIT_SCRIPT)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_init_script_steps_in_order():
    lines = [line.strip() for line in INIT_SCRIPT.read_text().splitlines()]
    text = INIT_SCRIPT.read_text()
    assert "set -euo pipefail" in lines

    def position(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line and not line.startswith("#"))

    order = [
        position("check_connections.py"),
        position('chown -R "${owner}"'),
        position("airflow db migrate"),
        position("airflow users create"),
        position("airflow users reset-password"),
        position('airflow pools import "${POOLS_FILE}"'),
        position("airflow pools get mde_api"),
    ]
    assert order == sorted(order)
    assert "--role Admin" in text and '--password "${_AIRFLOW_WWW_USER_PASSWORD}"' in text
    assert text.count('--password "${_AIRFLOW_WWW_USER_PASSWORD}"') == 2  # create, then reset-password
    assert "|| true" not in text  # no step may fail silently


def container_env(model: dict, service: str, home: Path, **overrides: str) -> dict[str, str]:
    """The service's environment from docker-compose, mapped onto this machine."""
    svc = model["services"][service]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.pop("PYTHONPATH", None)
    for name, value in svc["environment"].items():
        if value is None:  # a name without a value that .env does not set: not in the container
            continue
        mapped = host_path(svc, value) if value.startswith("/opt/airflow/") else None
        env[name] = str(mapped) if mapped else value
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_ENTRYPOINT=str(home / "entrypoint"),
        SHIM_LOG=str(home / "entrypoint.log"),
        VENV_BIN=str(VENV_BIN),
        AIRFLOW_UID="50000",
    )
    env.pop("AIRFLOW__CELERY__RESULT_BACKEND", None)
    env.pop("AIRFLOW__CELERY__BROKER_URL", None)
    env.update(overrides)
    (home / "entrypoint").write_text(ENTRYPOINT_STAND_IN)
    (home / "entrypoint").chmod(0o755)
    return env


def run_init(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="airflow-init runs as root to chown its volumes")
def test_init_script_sets_up_a_fresh_deployment(tmp_path, local_env_file):
    from dotenv import dotenv_values

    model = compose_model(local_env_file, profiles=("local",))
    home = tmp_path / "airflow"
    home.mkdir()
    env = container_env(model, "airflow-init", home)
    assert env["MDE_POOLS_FILE"] == str(REPO / "include" / "pools.json")

    proc = run_init(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    calls = (home / "entrypoint.log").read_text().splitlines()
    assert [c.split()[1] if c.startswith("airflow") else c.split()[0] for c in calls] == [
        "python", "version", "db", "users", "users", "pools", "pools"]
    assert [c for c in calls if c.startswith("airflow users")] == [
        "airflow users create", "airflow users reset-password"]
    assert "OK  mde_default" in proc.stdout and "OK  lake: abfs://mde-lake/mde" in proc.stdout
    # Volumes handed to AIRFLOW_UID, group-writable.
    for folder in ("logs", "lake", "mde-rate-ledger", "mde-sim"):
        info = (home / folder).stat()
        assert (info.st_uid, info.st_gid) == (50000, 0) and info.st_mode & 0o070 == 0o070, folder
    # The pool exists in the migrated metadata DB as include/pools.json defines it
    # (the script's last step reads it back with `airflow pools get mde_api -o json`).
    [shown] = [line for line in proc.stdout.splitlines() if line.startswith('[{"pool"')]
    listed = {p["pool"]: p for p in json.loads(shown)}
    defined = json.loads((REPO / "include" / "pools.json").read_text())
    assert int(listed["mde_api"]["slots"]) == defined["mde_api"]["slots"] == 2
    assert listed["mde_api"]["description"] == defined["mde_api"]["description"]
    # Secrets from .env never reach the output.
    secrets = dotenv_values(local_env_file)
    for name in ("_AIRFLOW_WWW_USER_PASSWORD", "POSTGRES_PASSWORD", "FERNET_KEY", "MDE_SIM_CLIENT_SECRET"):
        assert secrets[name] not in proc.stdout + proc.stderr, name


@pytest.mark.slow
def test_init_script_stops_before_changing_anything_when_a_connection_is_unusable(tmp_path, tenant_env_file):
    model = compose_model(tenant_env_file)  # .env.example with its placeholders left
    home = tmp_path / "airflow"
    home.mkdir()
    proc = run_init(container_env(model, "airflow-init", home))
    assert proc.returncode != 0
    assert "AIRFLOW_CONN_MDE_DEFAULT still holds placeholder(s)" in proc.stderr
    [call] = (home / "entrypoint.log").read_text().splitlines()
    assert call.split()[0] == "python"
    assert not (home / "lake").exists() and not (home / "airflow.db").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="airflow-init runs as root to chown its volumes")
def test_a_changed_admin_password_applies_at_the_next_init(tmp_path, local_env_file):
    """The init script, run twice with the FAB auth manager of the image's own package set
    (the venv `make image-check` builds: the image's packages plus the lock's), creates
    the admin with the first password and makes the second one the only valid one."""
    import fcntl

    sys.path.insert(0, str(REPO / "include" / "deploy"))
    import image_check

    workdir = REPO / ".image-venv"
    workdir.mkdir(exist_ok=True)
    model = compose_model(local_env_file, profiles=("local",))
    home = tmp_path / "airflow"
    home.mkdir()
    with open(workdir / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # no other rehearsal re-syncs the venv meanwhile
        image_check.rehearse(REPO / "Dockerfile", None, workdir)  # the venv as the built image holds it
        image_bin = workdir / "venv" / "bin"
        env = container_env(
            model, "airflow-init", home, VENV_BIN=str(image_bin),
            AIRFLOW__CORE__AUTH_MANAGER=model["services"]["airflow-init"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"],
            _AIRFLOW_WWW_USER_PASSWORD="first-Password-1",
        )
        (home / "entrypoint").write_text(ENTRYPOINT_STAND_IN.replace(
            'if [[ "${2:-}" == users ]]; then exit 0; fi  # FAB is in the image, not in this venv', ""))
        first = run_init(env)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        assert 'User "airflow" created with role "Admin"' in first.stdout
        second = run_init(dict(env, _AIRFLOW_WWW_USER_PASSWORD="second-Password-2"))
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        assert "airflow already exists" in second.stdout
        assert 'User "airflow" password reset successfully' in second.stdout
        check = subprocess.run(
            [str(image_bin / "python"), "-c",
             "import sqlite3, sys; from werkzeug.security import check_password_hash as ok; "
             "[(h,)] = sqlite3.connect(sys.argv[1]).execute(\"select password from ab_user where username='airflow'\"); "
             "print(ok(h, 'first-Password-1'), ok(h, 'second-Password-2'))",
             str(home / "airflow.db")],
            capture_output=True, text=True, timeout=120)
    assert check.stdout.split() == ["False", "True"], check.stderr
    for proc in (first, second):
        assert "first-Password-1" not in proc.stdout + proc.stderr
        assert "second-Password-2" not in proc.stdout + proc.stderr


# ------------------------------------------------------------ check_connections.py


def run_check(model: dict, home: Path, **overrides: str) -> subprocess.CompletedProcess:
    env = container_env(model, "airflow-worker", home, **overrides)
    return subprocess.run([str(VENV_BIN / "python"), str(CHECK_SCRIPT)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_check_accepts_a_filled_in_tenant_env(tmp_path, tenant_model):
    proc = run_check(tenant_model, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "OK  mde_default: client_secret auth, cloud commercial, API https://api.security.microsoft.com" in proc.stdout
    assert "rate limits [[100, 60.0], [1500, 3600.0]] x share 1.0" in proc.stdout
    assert "OK  lake: /opt/airflow/lake" in proc.stdout  # the mde-lake volume


@pytest.mark.slow
def test_check_reports_problems_by_name_never_by_value(tmp_path, tenant_model, filled_tenant_env_file):
    from dotenv import dotenv_values

    secret = dotenv_values(filled_tenant_env_file)["AIRFLOW_CONN_MDE_DEFAULT"]
    password = json.loads(secret)["password"]
    broken = json.loads(secret)
    broken["extra"].pop("tenant_id")
    proc = run_check(
        tenant_model, tmp_path,
        AIRFLOW_CONN_MDE_DEFAULT=json.dumps(broken),
        AIRFLOW_VAR_MDE_LAKE_ROOT="abfs://mde-lake@mdelakeaccount.dfs.core.windows.net/mde",
    )
    assert proc.returncode == 1
    assert "extra tenant_id is required" in proc.stderr
    assert "AIRFLOW_CONN_MDE_LAKE is not set" in proc.stderr
    assert "2 problem(s)" in proc.stderr
    assert password not in proc.stdout + proc.stderr


def test_precheck_messages():
    sys.path.insert(0, str(CHECK_SCRIPT.parent))
    import check_connections as check

    assert check.precheck("mde_default", {}, required=True) == [
        "AIRFLOW_CONN_MDE_DEFAULT is not set: copy .env.example to .env (include/deploy/make_env.py) and fill it in"]
    # With a secrets backend (Key Vault), the connection need not be an env var.
    assert check.precheck("mde_default", {"AIRFLOW__SECRETS__BACKEND": "x.Y"}, required=True) == []
    leaked = '{"login": "abc", "password": "s3cr3t-Value", '  # cut short
    [message] = check.precheck("mde_default", {"AIRFLOW_CONN_MDE_DEFAULT": leaked}, required=True)
    assert message.startswith("AIRFLOW_CONN_MDE_DEFAULT is not valid JSON") and "s3cr3t" not in message
    assert check.precheck("mde_default", {"AIRFLOW_CONN_MDE_DEFAULT": "[1]"}, required=True) == [
        "AIRFLOW_CONN_MDE_DEFAULT must be a JSON object"]
    nested = json.dumps({"login": "x", "extra": json.dumps({"tenant_id": "<directory-tenant-id>"})})
    assert check.placeholder_fields(nested) == ["extra.tenant_id"]
    assert check.placeholder_fields("http://<client-id>:pw@host") == ["value"]
    assert check.placeholder_fields('{"login": "a<b"}') == []
