"""Rehearse the Dockerfile's pip steps without a Docker engine (`make image-check`).

The image is ``FROM apache/airflow:<version>-python<py>``; its package set is
reconstructed in ``constraints/airflow-<version>-python<py>.txt`` (``make constraints``).
This script

1. makes a virtualenv holding exactly that package set (``uv pip sync``, wheels only,
   like the image's own venv in ~/.local), and checks it with ``pip check``;
2. runs every ``RUN`` of the Dockerfile that calls pip, verbatim, with that venv's pip
   first on PATH (the image's pip version, from the constraints) and the files the
   Dockerfile COPYs read from the repo: the lock, and the pipeline's wheel from dist/
   (``make dist``; ``--dist`` names another folder holding it);
3. compares the package lists before and after: no package of the image may be up- or
   downgraded or removed, and every pin of the lock and the wheel must be installed.

Not rehearsed (no engine here): the base image's OS layer, the real image's files (this
uses the reconstruction, not ``pip list`` of the pulled image), the user/permission
steps, and compiling C extensions that have no wheel (mysqlclient, python-ldap: the
image builds them against its system libraries). Those few are installed as metadata-only
stand-ins: their real name, version and requirements (PyPI's metadata of that release),
no code, so ``pip`` sees the image's exact package set.

The venv lives in ``.image-venv/`` (git-ignored) and is re-synced to the image's set at
every run, so a run starts from the image's state whatever the previous one added; the
cold run downloads ~450 wheels (uv's cache keeps them and links them into the venv); the
pip RUN then takes about a minute (it downloads the lock's wheels anew: --no-cache-dir).

    python include/deploy/image_check.py [--lock PATH] [--dist DIR] [--workdir .image-venv]

Afterwards ``.image-venv/venv`` is the image's Python environment (image + lock + wheel):
tests/deploy/test_deploy_image_build.py runs Airflow from it.

Exit status 0 when every step passes, 1 otherwise (the failing step is named).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FROM_IMAGE = re.compile(r"^apache/airflow:(?P<version>[0-9][^-\s]*)-python(?P<python>\d+\.\d+)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", re.MULTILINE)
NO_WHEEL = re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s,]+) has no usable wheels")
INDEX = os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"


class Failed(Exception):
    """A step of the rehearsal failed; the message says which and why."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    return {normalize(name): version for name, version in PIN.findall(text)}


def say(message: str) -> None:
    print(message, flush=True)


