"""Dockerfile and .dockerignore: hadolint, and what the image must and must not contain."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
from dockerfile_parse import DockerfileParser

from conftest import AIRFLOW_SERVICES, CONTAINER_HOME, REPO, named_volumes, venv_tool

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
# Build outputs the image copies: `make dist` makes them before `docker compose build`.
BUILT = {"dist"}


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    return [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]


def copies(instructions) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD, flags dropped."""
    found = []
    for instruction, value in instructions:
        if instruction in ("COPY", "ADD"):
            words = [w for w in shlex.split(value) if not w.startswith("--")]
            found.append((words[:-1], words[-1]))
    return found


def test_hadolint_finds_nothing():
    proc = subprocess.run(
        [venv_tool("hadolint"), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=120,
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], json.dumps(findings, indent=1)


def test_base_image_matches_the_lock(instructions):
    lock = LOCK.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock, re.MULTILINE))
    python = re.search(r"--python-version (\d+\.\d+)", lock).group(1)
    froms = [value for instruction, value in instructions if instruction == "FROM"]
    assert froms == [f"apache/airflow:{pins['apache-airflow']}-python{python}"]
    assert froms == ["apache/airflow:3.3.2-python3.11"]


def test_installs_the_locked_requirements(instructions):
    sources = {dest: src for src, dest in copies(instructions)}
    lock_in_image = next(dest for dest, src in sources.items() if src == ["requirements.lock"])
    runs = [value for instruction, value in instructions if instruction == "RUN"]
    install = [run for run in runs if "pip install" in run]
    assert len(install) == 2
    assert f"-r {lock_in_image}" in install[0] and "--no-cache-dir" in install[0]
    assert "pip check" in install[0]
    # Then the pipeline's wheel (made by `make dist`), adding nothing the lock did not pin.
    wheels_in_image = next(dest for dest, src in sources.items() if src == ["dist"])
    assert f"--no-deps {wheels_in_image}/*.whl" in install[1] and "pip check" in install[1]
    assert ["plugins"] not in sources.values()  # the wheel, not a copy of plugins/
    # Nothing else gets installed unpinned, and not at container start either.
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in DOCKERFILE.read_text()


def test_copies_only_existing_repo_paths_and_no_secret(instructions):
    for sources, _ in copies(instructions):
        for source in sources:
            assert (REPO / source).exists() or source in BUILT, source
            assert source not in (".", "./") and not source.startswith(".env"), source
    # No ADD (remote fetches), no ENV/ARG: settings and secrets come at run time.
    assert [i for i, _ in instructions if i in ("ADD", "ENV", "ARG")] == []


def test_runs_as_the_airflow_user(instructions):
    users = [value for instruction, value in instructions if instruction == "USER"]
    assert users[-1] == "50000"


def test_volume_folders_exist_in_the_image(instructions, local_model):
    """Folders that named volumes are mounted on are created (and owned) in the image."""
    made = " ".join(value for instruction, value in instructions if instruction == "RUN" and "mkdir" in value)
    for name in AIRFLOW_SERVICES:
        for target, volume in named_volumes(local_model["services"][name]).items():
            if volume in ("mde-lake", "mde-rate-ledger", "mde-sim-state"):
                assert target in made and "chown 50000:0 " in made, target


def test_dockerignore_lets_in_only_what_the_image_copies(instructions):
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything out first: an allow-list
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    copied = sorted(source for sources, _ in copies(instructions) for source in sources)
    assert sorted(allowed) == copied
    for path in allowed:
        assert (REPO / path).exists() or path in BUILT, path
        assert not path.startswith(".env")
    # Inside the allowed folders, env files stay out too (patterns after the exceptions win).
    last_exception = max(i for i, p in enumerate(patterns) if p.startswith("!"))
    assert {"**/.env", "**/.env.*"} <= set(patterns[last_exception + 1:])
