"""The local sandbox's settings work against the real parts they point at.

* the simulator, started with the flags docker-compose renders for mde-simulator, issues
  a token to the sandbox connection from .env.local.example and serves alerts and IPs
  to it, over TLS verified against the CA it wrote; its certificate names the host the
  containers use;
* include/deploy/create_lake_container.py creates the lake container in a real Azurite
  through the sandbox's own mde_lake connection (the well-known development key).

Host names that only exist on the compose network (mde-simulator, azurite) are swapped
for the loopback address where the test process connects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from conftest import REPO

pytestmark = pytest.mark.slow
VENV_PYTHON = str(Path(sys.executable))


def test_sandbox_connection_talks_to_the_simulator_as_compose_starts_it(tmp_path, local_model):
    from mde_pipeline.api.client import MdeClient
    from mde_pipeline.api.config import MdeConnectionConfig
    from mde_simulator.config import build_parser
    from mde_simulator.process import SimulatorProcess

    services = local_model["services"]
    flags = build_parser().parse_args(services["mde-simulator"]["command"][3:])
    connection = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_MDE_DEFAULT"])

    # Loopback and a free port here (0.0.0.0:8443 in compose). Without --public-host: the
    # simulator would advertise token endpoints at mde-simulator, a name only the
    # compose network resolves.
    with SimulatorProcess(
        tmp_path / "sim", host="127.0.0.1", port=0,
        tenant_id=flags.tenant_id, client_id=flags.client_id, client_secret=flags.client_secret,
        alerts=flags.alerts, seed=flags.seed, san=flags.san,
    ) as sim:
        names = x509.load_pem_x509_certificate((tmp_path / "sim" / "server.pem").read_bytes()).extensions \
            .get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert "mde-simulator" in names  # the host name AIRFLOW_CONN_MDE_DEFAULT uses
        local_url = sim.base_url
        extra = dict(connection["extra"], authority_host=local_url, ca_bundle=sim.ca_bundle,
                     rate_limit_ledger_dir=str(tmp_path / "ledger"))
        config = MdeConnectionConfig.from_parts(
            host=local_url, login=connection["login"], password=connection["password"], extra=extra)
        with MdeClient(config) as client:
            page = client.list_alerts_page(filter=None, top=5)
            assert len(page["value"]) == 5
            truth = sim.ground_truth()
            assert len(truth["alerts"]) == flags.alerts
            ips = client.get_alert_ips(page["value"][0]["id"])
            assert ips is None or isinstance(ips, list)
        stats = sim.stats()
        assert stats["clients"] and all(c["throttled"] == 0 for c in stats["clients"])


def test_lake_init_and_probe_against_azurite_and_the_simulator(tmp_path, local_model):
    """mde-lake-init creates the container; `check_connections.py --probe` then reaches
    both services with the sandbox's connections, and names a wrong secret's failure
    without showing the secret."""
    from mde_simulator.config import build_parser
    from mde_simulator.process import SimulatorProcess

    from tests.lake.azurite import AzuriteServer

    services = local_model["services"]
    worker_env = services["airflow-worker"]["environment"]
    lake_init = services["mde-lake-init"]
    assert lake_init["command"] == ["python", "/opt/airflow/include/deploy/create_lake_container.py"]
    create = REPO / "include" / "deploy" / "create_lake_container.py"
    check = REPO / "include" / "deploy" / "check_connections.py"
    container = f"mde-lake-{uuid.uuid4().hex[:8]}"
    root = worker_env["AIRFLOW_VAR_MDE_LAKE_ROOT"].replace("abfs://mde-lake@", f"abfs://{container}@")
    flags = build_parser().parse_args(services["mde-simulator"]["command"][3:])
    mde_connection = json.loads(worker_env["AIRFLOW_CONN_MDE_DEFAULT"])
    lake_connection = worker_env["AIRFLOW_CONN_MDE_LAKE"]
    assert "http://azurite:10000/" in lake_connection

    with AzuriteServer() as azurite, SimulatorProcess(
        tmp_path / "sim", host="127.0.0.1", port=0, tenant_id=flags.tenant_id, client_id=flags.client_id,
        client_secret=flags.client_secret, alerts=flags.alerts, seed=flags.seed,
    ) as sim:
        # The sandbox's connections, with the compose network's host names swapped for
        # where the services listen here.
        mde_connection["host"] = mde_connection["extra"]["authority_host"] = sim.base_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.pop("PYTHONPATH", None)
        env.update(
            AIRFLOW_HOME=str(tmp_path / "home"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW_VAR_MDE_LAKE_ROOT=root,
            AIRFLOW_VAR_MDE_LAKE_CONN_ID=lake_init["environment"]["AIRFLOW_VAR_MDE_LAKE_CONN_ID"],
            AIRFLOW_CONN_MDE_LAKE=lake_connection.replace("http://azurite:10000/", f"http://127.0.0.1:{azurite.port}/"),
            AIRFLOW_CONN_MDE_DEFAULT=json.dumps(mde_connection),
            REQUESTS_CA_BUNDLE=sim.ca_bundle,
            MDE_RATE_LIMIT_LEDGER_DIR=str(tmp_path / "ledger"),
        )

        def run(script: Path, *args: str) -> subprocess.CompletedProcess:
            return subprocess.run([VENV_PYTHON, str(script), *args], env=env,
                                  capture_output=True, text=True, timeout=300)

        probe = run(check, "--probe")
        assert probe.returncode == 1
        assert f"lake container '{container}' does not exist" in probe.stderr

        first = run(create, "--timeout", "30")
        assert first.returncode == 0, first.stderr[-3000:]
        assert f"lake container '{container}' created" in first.stdout
        assert azurite.blob_service().get_container_client(container).exists()

        probe = run(check, "--probe")
        assert probe.returncode == 0, probe.stderr[-3000:]
        assert "listed an alert" in probe.stdout and "container found" in probe.stdout

        wrong = "wrong-" + flags.client_secret
        env["AIRFLOW_CONN_MDE_DEFAULT"] = json.dumps(dict(mde_connection, password=wrong))
        probe = run(check, "--probe")
        assert probe.returncode == 1 and "mde_default:" in probe.stderr, probe.stderr[-2000:]
        assert wrong not in probe.stdout + probe.stderr


def test_ensure_container_retries_until_the_store_answers():
    """Retry logic on fsspec's in-memory filesystem (a real one), failing twice first.

    (Against an unreachable Azurite the storage SDK's own retries take ~90 s per call
    before the error reaches this loop: too slow for the suite.)"""
    from fsspec.implementations.memory import MemoryFileSystem

    sys.path.insert(0, str(REPO / "include" / "deploy"))
    import create_lake_container

    class Flaky(MemoryFileSystem):
        failures = 2
        assume_container_exists = None  # adlfs's default: lookup errors read as "exists"

        def exists(self, path, **kwargs):
            if Flaky.failures:
                Flaky.failures -= 1
                raise ConnectionError("store not up yet")
            return super().exists(path, **kwargs)

    class Location:
        root = "lake-container/prefix"
        fs = Flaky(skip_instance_cache=True)

    clock = {"now": 0.0}
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock["now"] += seconds

    assert create_lake_container.ensure_container(Location, timeout=10, sleep=sleep, now=lambda: clock["now"])
    assert sleeps == [2.0, 2.0] and Location.fs.exists("lake-container")
    assert Location.fs.assume_container_exists is False
    assert not create_lake_container.ensure_container(Location, timeout=10, sleep=sleep, now=lambda: clock["now"])

    Flaky.failures = 100
    with pytest.raises(ConnectionError):
        create_lake_container.ensure_container(Location, timeout=5, sleep=sleep, now=lambda: clock["now"])
