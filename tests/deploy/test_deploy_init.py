"""airflow-init: include/deploy/airflow_init.sh and include/deploy/check_connections.py.

The init script runs for real here -- real connection check, real chown of its volume
folders, real `airflow db migrate`, `airflow users create` / `reset-password` (FAB) and
`airflow pools import` -- with the environment docker-compose gives the airflow-init
container, changed only where this machine differs from the image: SQLite instead of the
postgres service, the LocalExecutor (no broker), and a stand-in for the image's
/entrypoint that records each call and runs `airflow` / `python` of a venv: the image's
package set (.image-venv, see image_venv_with_the_lock) for the full runs, this venv
(stock auth manager: FAB is in the image, not here) for the runs that stop early.
"""

from __future__ import annotations

import fcntl
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
# Stand-in for the image's /entrypoint: airflow / python of the venv in VENV_BIN.
set -euo pipefail
echo "$1 ${2:-} ${3:-}" >> "${SHIM_LOG}"
case "$1" in
  python) shift; exec "${VENV_BIN}/python" "$@" ;;
  airflow) shift; exec "${VENV_BIN}/airflow" "$@" ;;
  *) echo "unexpected entrypoint command: $1" >&2; exit 99 ;;
esac
"""
IMAGE_WORKDIR = REPO / ".image-venv"  # include/deploy/image_check.py's venv, shared with it


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
    assert "--role=Admin" in text
    assert text.count('--password="${_AIRFLOW_WWW_USER_PASSWORD}"') == 2  # create, then reset-password
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


def empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def run_init(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


def image_venv_with_the_lock(wheel: Path) -> Path:
    """bin/ of .image-venv synced to the image's package set plus the lock's additions and
    the pipeline's wheel: the venv as the built image holds it. The Dockerfile's pip RUNs
    leave exactly this set (test_deploy_image_build rehearses them, verbatim); here uv
    links it from its cache, where the RUN would download the lock's wheels anew for a
    minute. Call it holding image_check's lock (.image-venv/.lock) and keep that while the
    venv runs."""
    sys.path.insert(0, str(REPO / "include" / "deploy"))
    import image_check

    spec = image_check.read_dockerfile(REPO / "Dockerfile")
    constraints = REPO / "constraints" / f"airflow-{spec['version']}-python{spec['python']}.txt"
    image = image_check.pins(constraints.read_text())
    lock = image_check.pins((REPO / "requirements.lock").read_text())
    name, version = wheel.name.split("-")[:2]
    wanted = IMAGE_WORKDIR / "image-and-lock.txt"
    wanted.write_text(constraints.read_text() + "".join(f"{n}=={v}\n" for n, v in lock.items() if n not in image)
                      + f"{image_check.normalize(name)} @ {wheel.resolve().as_uri()}\n")  # fmt: skip
    venv, _ = image_check.sync_image_venv(wanted, spec["python"], IMAGE_WORKDIR)
    assert image_check.installed(venv / "bin" / "python") == image | lock | {image_check.normalize(name): version}
    return venv / "bin"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="airflow-init runs as root to chown its volumes")
def test_init_script_sets_up_a_fresh_deployment_and_a_rerun_applies_a_changed_admin_password(
    tmp_path, local_env_file, built_wheel
):
    """The init script, run twice on one metadata DB with the FAB auth manager of the
    image's own package set: the first run sets up a fresh deployment and creates the
    admin with .env's password; the second, after the password changed in .env, makes
    the new one the only valid one. One test for both runs: each costs a minute of
    Airflow CLI starts, and the second needs the first's DB."""
    from dotenv import dotenv_values

    model = compose_model(local_env_file, profiles=("local",))
    secrets = dotenv_values(local_env_file)
    home = tmp_path / "airflow"
    home.mkdir()
    IMAGE_WORKDIR.mkdir(exist_ok=True)
    with open(IMAGE_WORKDIR / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # no rehearsal re-syncs the venv meanwhile
        env = container_env(
            model, "airflow-init", home, VENV_BIN=str(image_venv_with_the_lock(built_wheel)),
            # As in the container: the package comes from the image's wheel, its plugins folder is empty.
            AIRFLOW__CORE__PLUGINS_FOLDER=str(empty_folder(tmp_path / "plugins")),
            AIRFLOW__CORE__AUTH_MANAGER=model["services"]["airflow-init"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"],
        )
        # The image venv is not precompiled (image_check.py): let its processes compile
        # what they import, once, instead of every process anew.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        assert "fab" in env["AIRFLOW__CORE__AUTH_MANAGER"]
        assert env["MDE_POOLS_FILE"] == str(REPO / "include" / "pools.json")
        first_password = env["_AIRFLOW_WWW_USER_PASSWORD"]
        assert first_password == secrets["_AIRFLOW_WWW_USER_PASSWORD"]

        proc = run_init(env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        calls = (home / "entrypoint.log").read_text().splitlines()
        assert [c.split()[1] if c.startswith("airflow") else c.split()[0] for c in calls] == [
            "python", "version", "db", "users", "users", "pools", "pools"]
        assert [c for c in calls if c.startswith("airflow users")] == [
            "airflow users create", "airflow users reset-password"]
        assert "OK  mde_default" in proc.stdout and "OK  lake: abfs://mde-lake/mde" in proc.stdout
        assert 'User "admin" created with role "Admin"' in proc.stdout
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

        # The next `docker compose up`, with another password in .env, one that starts
        # with '-' as make_env's token_urlsafe passwords do one time in 64 (it was read
        # as an option and stopped the init: a fresh clone's CI met one).
        second = run_init(dict(env, _AIRFLOW_WWW_USER_PASSWORD="-second-Password-2"))
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        assert (home / "entrypoint.log").read_text().splitlines() == calls + calls  # the same steps again
        assert "admin already exists" in second.stdout
        assert 'User "admin" password reset successfully' in second.stdout
        check = subprocess.run(
            [str(Path(env["VENV_BIN"]) / "python"), "-c",
             "import os, sqlite3, sys; from werkzeug.security import check_password_hash as ok; "
             "[(h,)] = sqlite3.connect(sys.argv[1]).execute(\"select password from ab_user where username='admin'\"); "
             "print(ok(h, os.environ['FIRST']), ok(h, '-second-Password-2'))",
             str(home / "airflow.db")],
            env=dict(env, FIRST=first_password), capture_output=True, text=True, timeout=120)
    assert check.stdout.split() == ["False", "True"], check.stderr
    # Secrets from .env never reach the output.
    for name in ("_AIRFLOW_WWW_USER_PASSWORD", "POSTGRES_PASSWORD", "FERNET_KEY", "MDE_SIM_CLIENT_SECRET"):
        assert secrets[name] not in proc.stdout + proc.stderr + second.stdout + second.stderr, name
    assert "-second-Password-2" not in second.stdout + second.stderr


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