def run(command: list[str], *, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise Failed(f"`{shlex.join(command)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


# ------------------------------------------------------------------------- Dockerfile


def read_dockerfile(path: Path) -> dict:
    """FROM's Airflow and Python versions, COPY destinations -> repo sources, pip RUNs."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(path))
    froms = [i["value"].split()[0] for i in parser.structure if i["instruction"] == "FROM"]
    if len(froms) != 1 or not FROM_IMAGE.match(froms[0]):
        raise Failed(f"{path.name}: expected one FROM apache/airflow:<version>-python<x.y>, found {froms}")
    match = FROM_IMAGE.match(froms[0])
    copies: dict[str, Path] = {}
    pip_runs: list[str] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "COPY":
            words = [w for w in shlex.split(instruction["value"]) if not w.startswith("--")]
            for source in words[:-1]:
                copies[words[-1].rstrip("/")] = REPO / source
        elif instruction["instruction"] == "RUN" and re.search(r"\bpip\b", instruction["value"]):
            pip_runs.append(instruction["value"])
    if not pip_runs:
        raise Failed(f"{path.name} has no RUN that calls pip: nothing to rehearse")
    return {"image": froms[0], "version": match["version"], "python": match["python"],
            "copies": copies, "pip_runs": pip_runs}


def localize(command: str, copies: dict[str, Path]) -> str:
    """The RUN command with each COPY destination replaced by the file in the repo."""
    for destination in sorted(copies, key=len, reverse=True):
        command = re.sub(rf"(?<![\w/.-]){re.escape(destination)}(?![\w.-])", str(copies[destination]), command)
    return command


# ------------------------------------------------------------------------- stand-ins


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (the package index)
        return response.read()


def release_metadata(name: str, version: str) -> str:
    """The core metadata (METADATA / PKG-INFO) PyPI holds for one release."""
    request = urllib.request.Request(INDEX.rstrip("/") + f"/{normalize(name)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        files = json.load(response)["files"]
    spelled = "[-_.]".join(re.escape(part) for part in normalize(name).split("-"))
    prefix = re.compile(rf"^{spelled}-{re.escape(version)}(-|\.tar\.gz$)", re.I)
    mine = [f for f in files if prefix.match(f["filename"]) and not f.get("yanked")]
    for entry in mine:  # PEP 658: the metadata file next to a distribution
        if entry.get("core-metadata") or entry.get("data-dist-info-metadata"):
            return fetch(entry["url"] + ".metadata").decode()
    for entry in mine:
        if entry["filename"].endswith(".tar.gz"):
            with tarfile.open(fileobj=io.BytesIO(fetch(entry["url"]))) as archive:
                member = next(m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
                return archive.extractfile(member).read().decode()
    raise Failed(f"no metadata for {name}=={version} on {INDEX}")


def stand_in_wheel(name: str, version: str, folder: Path) -> Path:
    """A wheel with the release's real metadata and no code."""
    dist = f"{normalize(name).replace('-', '_')}-{version}"
    wheel = folder / f"{dist}-py3-none-any.whl"
    if wheel.is_file():
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        f"{dist}.dist-info/METADATA": release_metadata(name, version).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: image_check (stand-in)\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    partial = wheel.with_suffix(".part")
    with zipfile.ZipFile(partial, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    partial.rename(wheel)
    return wheel


# ------------------------------------------------------------------------- the image's venv


def uv_binary() -> str:
    local = Path(sys.executable).parent / "uv"
    found = str(local) if local.is_file() else shutil.which("uv")
    if not found:
        raise Failed("uv not found (make install puts it in .venv)")
    return found


def sync_image_venv(constraints: Path, python: str, workdir: Path) -> tuple[Path, list[str]]:
    """The venv holding the image's package set; returns it and the stand-ins used."""
    venv = workdir / "venv"
    py = venv / "bin" / "python"
    if py.is_file():
        probe = run([str(py), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], check=False)
        if probe.returncode != 0 or probe.stdout.strip() != python:
            shutil.rmtree(venv)
    if not py.is_file():
        base = run([sys.executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
        if base != python:
            raise Failed(f"the image runs Python {python}; this rehearsal runs on {base}")
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    requirements = constraints.read_text()
    stand_ins: list[str] = []
    target = workdir / "image-packages.txt"
    # No --compile-bytecode: compiling all ~2.6 GB costs minutes of CPU, and pip never
    # imports them; a process that does (the init test's Airflow CLI) compiles what it uses.
    sync = [uv_binary(), "pip", "sync", "--quiet", "--no-build", "--python", str(py), str(target)]
    for _ in range(10):
        target.write_text(requirements)
        # Offline first: every pin is exact, so uv's cache answers as the index would,
        # without revalidating ~450 index pages (~15 s); online when the cache lacks one.
        proc = run([*sync, "--offline"], check=False)
        if proc.returncode != 0 and not NO_WHEEL.search(proc.stderr):
            proc = run(sync, check=False)
        if proc.returncode == 0:
            return venv, stand_ins
        missing = NO_WHEEL.search(proc.stderr)
        if not missing or normalize(missing[1]) in stand_ins:
            raise Failed(f"installing the image's package set failed:\n{proc.stderr[-3000:]}")
        name, version = missing[1], missing[2]
        wheel = stand_in_wheel(name, version, workdir / "stand-ins")
        stand_ins.append(normalize(name))
        requirements = re.sub(rf"^{re.escape(name)}=={re.escape(version)}\b.*$",
                              f"{name} @ {wheel.resolve().as_uri()}", requirements, flags=re.MULTILINE | re.I)
    raise Failed("too many packages without wheels")


def installed(py: Path) -> dict[str, str]:
    return pins(run([str(py), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"]).stdout)


# ------------------------------------------------------------------------- main


def rehearse(dockerfile: Path, lock: Path | None, workdir: Path, dist: Path | None = None) -> None:
    started = time.monotonic()
    spec = read_dockerfile(dockerfile)
    constraints = REPO / "constraints" / f"airflow-{spec['version']}-python{spec['python']}.txt"
    if not constraints.is_file():
        raise Failed(f"{spec['image']}: no {constraints.relative_to(REPO)} (make constraints)")
    copies = dict(spec["copies"])
    destination = next((d for d, s in copies.items() if s.name == "requirements.lock"), None)
    if destination is None:
        raise Failed(f"{dockerfile.name} copies no requirements.lock")
    if lock is not None:
        copies[destination] = lock.resolve()
    lock_path = copies[destination]
    wheels_at = next((d for d, s in copies.items() if s.name == "dist"), None)
    if wheels_at is not None:
        if dist is not None:
            copies[wheels_at] = dist.resolve()
        wheels = sorted(copies[wheels_at].glob("*.whl"))
        if len(wheels) != 1:
            raise Failed(f"{copies[wheels_at]} holds {len(wheels)} wheels, the Dockerfile installs exactly one "
                         "(make dist)")
        say(f"wheel    {wheels[0].name}")
    say(f"image    {spec['image']}: package set from {constraints.relative_to(REPO)}")

    venv, stand_ins = sync_image_venv(constraints, spec["python"], workdir)
    py = venv / "bin" / "python"
    if stand_ins:
        say(f"stand-in {', '.join(stand_ins)} (no wheel: metadata only, not compiled)")
    before = installed(py)
    expected = pins(constraints.read_text())
    if before != expected:
        raise Failed(f"the venv does not hold the image's set: {sorted(set(before.items()) ^ set(expected.items()))}")
    check = run([str(py), "-m", "pip", "check"], check=False)
    if check.returncode != 0:
        raise Failed(f"the image's own package set fails pip check (the reconstruction is broken):\n{check.stdout}")
    say(f"base     {len(before)} packages, pip check OK ({time.monotonic() - started:.0f} s)")

    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_USER", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               TMPDIR=str(tmp), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for command in spec["pip_runs"]:
        local = localize(command, copies)
        say(f"RUN      {' '.join(command.split())}")
        step = subprocess.run(["/bin/sh", "-c", local], env=env, capture_output=True, text=True, cwd=tmp)
        if step.returncode != 0:
            raise Failed(f"the Dockerfile's RUN exited {step.returncode} (the build would stop here):\n"
                         f"{step.stdout[-4000:]}{step.stderr[-4000:]}")

    after = installed(py)
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    if changed:
        raise Failed("the install changed packages of the image: "
                     + ", ".join(f"{n} {old} -> {new or 'removed'}" for n, (old, new) in sorted(changed.items())))
    wanted = pins(lock_path.read_text())
    if wheels_at is not None:  # the wheel's name and version, as pip lists it
        name, version = wheels[0].name.split("-")[:2]
        wanted[normalize(name)] = version
    missing = {n: v for n, v in wanted.items() if after.get(n) != v}
    if missing:
        raise Failed(f"pins of the lock not installed: {missing}")
    added = sorted(set(after) - set(before))
    say(f"added    {', '.join(f'{n}=={after[n]}' for n in added) or 'nothing'}")
    say(f"kept     all {len(before)} packages of the image at their versions; pip check OK")
    say(f"image-check OK in {time.monotonic() - started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--lock", type=Path, help="rehearse with this file as requirements.lock")
    parser.add_argument("--dist", type=Path, help="rehearse with this folder (one wheel) as dist/")
    parser.add_argument("--workdir", type=Path, default=REPO / ".image-venv")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    with open(args.workdir / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one rehearsal at a time per venv
        try:
            rehearse(args.dockerfile, args.lock, args.workdir, args.dist)
        except Failed as failure:
            print(f"image-check FAILED: {failure}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
