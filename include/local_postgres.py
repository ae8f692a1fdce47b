"""A real PostgreSQL server on loopback for tests (Debian's package, installed when missing).

    with PostgresServer() as server:
        server.create_database("airflow")
        server.url("airflow")                       # postgresql+psycopg2://airflow:...@127.0.0.1:PORT/airflow
        server.url("airflow", driver="db+postgresql")  # Celery's result backend
        server.query("airflow", "SELECT 1")

A throw-away cluster: ``initdb`` into a fresh temp directory, ``postgres`` in the
foreground on a free port of 127.0.0.1 (TCP only, password auth), durability off (fsync,
synchronous commit, full-page writes: a test's data need not survive a crash). PostgreSQL
refuses to run as root, so as root the cluster belongs to the Debian package's
``postgres`` user; the directory is made by this class (a pytest tmp_path is 0700 root)
and removed on exit. The server's log is ``log_path``; a failed start shows its tail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

USER = "airflow"
PASSWORD = "test-postgres-pw-5c1e"
RUN_AS_WHEN_ROOT = "postgres"  # the system user the Debian package creates

# Durability off, and the cluster's own logging to one file: speed and diagnostics only.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def _bin_dir() -> Path | None:
    """Where ``initdb`` and ``postgres`` live: PATH, else Debian's /usr/lib/postgresql/<ver>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres", path=str(Path(found).resolve().parent)):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def postgres_bin_dir() -> Path:
    """The server binaries; as root, ``apt-get install postgresql`` first when missing."""
    found = _bin_dir()
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is missing: apt-get install postgresql (installed here when run as root)")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = _bin_dir()
    if not found:
        raise RuntimeError("initdb still missing after apt-get install postgresql")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A password-protected PostgreSQL cluster for one test (superuser ``airflow``)."""

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.port = _free_port()
        self.startup_timeout = startup_timeout
        self.directory: Path | None = None
        self.process: subprocess.Popen | None = None

    # ------------------------------------------------------------------ facts
    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of ``database``; ``driver="db+postgresql"`` for Celery's result backend."""
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """libpq connection string (psycopg2.connect)."""
        return f"host=127.0.0.1 port={self.port} user={USER} password={PASSWORD} dbname={database}"

    # ------------------------------------------------------------------ lifecycle
    def _run_as(self) -> dict[str, Any]:
        """Popen keywords that drop root to the postgres user (nothing when not root)."""
        if os.geteuid() != 0:
            return {}
        try:
            user = pwd.getpwnam(RUN_AS_WHEN_ROOT)
        except KeyError:
            raise RuntimeError(f"running as root and there is no {RUN_AS_WHEN_ROOT!r} user to run PostgreSQL as") from None
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": {**os.environ, "HOME": user.pw_dir}}

    def start(self) -> "PostgresServer":
        bin_dir = postgres_bin_dir()
        # Not under a pytest tmp_path: that is 0700 root, and the postgres user must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="mde-postgres-"))
        run_as = self._run_as()
        if run_as:
            os.chown(self.directory, run_as["user"], run_as["group"])
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if run_as:
            os.chown(pwfile, run_as["user"], run_as["group"])
        pwfile.chmod(0o600)
        try:
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", USER, f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
                capture_output=True, text=True, check=True, cwd=self.directory, **run_as,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed ({exc.returncode}):\n{exc.stdout[-2000:]}\n{exc.stderr[-2000:]}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {**SERVER_SETTINGS, "port": str(self.port)}
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        log = open(self.log_path, "ab")
        if run_as:
            os.chown(self.log_path, run_as["user"], run_as["group"])
        try:
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.data_dir), *options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
                start_new_session=True, **run_as,
            )  # fmt: skip
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until the server accepts a login (listening is not enough: it may still recover)."""
        import psycopg2

        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.process.returncode}) at start:\n{self.log_tail()}")
            try:
                psycopg2.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready within {self.startup_timeout:.0f} s:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect everyone), then remove the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no postgres log)"

    # ------------------------------------------------------------------ SQL
    def create_database(self, name: str) -> str:
        """A new database owned by the superuser; returns its name."""
        import psycopg2
        from psycopg2 import sql

        con = psycopg2.connect(self.dsn("postgres"))
        try:
            con.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with con.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            con.close()
        return name

    def query(self, database: str, statement: str, params: Iterable[Any] = ()) -> list[tuple]:
        """One short read: rows of ``statement`` (psycopg2 ``%s`` placeholders)."""
        import psycopg2

        con = psycopg2.connect(self.dsn(database))
        try:
            with con.cursor() as cur:
                cur.execute(statement, tuple(params))
                return cur.fetchall()
        finally:
            con.rollback()
            con.close()
