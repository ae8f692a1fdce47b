"""Azurite (the Azure Storage emulator) as the ADLS Gen2 stand-in of the tests.

Installed from npm into ``<repo>/.azurite`` on first use (git-ignored, ~1 min once),
then started as ``azurite-blob`` on a free loopback port, in memory. Azurite speaks the
Blob API only (no DFS / hierarchical namespace endpoint); adlfs and the Azure
provider's ``abfs`` filesystem use the Blob API too, so the lake works against it when
the Airflow connection carries a connection string whose ``BlobEndpoint`` is Azurite::

    AIRFLOW_CONN_MDE_LAKE='{"conn_type": "adls", "extra": {
        "account_name": "devstoreaccount1",
        "connection_string": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;
            AccountKey=<well-known dev key>;BlobEndpoint=http://127.0.0.1:<port>/devstoreaccount1;"}}'
    AIRFLOW_VAR_MDE_LAKE_ROOT=abfs://<container>@devstoreaccount1.dfs.core.windows.net/<prefix>

(the provider's ``get_fs`` hands ``connection_string`` to adlfs as is and ignores the
other fields when it is present).

Usage from any test package::

    from tests.lake.azurite import AzuriteServer
    with AzuriteServer() as azurite:
        azurite.create_container("lake")
        env = azurite.airflow_env("mde_lake", root="abfs://lake@devstoreaccount1.dfs.core.windows.net/x")

If npm cannot install Azurite the harness raises ``AzuriteUnavailable``: tests fail
with that message rather than skip, since a skipped ADLS test would pass in silence.
"""

from __future__ import annotations

import fcntl
import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

AZURITE_VERSION = "3.37.0"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's public, documented development key (not a secret: every Azurite has it).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

REPO = Path(__file__).resolve().parents[2]
INSTALL_DIR = REPO / ".azurite"
INSTALL_TIMEOUT_SECONDS = 600
START_TIMEOUT_SECONDS = 60
_LISTENING = re.compile(r"Blob service (?:is )?successfully listen(?:s|ing) (?:on|at) (http://\S+?):(\d+)")


class AzuriteUnavailable(RuntimeError):
    """Azurite could not be installed or started."""


def azurite_executable(install_dir: Path = INSTALL_DIR) -> Path:
    """``azurite-blob`` of the pinned version, installing it from npm when missing."""
    binary = install_dir / "node_modules" / ".bin" / "azurite-blob"
    if _installed_version(install_dir) == AZURITE_VERSION and binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteUnavailable("npm is not on PATH: install Node.js (>= 18) so the tests can install Azurite")
    install_dir.mkdir(parents=True, exist_ok=True)
    # Parallel test sessions share the folder: one installs, the others wait for it.
    with open(install_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(install_dir) == AZURITE_VERSION and binary.exists():
            return binary
        command = [npm, "install", "--prefix", str(install_dir), f"azurite@{AZURITE_VERSION}", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise AzuriteUnavailable(f"`{' '.join(command)}` did not finish in {INSTALL_TIMEOUT_SECONDS} s") from None
        if completed.returncode != 0 or not binary.exists():
            tail = (completed.stderr or completed.stdout or "").strip()[-2000:]
            raise AzuriteUnavailable(
                f"cannot install Azurite (the ADLS stand-in of the tests): `{' '.join(command)}` failed "
                f"(exit {completed.returncode}):\n{tail}"
            )
    return binary


def _installed_version(install_dir: Path) -> str | None:
    try:
        return json.loads((install_dir / "node_modules" / "azurite" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


class AzuriteServer:
    """One in-memory ``azurite-blob`` process on a free loopback port."""

    def __init__(self, install_dir: Path = INSTALL_DIR, memory_limit_mb: int = 1024) -> None:
        self.install_dir = install_dir
        self.memory_limit_mb = memory_limit_mb
        self.process: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._output: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> AzuriteServer:
        binary = azurite_executable(self.install_dir)
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        command = [
            str(binary),
            "--blobHost", "127.0.0.1",
            "--blobPort", "0",  # the OS picks a free port; Azurite prints it
            "--inMemoryPersistence",
            "--extentMemoryLimit", str(self.memory_limit_mb),
            "--skipApiVersionCheck",  # newer azure-storage-blob API versions than Azurite knows
            "--loose",
            "--disableTelemetry",
        ]
        self.process = subprocess.Popen(
            command, cwd=self._workdir.name, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.port is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AzuriteUnavailable(f"Azurite did not report its port within {START_TIMEOUT_SECONDS} s: {self._output[-20:]}") from None
            if line is None:
                code = self.process.wait()
                raise AzuriteUnavailable(f"Azurite exited with code {code}: {''.join(self._output[-20:])}")
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
        return self

    def _pump(self, lines: queue.Queue[str | None]) -> None:
        # Keeps reading after startup too, so a chatty Azurite never blocks on a full pipe.
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if len(self._output) < 2000:
                self._output.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> AzuriteServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ connection

    @property
    def blob_endpoint(self) -> str:
        if self.port is None:
            raise AzuriteUnavailable("Azurite is not running")
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def airflow_connection(self) -> dict:
        """The Airflow connection (JSON form) the provider's abfs filesystem accepts."""
        return {
            "conn_type": "adls",
            "extra": {"account_name": ACCOUNT_NAME, "connection_string": self.connection_string},
        }

    def airflow_env(self, conn_id: str = "mde_lake", root: str | None = None) -> dict[str, str]:
        """Environment for an Airflow process: the connection, its id and optionally the lake root."""
        env = {
            f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.airflow_connection()),
            "AIRFLOW_VAR_MDE_LAKE_CONN_ID": conn_id,
        }
        if root is not None:
            env["AIRFLOW_VAR_MDE_LAKE_ROOT"] = root
        return env

    def lake_root(self, container: str, prefix: str = "") -> str:
        """``abfs://container@devstoreaccount1.dfs.core.windows.net/prefix``."""
        return f"abfs://{container}@{ACCOUNT_NAME}.dfs.core.windows.net/{prefix}".rstrip("/")

    def blob_service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.blob_service().create_container(name)
        except ResourceExistsError:
            pass


def resolve_with_airflow(root: str, conn_id: str | None = None):
    """``resolve_lake_location`` with :func:`airflow_blob_filesystem` for abfs roots."""
    from mde_pipeline.airflow.lake_location import airflow_blob_filesystem
    from mde_pipeline.lake.location import resolve_lake_location

    return resolve_lake_location(root, conn_id, blob_filesystem=airflow_blob_filesystem)
