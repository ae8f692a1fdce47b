"""The image build, rehearsed: include/deploy/image_check.py (`make image-check`).

The Dockerfile's pip RUN runs verbatim on a venv holding the image's package set
(constraints/airflow-<version>-python<py>.txt); see the script's docstring for what is
and is not rehearsed. The venv is the repo's .image-venv/, shared with `make
image-check`: a fresh clone pays the download of the image's wheels once.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from dockerfile_parse import DockerfileParser

from conftest import REPO

pytestmark = pytest.mark.slow
SCRIPT = REPO / "include" / "deploy" / "image_check.py"
WORKDIR = REPO / ".image-venv"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


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


def test_the_dockerfile_install_step_passes_on_the_images_package_set():
    proc = image_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    image = pins(constraints_file())
    assert f"kept     all {len(image)} packages of the image at their versions; pip check OK" in out
    # What the step adds is exactly what the lock has beyond the image.
    lock = pins(REPO / "requirements.lock")
    extra = sorted(f"{n}=={v}" for n, v in lock.items() if n not in image)
    assert extra, "the lock adds nothing to the image: the rehearsal would prove nothing"
    [added] = [line for line in out.splitlines() if line.startswith("added ")]
    assert sorted(added.split(None, 1)[1].split(", ")) == extra
    # The RUN rehearsed is the Dockerfile's, verbatim.
    assert "pip install --no-cache-dir -r /opt/airflow/requirements.lock" in out and "pip check" in out


def test_a_lock_that_repins_an_image_package_stops_the_build(tmp_path):
    """The issue's failure: a lock compiled without the constraints re-pins
    python-dateutil past flask-appbuilder's bound. The Dockerfile's rule stops it."""
    lock = (REPO / "requirements.lock").read_text()
    image_version = pins(constraints_file())["python-dateutil"]
    assert f"python-dateutil=={image_version}" in lock
    bad = tmp_path / "requirements.lock"
    bad.write_text(lock.replace(f"python-dateutil=={image_version}", "python-dateutil==2.8.2"))
    proc = image_check("--lock", str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the Dockerfile's RUN exited" in proc.stderr and "python-dateutil" in proc.stderr
