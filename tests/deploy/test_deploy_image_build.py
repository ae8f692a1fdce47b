"""The image build, rehearsed: include/deploy/image_check.py (`make image-check`).

The Dockerfile's pip RUNs (the lock, then the pipeline's wheel) run verbatim on a venv
holding the image's package set (constraints/airflow-<version>-python<py>.txt); see the
script's docstring for what is and is not rehearsed. That venv is then the image's Python
environment, and Airflow runs the pipeline from it with nothing but the wheel and the two
DAG files. The venv is the repo's .image-venv/, shared with `make
image-check`: a fresh clone pays the download of the image's wheels once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

import image_check as image_check_module
import lake_check
from conftest import REPO
from mde_pipeline import __version__
from mde_simulator.process import SimulatorProcess

pytestmark = pytest.mark.slow
SCRIPT = REPO / "include" / "deploy" / "image_check.py"
WORKDIR = REPO / ".image-venv"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)
WRONG_SECRET = "wrong~Secret.0123456789abcdefXYZ"


def constraints_file():
    [image] = [i["value"] for i in DockerfileParser(path=str(REPO / "Dockerfile")).structure
               if i["instruction"] == "FROM"]
    version, python = re.fullmatch(r"apache/airflow:(\S+)-python(\d+\.\d+)", image).groups()
    return REPO / "constraints" / f"airflow-{version}-python{python}.txt"


def pins(path) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(path.read_text())}


def image_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(WORKDIR), *args],
                          capture_output=True, text=True, timeout=1800)


def test_the_locks_keep_every_package_of_the_image_at_its_version():
    image = pins(constraints_file())
    assert image["apache-airflow"] == "3.3.2" and len(image) > 300
    for lock in ("requirements.lock", "requirements-dev.lock"):
        locked = pins(REPO / lock)
        assert {n: (v, image[n]) for n, v in locked.items() if n in image and image[n] != v} == {}, lock


def test_the_constraints_say_how_they_were_made():
    header = [line for line in constraints_file().read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "--exclude-newer 2026-09-17" in text and "make constraints" in text
    assert "next Airflow release" in text


def test_the_dockerfile_install_steps_pass_and_the_image_runs_the_pipeline_from_the_wheel(built_wheel, tmp_path, capsys):
    """The Dockerfile's pip RUNs (lock, then the wheel) on the image's package set; then,
    in that very environment (the image's Python: image + lock + wheel, nothing else),
    Airflow with only the two DAG files in its dags_folder and an empty plugins_folder
    tests the connection, loads an hour exactly from the simulator (`airflow dags test`),
    serves the plugin's /mde page, lists connection type mde with its form fields, and
    tests a connection as the form's Test button does."""
    with open(WORKDIR / ".lock", "a") as guard:  # image_check's own lock: the venv is ours until the end
        fcntl.flock(guard, fcntl.LOCK_EX)
        image_check_module.rehearse(REPO / "Dockerfile", None, WORKDIR, dist=built_wheel.parent)
        out = capsys.readouterr().out
        image = pins(constraints_file())
        assert f"kept     all {len(image)} packages of the image at their versions; pip check OK" in out
        # What the steps add is exactly what the lock has beyond the image, and the wheel.
        lock = pins(REPO / "requirements.lock")
        extra = sorted([*(f"{n}=={v}" for n, v in lock.items() if n not in image), f"mde-alert-ips=={__version__}"])
        assert len(extra) > 1, "the lock adds nothing to the image: the rehearsal would prove nothing"
        [added] = [line for line in out.splitlines() if line.startswith("added ")]
        assert sorted(added.split(None, 1)[1].split(", ")) == extra
        # The RUNs rehearsed are the Dockerfile's, verbatim.
        assert "pip install --no-cache-dir -r /opt/airflow/requirements.lock" in out and "pip check" in out
        assert "pip install --no-cache-dir --no-deps /opt/airflow/dist/*.whl" in out
        the_image_runs_the_pipeline(WORKDIR / "venv" / "bin", tmp_path)


def the_image_runs_the_pipeline(venv_bin: Path, tmp_path: Path) -> None:
    start, end = datetime(2026, 11, 20, 9, tzinfo=timezone.utc), datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    dags, plugins, lake = tmp_path / "dags", tmp_path / "plugins", tmp_path / "lake"
    dags.mkdir(), plugins.mkdir()
    for name in ("mde_alert_ips.py", "mde_lake_compaction.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    with SimulatorProcess(tmp_path / "sim", alerts=8, start=start.isoformat(), end=end.isoformat(), seed=5) as sim:
        connection = json.loads(sim.connection_uri())
        connection["conn_type"] = "mde"
        port = free_port()
        env = {
            "PATH": f"{venv_bin}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW_CONN_MDE_DEFAULT": json.dumps(connection), "AIRFLOW_VAR_MDE_LAKE_ROOT": str(lake),
            "REQUESTS_CA_BUNDLE": sim.ca_bundle, "SSL_CERT_FILE": sim.ca_bundle,
            "MDE_RATE_LIMIT_LEDGER_DIR": str(tmp_path / "ledger"), "MDE_ALERT_IPS_SETTLE_SECONDS": "0",
        }  # fmt: skip

        def airflow(*args: str, status: int = 0) -> str:
            proc = subprocess.run([str(venv_bin / "airflow"), *args], env=env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=900)  # fmt: skip
            assert proc.returncode == status, f"airflow {args}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            return proc.stdout + proc.stderr

        airflow("db", "migrate")
        airflow("pools", "import", str(REPO / "include" / "pools.json"))
        assert "Connection success!" in airflow("connections", "test", "mde_default")
        env["AIRFLOW_CONN_MDE_WRONG"] = json.dumps({**connection, "password": WRONG_SECRET})
        refused = airflow("connections", "test", "mde_wrong", status=1)
        assert "Connection failed!" in refused and "MdeAuthenticationError" in refused and WRONG_SECRET not in refused
        airflow("dags", "test", "mde_alert_ips", end.isoformat())
        comparison = lake_check.compare(lake, sim.ground_truth(), lake_check.hours(start, end))
        assert comparison.exact and comparison.expected_alerts > 0, str(comparison)

        with open(tmp_path / "api-server.log", "w") as log:
            server = subprocess.Popen([str(venv_bin / "airflow"), "api-server"], env=env, cwd=tmp_path,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            token = api_token(base, tmp_path / "home", server, tmp_path / "api-server.log")
            page = http_get(f"{base}/mde/", token)
            assert "<title>MDE alert IPs: status</title>" in page
            status = json.loads(http_get(f"{base}/mde/api/status", token))
            assert status["dag_id"] == "mde_alert_ips" and status["errors"] == [], status
            [mde] = [t for t in json.loads(http_get(f"{base}/ui/connections/hook_meta", token)) if t["connection_type"] == "mde"]
            assert mde["hook_name"] == "Microsoft Defender for Endpoint"
            assert set(mde["extra_fields"]) >= {"tenant_id", "cloud", "certificate_data", "use_managed_identity",
                                                "use_workload_identity", "rate_limits", "rate_limit_ledger"}  # fmt: skip
            assert mde["standard_fields"]["login"]["title"] == "Client ID"
            # The form's Test button: the REST API tests what the form holds, before saving.
            form = {"connection_id": "mde_form", "conn_type": "mde", "host": connection["host"],
                    "login": connection["login"], "password": connection["password"],
                    "extra": json.dumps(connection["extra"])}  # fmt: skip
            tested = json.loads(http_post(f"{base}/api/v2/connections/test", token, form))
            assert tested["status"] is True and "listed 1 alert" in tested["message"], tested
            tested = json.loads(http_post(f"{base}/api/v2/connections/test", token, {**form, "password": WRONG_SECRET}))
            assert tested["status"] is False and "MdeAuthenticationError" in tested["message"], tested
            assert WRONG_SECRET not in tested["message"]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode()


def http_post(url: str, token: str, body: dict) -> str:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read().decode()


def api_token(base: str, home: Path, server: subprocess.Popen, log: Path) -> str:
    """The admin's token from the stock SimpleAuthManager, once the api-server answers."""
    deadline = time.monotonic() + 300
    while True:
        assert server.poll() is None, f"the api-server exited:\n{log.read_text()[-4000:]}"
        passwords = home / "simple_auth_manager_passwords.json.generated"
        try:
            body = json.dumps({"username": "admin", "password": json.loads(passwords.read_text())["admin"]}).encode()
            request = urllib.request.Request(f"{base}/auth/token", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["access_token"]
        except (OSError, ValueError, KeyError):
            assert time.monotonic() < deadline, f"no api-server at {base}:\n{log.read_text()[-4000:]}"
            time.sleep(1)


def test_a_lock_that_repins_an_image_package_stops_the_build(tmp_path, built_wheel):
    """The issue's failure: a lock compiled without the constraints re-pins
    python-dateutil past flask-appbuilder's bound. The Dockerfile's rule stops it."""
    lock = (REPO / "requirements.lock").read_text()
    image_version = pins(constraints_file())["python-dateutil"]
    assert f"python-dateutil=={image_version}" in lock
    bad = tmp_path / "requirements.lock"
    bad.write_text(lock.replace(f"python-dateutil=={image_version}", "python-dateutil==2.8.2"))
    proc = image_check("--lock", str(bad), "--dist", str(built_wheel.parent))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the Dockerfile's RUN exited" in proc.stderr and "python-dateutil" in proc.stderr
