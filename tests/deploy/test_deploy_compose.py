"""docker-compose.yaml, checked by the compose-spec schema and by Docker Compose itself."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from conftest import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    CONTAINER_HOME,
    REPO,
    SANDBOX_SERVICES,
    bind_mounts,
    compose_model,
    host_path,
    named_volumes,
    render_env,
    run_compose,
    venv_tool,
)

CORE_SERVICES = {"postgres", "redis", *AIRFLOW_SERVICES}
LONG_RUNNING_AIRFLOW = [s for s in AIRFLOW_SERVICES if s != "airflow-init"]


def test_compose_file_matches_the_compose_spec_schema():
    proc = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("profiles", [(), ("local",), ("simulator",), ("azurite",), ("debug",), ("flower",)])
def test_docker_compose_loads_the_project(local_env_file, profiles):
    proc = run_compose(local_env_file, "config", "--quiet", profiles=profiles)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "variable",
    ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
     "_AIRFLOW_WWW_USER_PASSWORD"],
)
def test_a_missing_secret_stops_compose_with_its_name(tmp_path, variable):
    env_file = render_env(".env.local.example", tmp_path / "env", **{variable: ""})
    proc = run_compose(env_file, "config", "--quiet")
    assert proc.returncode != 0
    assert variable in proc.stderr and ".env" in proc.stderr


def test_a_missing_env_file_stops_compose(tmp_path):
    env_file = render_env(".env.local.example", tmp_path / "env")
    proc = run_compose(env_file, "config", "--quiet")
    assert proc.returncode == 0
    env_file.rename(tmp_path / "moved")
    assert run_compose(tmp_path / "env", "config", "--quiet").returncode != 0


def test_services_and_images(tenant_model, local_model):
    assert set(tenant_model["services"]) == CORE_SERVICES
    assert set(local_model["services"]) == CORE_SERVICES | set(SANDBOX_SERVICES)
    services = local_model["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7.2-bookworm"
    assert services["azurite"]["image"].startswith("mcr.microsoft.com/azure-storage/azurite:")
    # Every Airflow container (and the simulator) runs the image built from ./Dockerfile.
    built = [*AIRFLOW_SERVICES, "mde-simulator", "mde-lake-init"]
    images = {services[name]["image"] for name in built}
    assert images == {"mde-alert-ips-airflow:3.3.2"}
    for name in built:
        assert services[name]["build"]["context"] == str(REPO)
        assert services[name]["build"]["dockerfile"] == "Dockerfile"


def test_airflow_components_run_their_commands(tenant_model):
    services = tenant_model["services"]
    assert services["airflow-apiserver"]["command"] == ["api-server"]
    assert services["airflow-scheduler"]["command"] == ["scheduler"]
    assert services["airflow-dag-processor"]["command"] == ["dag-processor"]
    assert services["airflow-worker"]["command"] == ["celery", "worker"]
    assert services["airflow-triggerer"]["command"] == ["triggerer"]
    assert services["airflow-apiserver"]["ports"][0]["target"] == 8080
    assert services["airflow-apiserver"]["ports"][0]["published"] == "8080"
    assert services["airflow-apiserver"]["ports"][0]["host_ip"] == "127.0.0.1"


def test_airflow_environment(filled_tenant_env_file, tenant_model):
    from dotenv import dotenv_values

    env_file = dotenv_values(filled_tenant_env_file)
    for name in AIRFLOW_SERVICES:
        env = tenant_model["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        if name in ("airflow-scheduler", "airflow-worker"):  # the broker's password, where Celery runs
            assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{env_file['REDIS_PASSWORD']}@redis:6379/0"
        password = env_file["POSTGRES_PASSWORD"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"postgresql+psycopg2://airflow:{password}@postgres/airflow"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+postgresql://airflow:{password}@postgres/airflow"
        # One value of each shared secret for every component, from .env.
        assert env["AIRFLOW__CORE__FERNET_KEY"] == env_file["FERNET_KEY"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == env_file["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert env["AIRFLOW__API__SECRET_KEY"] == env_file["AIRFLOW__API__SECRET_KEY"]
        assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        assert not env.get("_PIP_ADDITIONAL_REQUIREMENTS")
        assert env["AIRFLOW_VAR_MDE_LAKE_CONN_ID"] == "mde_lake"
    # Connections come from .env, verbatim, where they are used.
    for name in ("airflow-worker", "airflow-init"):
        env = tenant_model["services"][name]["environment"]
        assert env["AIRFLOW_CONN_MDE_DEFAULT"] == env_file["AIRFLOW_CONN_MDE_DEFAULT"]
    assert tenant_model["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env_file["POSTGRES_PASSWORD"]
    redis = tenant_model["services"]["redis"]
    assert redis["environment"]["REDISCLI_AUTH"] == env_file["REDIS_PASSWORD"]  # its healthcheck uses it too
    assert "--requirepass" in " ".join(redis["command"]) and env_file["REDIS_PASSWORD"] not in " ".join(redis["command"])


# Which service may see which secret of .env (through any variable, under any name).
SECRET_VARIABLES = ("POSTGRES_PASSWORD", "FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                    "_AIRFLOW_WWW_USER_PASSWORD", "FLOWER_BASIC_AUTH", "AIRFLOW_CONN_MDE_DEFAULT",
                    "AIRFLOW_CONN_MDE_LAKE", "REDIS_PASSWORD")
AIRFLOW_KEYS = {"POSTGRES_PASSWORD", "FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"}
CONNECTIONS = {"AIRFLOW_CONN_MDE_DEFAULT", "AIRFLOW_CONN_MDE_LAKE"}
BROKER = {"REDIS_PASSWORD"}
SEES = {
    "postgres": {"POSTGRES_PASSWORD"},
    "redis": BROKER,
    "airflow-apiserver": AIRFLOW_KEYS,
    "airflow-scheduler": AIRFLOW_KEYS | BROKER,
    "airflow-dag-processor": AIRFLOW_KEYS,
    "airflow-triggerer": AIRFLOW_KEYS,
    "airflow-worker": AIRFLOW_KEYS | CONNECTIONS | BROKER,
    "airflow-init": AIRFLOW_KEYS | CONNECTIONS | {"_AIRFLOW_WWW_USER_PASSWORD"},
    "airflow-cli": AIRFLOW_KEYS | CONNECTIONS | BROKER,
    "flower": {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"} | BROKER,
    "mde-simulator": set(),
    "azurite": set(),
    "mde-lake-init": {"AIRFLOW_CONN_MDE_LAKE"},
}


def test_each_service_sees_only_the_secrets_it_needs(tmp_path):
    """Every secret gets a unique value; a service sees a secret when any of its
    environment values contains it. No env_file hands .env to a container."""
    from dotenv import dotenv_values

    env_file = render_env(".env.local.example", tmp_path / "env")
    values = dotenv_values(env_file)
    model = compose_model(env_file, profiles=("local", "flower", "debug"))
    assert set(model["services"]) == set(SEES)
    for name, service in model["services"].items():
        assert "env_file" not in service, name
        env = service.get("environment") or {}
        text = "\n".join(str(v) for v in env.values() if v is not None)
        text += "\n" + " ".join(service.get("command") or [])
        seen = {variable for variable in SECRET_VARIABLES if values[variable] in text}
        assert seen == SEES[name], name
    assert "env_file" not in yaml.safe_load(COMPOSE_FILE.read_text())["x-airflow-common"]


@pytest.mark.parametrize("bind", [None, "0.0.0.0", "10.1.2.3"])
def test_published_ports_listen_on_loopback_unless_opened(tmp_path, bind):
    overrides = {"AIRFLOW_BIND_ADDRESS": bind} if bind else {}
    env_file = render_env(".env.local.example", tmp_path / "env", **overrides)
    services = compose_model(env_file, profiles=("local", "flower", "debug"))["services"]
    published = {
        (name, port["target"]): port["host_ip"]
        for name, service in services.items() for port in service.get("ports", [])
    }
    opened = bind or "127.0.0.1"
    assert published == {
        ("airflow-apiserver", 8080): opened,
        ("flower", 5555): opened,
        # The sandbox's parts stay on loopback whatever AIRFLOW_BIND_ADDRESS says.
        ("mde-simulator", 8443): "127.0.0.1",
        ("azurite", 10000): "127.0.0.1",
    }
    assert all(port.get("host_ip") for service in services.values() for port in service.get("ports", []))


def test_flower_is_in_its_own_profile_and_refuses_to_start_without_basic_auth(tmp_path, local_env_file):
    from dotenv import dotenv_values

    assert "flower" not in compose_model(local_env_file, profiles=("local",))["services"]
    flower = compose_model(local_env_file, profiles=("flower",))["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    credential = dotenv_values(local_env_file)["FLOWER_BASIC_AUTH"]
    user, password = credential.split(":", 1)
    assert user and len(password) >= 32
    assert flower["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == credential
    assert "--user" in " ".join(flower["healthcheck"]["test"])
    # Its command, run by bash as the image's entrypoint would, with `airflow` recorded.
    assert flower["command"][:2] == ["bash", "-c"]
    script = flower["command"][2].replace("$$", "$")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "airflow").write_text('#!/bin/sh\necho "airflow $*"\n')
    (bin_dir / "airflow").chmod(0o755)

    def start(auth):
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": auth}
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)

    refused = start("")
    assert refused.returncode == 1 and "FLOWER_BASIC_AUTH" in refused.stderr and "airflow" not in refused.stdout
    started = start(credential)
    assert started.returncode == 0 and started.stdout.strip() == "airflow celery flower"
    assert credential not in started.stdout + started.stderr


def test_proxy_settings_reach_every_airflow_container_and_spare_the_services(tmp_path):
    env_file = render_env(".env.local.example", tmp_path / "env",
                          HTTPS_PROXY="http://proxy.corp.example:3128", NO_PROXY=".corp.example")
    services = compose_model(env_file, profiles=("local", "flower", "debug"))["services"]
    internal = {"localhost", "127.0.0.1", "airflow-apiserver", "postgres", "redis", "mde-simulator", "azurite"}
    assert internal - {"localhost", "127.0.0.1"} <= set(services)
    for name, service in services.items():
        env = service.get("environment") or {}
        if "build" in service and name != "mde-simulator":
            assert env["HTTPS_PROXY"] == "http://proxy.corp.example:3128", name
            no_proxy = env["NO_PROXY"].split(",")
            assert internal <= set(no_proxy) and ".corp.example" in no_proxy, name
        else:
            assert "HTTPS_PROXY" not in env, name
    # Every host name a worker reaches inside the project bypasses the proxy.
    worker = services["airflow-worker"]["environment"]
    for url in (worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"], worker["AIRFLOW__CELERY__BROKER_URL"],
                worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], json.loads(worker["AIRFLOW_CONN_MDE_DEFAULT"])["host"]):
        host = re.match(r"^[a-z0-9+]+://(?:[^@/]*@)?([^:/]+)", url).group(1)
        assert host in worker["NO_PROXY"].split(","), url
    # Without a proxy configured, nothing is set but the internal list.
    plain = compose_model(render_env(".env.local.example", tmp_path / "plain"))["services"]["airflow-worker"]
    assert plain["environment"]["HTTPS_PROXY"] is None
    assert plain["environment"]["NO_PROXY"] == "localhost,127.0.0.1,airflow-apiserver,postgres,redis,mde-simulator,azurite"


def test_the_compose_version_it_needs_is_stated():
    """depends_on.required (the worker's optional sandbox dependencies) came in Compose 2.20."""
    header = COMPOSE_FILE.read_text().split("---", 1)[0]
    assert "Docker Compose 2.20 or newer" in header
    assert "Compose 2.20" in (REPO / "docs" / "DEPLOYMENT.md").read_text()


def test_no_literal_secret_in_the_compose_file():
    """Secret settings are ${VAR} interpolations or names taken from .env as they are
    (no value in the file); URLs carry no literal password."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    environments = [raw["x-airflow-common"]["environment"]]
    environments += [block for key, block in raw.items() if key.startswith("x-") and key != "x-airflow-common"]
    environments += [s.get("environment") or {} for s in raw["services"].values()]
    secret_name = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|_AUTH$|^AIRFLOW_CONN_")
    for environment in environments:
        for name, value in environment.items():
            if value is None:
                continue
            value = str(value)
            if secret_name.search(name):
                assert value.startswith("${") and value.endswith("}"), name
            for password in re.findall(r"://[^:/@\s]*:([^@\s]*)@", value):
                assert password == "" or password.startswith("${"), name


def test_lake_and_ledger_are_named_volumes_shared_by_the_workers(tenant_model, local_model):
    for model in (tenant_model, local_model):
        for name in AIRFLOW_SERVICES:
            service = model["services"][name]
            env = service["environment"]
            volumes = named_volumes(service)
            # The ledger directory the limiter uses is the shared mde-rate-ledger volume.
            assert volumes[env["MDE_RATE_LIMIT_LEDGER_DIR"]] == "mde-rate-ledger"
            assert volumes[f"{CONTAINER_HOME}/logs"] == "airflow-logs"
            assert volumes[f"{CONTAINER_HOME}/lake"] == "mde-lake"
        # Replicas of the worker (--scale) must all mount the same ledger: a named
        # volume, not an anonymous one or a tmpfs, and no fixed container name.
        worker = model["services"]["airflow-worker"]
        assert "container_name" not in worker
        assert model["volumes"]["mde-rate-ledger"]["name"].endswith("_mde-rate-ledger")
    # By default the lake is that volume; the sandbox points it at Azurite instead.
    worker_env = tenant_model["services"]["airflow-worker"]["environment"]
    assert worker_env["AIRFLOW_VAR_MDE_LAKE_ROOT"] == f"{CONTAINER_HOME}/lake"
    local_env = local_model["services"]["airflow-worker"]["environment"]
    assert local_env["AIRFLOW_VAR_MDE_LAKE_ROOT"].startswith("abfs://")


def test_code_folders_are_mounted_from_the_repo(tenant_model):
    for name in AIRFLOW_SERVICES:
        mounts = bind_mounts(tenant_model["services"][name])
        for folder in ("dags", "include"):
            assert mounts[f"{CONTAINER_HOME}/{folder}"] == REPO / folder
        # The package comes from the image's wheel (Dockerfile), not from a mounted plugins/.
        assert f"{CONTAINER_HOME}/plugins" not in mounts


def test_every_host_path_exists_in_the_repo(local_model):
    for name, service in local_model["services"].items():
        for source in bind_mounts(service).values():
            assert source.exists() and REPO in (source, *source.parents), f"{name}: {source}"
        if "build" in service:
            context = REPO / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file()


def test_container_paths_the_services_run_exist_in_the_repo(local_model):
    """Scripts and files named in commands and env resolve, through the mounts, to repo files."""
    services = local_model["services"]
    init = services["airflow-init"]
    named = [
        ("airflow-init", init["command"][0]),
        ("airflow-init", init["environment"]["MDE_POOLS_FILE"]),
        ("mde-lake-init", services["mde-lake-init"]["command"][1]),
    ]
    for service_name, container_path in named:
        path = host_path(services[service_name], container_path)
        assert path is not None and path.is_file(), f"{service_name}: {container_path}"
    assert host_path(init, init["environment"]["MDE_POOLS_FILE"]) == REPO / "include" / "pools.json"
    # The simulator's package is mounted where PYTHONPATH points.
    simulator = services["mde-simulator"]
    package = host_path(simulator, simulator["environment"]["PYTHONPATH"] + "/mde_simulator/__main__.py")
    assert package is not None and package.is_file()


def test_healthchecks(local_model):
    services = local_model["services"]

    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert probe("postgres") == "CMD pg_isready -U airflow"
    assert probe("redis") == "CMD redis-cli ping"
    assert probe("airflow-apiserver") == "CMD curl --fail http://localhost:8080/api/v2/monitor/health"
    assert probe("airflow-scheduler") == "CMD curl --fail http://localhost:8974/health"
    assert "airflow jobs check --job-type DagProcessorJob" in probe("airflow-dag-processor")
    assert "airflow jobs check --job-type TriggererJob" in probe("airflow-triggerer")
    assert "celery_executor.app inspect ping" in probe("airflow-worker")
    # The simulator is healthy only when it serves TLS with the CA it wrote.
    assert "/opt/airflow/mde-sim/ca.pem" in probe("mde-simulator") and "https://localhost:8443" in probe("mde-simulator")
    assert "10000" in probe("azurite")
    for name in [*LONG_RUNNING_AIRFLOW, "postgres", "redis", "mde-simulator", "azurite"]:
        assert services[name]["healthcheck"]["interval"], name


def test_start_order(local_model):
    services = local_model["services"]
    for name in LONG_RUNNING_AIRFLOW:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    worker = services["airflow-worker"]["depends_on"]
    assert worker["airflow-apiserver"]["condition"] == "service_healthy"
    # Sandbox services are waited for only when their profile runs.
    assert worker["mde-simulator"] == {"condition": "service_healthy", "required": False}
    assert worker["mde-lake-init"] == {"condition": "service_completed_successfully", "required": False}
    assert services["mde-lake-init"]["depends_on"]["azurite"]["condition"] == "service_healthy"
    assert services["mde-simulator"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_init_service(local_model):
    init = local_model["services"]["airflow-init"]
    assert init["entrypoint"] == ["/bin/bash"]
    assert init["command"] == ["/opt/airflow/include/deploy/airflow_init.sh"]
    assert init["user"] == "0:0"  # to hand the volumes to AIRFLOW_UID, like the official file
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"]
    # It mounts every volume it has to chown.
    assert {"airflow-logs", "mde-lake", "mde-rate-ledger", "mde-sim-state"} <= set(named_volumes(init).values())


def test_profiles():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert raw["mde-simulator"]["profiles"] == ["local", "simulator"]
    assert raw["azurite"]["profiles"] == ["local", "azurite"]
    assert raw["mde-lake-init"]["profiles"] == ["local", "azurite"]
    for name in CORE_SERVICES:
        assert "profiles" not in raw[name], name


def test_sandbox_simulator_matches_the_sandbox_connection(local_model):
    """The simulator's identity flags, as compose renders them, are the connection's."""
    from mde_simulator.config import build_parser

    services = local_model["services"]
    command = services["mde-simulator"]["command"]
    assert command[:3] == ["python", "-m", "mde_simulator"]
    options = build_parser().parse_args(command[3:])  # the simulator's real CLI
    worker_env = services["airflow-worker"]["environment"]
    connection = json.loads(worker_env["AIRFLOW_CONN_MDE_DEFAULT"])
    assert connection["login"] == options.client_id
    assert connection["password"] == options.client_secret
    assert connection["extra"]["tenant_id"] == options.tenant_id
    service_url = f"https://mde-simulator:{options.port}"
    assert connection["host"] == service_url and connection["extra"]["authority_host"] == service_url
    assert "mde-simulator" in options.san and options.public_host == "mde-simulator"
    # It listens on the compose network; its control plane (/_sim/*) answers loopback
    # clients inside its container only.
    assert options.host == "0.0.0.0" and not options.allow_remote_control
    # The CA the workers trust is the one the simulator writes, on a shared volume.
    state_dir = str(options.state_dir)
    assert worker_env["REQUESTS_CA_BUNDLE"] == f"{state_dir}/ca.pem"
    sim_volume = named_volumes(services["mde-simulator"])[state_dir]
    assert named_volumes(services["airflow-worker"])[state_dir] == sim_volume
    assert services["mde-simulator"]["user"] == services["airflow-worker"]["user"]


def test_sandbox_lake_points_at_azurite(local_model):
    services = local_model["services"]
    command = services["azurite"]["command"]
    assert command[0] == "azurite-blob"
    port = command[command.index("--blobPort") + 1]
    assert command[command.index("--blobHost") + 1] == "0.0.0.0"
    env = services["airflow-worker"]["environment"]
    extra = json.loads(env["AIRFLOW_CONN_MDE_LAKE"])["extra"]
    settings = dict(part.split("=", 1) for part in extra["connection_string"].strip(";").split(";"))
    assert settings["BlobEndpoint"] == f"http://azurite:{port}/{settings['AccountName']}"
    assert env["AIRFLOW_VAR_MDE_LAKE_ROOT"].startswith(f"abfs://mde-lake@{settings['AccountName']}.")
    assert services["mde-lake-init"]["environment"]["AIRFLOW_CONN_MDE_LAKE"] == env["AIRFLOW_CONN_MDE_LAKE"]
