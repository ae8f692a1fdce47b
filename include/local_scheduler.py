"""Run the real Airflow services (api-server, scheduler, dag-processor) on an isolated home.

Used by the scheduler tests (tests/scheduler) and the benchmarks (bench/) that need what
``dag.test()`` does not have: the scheduler's pool and priority decisions, backfills,
scheduled runs, LocalExecutor task processes talking to the api-server's Execution API.

    with AirflowServices(home) as airflow:          # home: local_airflow.AirflowHome
        airflow.wait_for_dag("mde_alert_ips")
        airflow.unpause("mde_alert_ips")                # REST API: no 10-20 s CLI start-up
        airflow.create_backfill("mde_alert_ips", start, end, conf={...})
        airflow.wait_for(lambda: ..., timeout=120, what="the run to finish")
        airflow.query("SELECT state FROM dag_run")

Only speed knobs are set on top of the home's stock configuration (see ``SPEED_ENV``):
heartbeats and parsing intervals, how many task processes run at once, the api-server's
port. The DAG itself needs none of them.

Every service runs in its own process group, so ``stop()`` ends it and everything it
started (LocalExecutor workers, task supervisors, uvicorn workers) by group id, also when
a test fails; the children also get SIGTERM if this Python process dies first. Each
service logs to ``<home>/services/<name>.log``; a timeout in ``wait_for`` raises
:class:`ServicesTimeout` with the last lines of each log.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

from local_airflow import AIRFLOW, AirflowHome

SERVICES = ("api-server", "dag-processor", "scheduler")
# Deferred tasks and Deadline Alerts' AsyncCallbacks run here (``triggerer=True``).
TRIGGERER = "triggerer"

# Knobs that only make a test or benchmark quicker on a small machine; names checked
# against Airflow 3.3's config.yml (`airflow config list --defaults`).
SPEED_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # The scheduler loop runs every second (default 5) and idles 0.5 s (default 1).
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
    # One parsing process; look for the file soon, re-parse it rarely (CPU on 2 cores).
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__API__HOST": "127.0.0.1",
}

_PR_SET_PDEATHSIG = 1


class ServicesError(RuntimeError):
    """A service did not start, died, or a condition was not met in time."""


class ServicesTimeout(ServicesError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started us dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class AirflowServices:
    """api-server + dag-processor + scheduler (or the api-server alone) for one :class:`AirflowHome`."""

    def __init__(
        self,
        home: AirflowHome,
        *,
        parallelism: int = 4,
        api_port: int | None = None,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 120.0,
        triggerer: bool = False,
        api_only: bool = False,
    ) -> None:
        self.home = home
        # api_only: the UI and the REST API alone (a form test: nothing parses or schedules).
        self.services = ("api-server",) if api_only else SERVICES + ((TRIGGERER,) if triggerer else ())
        self.api_port = api_port or free_port()
        self.startup_timeout = startup_timeout
        self.log_dir = Path(home.path) / "services"
        self.processes: dict[str, subprocess.Popen] = {}
        self._log_files: list[Any] = []
        env = dict(SPEED_ENV)
        env.update(
            AIRFLOW__CORE__PARALLELISM=str(parallelism),
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{self.api_port}",
            # Task processes find the Execution API here (default: localhost:8080).
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.api_port}/execution/",
        )
        env.update(extra_env or {})
        # The home's own settings (connection, lake, ...) come on top: the caller owns them.
        self.home = AirflowHome(home.path, {**env, **home.extra_env})

    # ------------------------------------------------------------------ lifecycle
    @property
    def env(self) -> dict[str, str]:
        return self.home.env

    @property
    def db_path(self) -> Path:
        return Path(self.home.path) / "airflow.db"

    def start(self) -> "AirflowServices":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Any CLI call writes airflow.cfg (with a generated jwt_secret) if it is missing;
        # do it once before the services start so all of them sign and check one secret.
        if not (Path(self.home.path) / "airflow.cfg").exists():
            self.cli("config", "get-value", "core", "executor")
        atexit.register(self.stop)
        try:
            for name in self.services:
                log = open(self.log_dir / f"{name}.log", "ab")
                self._log_files.append(log)
                self.processes[name] = subprocess.Popen(
                    [AIRFLOW, name],
                    env=self.env,
                    cwd=self.home.path,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stop() ends its children too
                    preexec_fn=die_with_parent,
                )
            self.wait_for(self._api_ready, self.startup_timeout, "the api-server's Execution API to answer")
            if "scheduler" in self.services:
                self.wait_for(self._scheduler_running, self.startup_timeout, "the scheduler job to heartbeat")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each service's process group, SIGKILL what is left after ``timeout``."""
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.processes.values():
            # The leader may be gone while workers of its group linger: kill the group anyway.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for log in self._log_files:
            log.close()
        self._log_files.clear()
        atexit.unregister(self.stop)

    def __enter__(self) -> "AirflowServices":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ readiness
    def _api_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/execution/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _scheduler_running(self) -> bool:
        rows = self.query(
            "SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running' "
            "AND latest_heartbeat > datetime('now', '-30 seconds')"
        )
        return bool(rows and rows[0][0])

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        """Until the dag-processor has serialized ``dag_id`` (a backfill needs that)."""
        self.wait_for(
            lambda: self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", (dag_id,)),
            timeout,
            f"the dag-processor to serialize {dag_id}",
        )

    # ------------------------------------------------------------------ REST API
    # What a user does in the UI or with the CLI, through the public API: each CLI call
    # pays Airflow's import time (10-25 s on a busy 2-core box), an HTTP call does not.
    def _token(self) -> str:
        if getattr(self, "_cached_token", None) is None:
            # The stock SimpleAuthManager writes the admin's generated password here.
            passwords = json.loads((Path(self.home.path) / "simple_auth_manager_passwords.json.generated").read_text())
            answer = self._http("POST", "/auth/token", {"username": "admin", "password": passwords["admin"]}, token=None)
            self._cached_token = answer["access_token"]
        return self._cached_token

    def _http(self, method: str, path: str, body: Any = None, *, token: str | None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise ServicesError(f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from None
        return json.loads(payload) if payload else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the public REST API (``/api/v2/...``) as the admin user."""
        return self._http(method, f"/api/v2{path}", body, token=self._token())

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})

    def set_pool(self, name: str, slots: int) -> None:
        # The body must name the pool and include_deferred (422 otherwise); the mask keeps
        # everything but the slots as it was.
        self.api("PATCH", f"/pools/{name}?update_mask=slots", {"pool": name, "slots": slots, "include_deferred": False})

    def create_backfill(
        self,
        dag_id: str,
        from_date,
        to_date,
        *,
        max_active_runs: int = 10,
        conf: dict | None = None,
        attempts: int = 10,
        freeze_writers: bool = False,
    ) -> dict:
        """``airflow backfill create``: runs for logical dates in [from_date, to_date] (inclusive).

        On SQLite, Airflow 3.3 answers 503 "Database is locked" when the scheduler holds
        the write lock at that moment (it removes the half-made backfill): try again, up
        to ``attempts`` times. A backfill of a hundred runs or more is one transaction of
        seconds that any other service's commit breaks, every time: ``freeze_writers``
        stops the other services (SIGSTOP) during each attempt and resumes them after.
        """
        body = {
            "dag_id": dag_id,
            "from_date": from_date.isoformat(),
            "to_date": to_date.isoformat(),
            "max_active_runs": max_active_runs,
            "dag_run_conf": conf or {},
        }
        for attempt in range(1, attempts + 1):
            try:
                with self.frozen(*(name for name in self.services if name != "api-server") if freeze_writers else ()):
                    return self.api("POST", "/backfills", body)
            except ServicesError as exc:
                if "-> 503" not in str(exc) or "locked" not in str(exc) or attempt == attempts:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def frozen(self, *names: str):
        """Stop (SIGSTOP) these services' process groups for the block, then resume them.

        For SQLite only: nothing else commits meanwhile. One of them may be stopped in
        the middle of a write; the caller's call then fails as locked and is retried.
        """
        stopped = []
        try:
            for name in names:
                proc = self.processes.get(name)
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGSTOP)
                    stopped.append(proc)
            yield
        finally:
            for proc in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)

    def clear_run(self, dag_id: str, run_id: str) -> None:
        """Clear every task of a run (the run is queued again and rerun)."""
        self.api("POST", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/clear", {"dry_run": False})

    # ------------------------------------------------------------------ helpers
    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return self.home.cli(*args, timeout=timeout, check=check)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Read the metadata DB (SQLite) directly: one short read-only transaction."""
        if not self.db_path.exists():
            return []
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            con.close()

    def check_alive(self) -> None:
        dead = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
        if dead:
            raise ServicesError(f"Airflow service(s) exited: {dead}\n{self.log_tails()}")

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for name in self.services:
            parts.append(f"--- {name} (last {lines} lines of {self.log_dir / (name + '.log')}) ---")
            parts.append(tail(self.log_dir / f"{name}.log", lines))
        return "\n".join(parts)

    def wait_for(
        self,
        condition: Callable[[], Any],
        timeout: float,
        what: str,
        *,
        interval: float = 1.0,
        diagnostics: Callable[[], str] | None = None,
    ) -> Any:
        """Poll ``condition`` until it returns something truthy (returned), or raise.

        Fails early when a service died. On timeout the error names ``what``, adds
        ``diagnostics()`` (e.g. the task instance states) and the services' last log lines.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            self.check_alive()
            if time.monotonic() > deadline:
                extra = ""
                if diagnostics is not None:
                    with contextlib.suppress(Exception):
                        extra = diagnostics() + "\n"
                raise ServicesTimeout(f"timed out after {timeout:.0f} s waiting for {what}\n{extra}{self.log_tails()}")
            time.sleep(interval)


@contextlib.contextmanager
def pipeline_services(
    root: Path,
    sim: Any,
    template_db: Path,
    *,
    pool_slots: int | None = None,
    client: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    parallelism: int = 4,
    dag_id: str = "mde_alert_ips",
    triggerer: bool = False,
):
    """The pipeline deployed on the real services against a running simulator.

    A fresh home under ``root`` (``root/airflow``; the lake in ``root/lake``) with the
    simulator's connection (``client`` adds connection extras, e.g. the limiter margin),
    ``include/pools.json`` imported as a deployment does (then resized to ``pool_slots``),
    and the DAG parsed. The DAG stays paused: unpausing is the caller's move.
    ``triggerer``: also run the triggerer (scheduled runs' settle defers until the hour
    has settled; backfills of past hours never defer).
    """
    from local_airflow import fresh_home, lake_env

    home = fresh_home(template_db, Path(root) / "airflow", **sim.env(**(client or {})), **lake_env(Path(root) / "lake"), **(env or {}))
    home.import_pools()  # also writes airflow.cfg (one jwt_secret for all services)
    with AirflowServices(home, parallelism=parallelism, triggerer=triggerer) as services:
        if pool_slots is not None:
            services.set_pool("mde_api", pool_slots)
        services.wait_for_dag(dag_id)
        yield services
