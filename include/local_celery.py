"""The real engine as the compose deployment runs it: CeleryExecutor, Redis, PostgreSQL.

    with PostgresServer() as postgres, RedisServer(tmp / "redis") as redis:
        home = AirflowHome(tmp / "airflow", {...connections, lake...})
        with CeleryServices(home, postgres, broker_url=redis.url, hosts=("host1", "host2")) as airflow:
            airflow.wait_for_dag("mde_alert_ips")
            airflow.import_pools(json.loads(Path("include/pools.json").read_text()))
            airflow.unpause("mde_alert_ips")
            airflow.query("SELECT hostname, state FROM task_instance")   # PostgreSQL

:class:`CeleryServices` is :class:`local_scheduler.AirflowServices` (api-server,
dag-processor, scheduler; the REST helpers, ``wait_for``) on CeleryExecutor with the
metadata DB and Celery's result backend in PostgreSQL and the broker in Redis, plus one
``airflow celery worker`` per "host". Each worker has its own AIRFLOW_HOME (its own
airflow.cfg, task logs and SQLite ledger folder, which the pipeline must not use when the
connection names a Redis ledger), its own Celery node name ``worker@<host>``, its own
log-server port, and reports ``<host>`` as the task instances' hostname through Airflow's
``[core] hostname_callable`` (a module in the worker home's ``config/`` folder, which
Airflow puts on ``sys.path``): what separate machines would record. The workers reach
the services only as remote hosts do: the broker, the metadata DB (result backend) and
the api-server's Execution API URL.

``start()`` creates the database and runs ``airflow db migrate`` on it (no SQLite
template here: each test's PostgreSQL starts empty) while the workers start.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path
from typing import Any, Iterable

from local_airflow import AIRFLOW, AirflowHome
from local_postgres import PostgresServer
from local_scheduler import SERVICES, AirflowServices, die_with_parent, free_port, tail

DATABASE = "airflow"
# One module per worker home: Airflow imports "<module>.<function>" for the TI hostname.
HOSTNAME_MODULE = "mde_test_host"


def celery_env(postgres: PostgresServer, broker_url: str, database: str = DATABASE) -> dict[str, str]:
    """What every process of the deployment shares (docker-compose.yaml sets the same)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url(database),
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres.url(database, driver="db+postgresql"),
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        # The scheduler sends and syncs task states in one process (default: cores - 1 more).
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        # Every home would generate its own; the api-server checks the tokens the scheduler
        # signs, and the log server on each worker checks the api-server's.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
    }


class CeleryServices(AirflowServices):
    """api-server + dag-processor + scheduler on CeleryExecutor, and one Celery worker per host."""

    def __init__(
        self,
        home: AirflowHome,
        postgres: PostgresServer,
        *,
        broker_url: str,
        hosts: Iterable[str] = ("host1", "host2"),
        worker_concurrency: int = 2,
        database: str = DATABASE,
        parallelism: int = 8,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 180.0,  # five Airflow processes start at once on 2 cores
    ) -> None:
        env = {**celery_env(postgres, broker_url, database), **(extra_env or {})}
        super().__init__(home, parallelism=parallelism, extra_env=env, startup_timeout=startup_timeout)
        self.postgres = postgres
        self.database = database
        self.hosts = tuple(hosts)
        self.worker_concurrency = worker_concurrency
        self.worker_homes: dict[str, AirflowHome] = {}

    # ------------------------------------------------------------------ workers
    @staticmethod
    def worker_name(host: str) -> str:
        return f"worker-{host}"

    def _worker_home(self, host: str) -> AirflowHome:
        path = Path(self.home.path).parent / host / "airflow"
        (path / "config").mkdir(parents=True, exist_ok=True)
        (path / "config" / f"{HOSTNAME_MODULE}.py").write_text(
            f'"""This home stands for machine {host!r}."""\n\n\ndef hostname() -> str:\n    return {host!r}\n'
        )
        # Everything the services' home has (executor, DB, broker, connections, lake,
        # Execution API URL), but this machine's own home, log-server port and hostname.
        return AirflowHome(
            path,
            {
                **self.home.extra_env,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{HOSTNAME_MODULE}.hostname",
            },
        )

    def _start_workers(self) -> None:
        for host in self.hosts:
            home = self.worker_homes[host] = self._worker_home(host)
            name = self.worker_name(host)
            log = open(self.log_dir / f"{name}.log", "ab")
            self._log_files.append(log)
            self.processes[name] = subprocess.Popen(
                [AIRFLOW, "celery", "worker", "--celery-hostname", f"worker@{host}",
                 "--concurrency", str(self.worker_concurrency), "--without-mingle", "--without-gossip"],
                env=home.env, cwd=home.path, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip

    def _workers_ready(self) -> bool:
        # Celery logs "<node name> ready." once the worker consumes from the broker.
        logs = {host: (self.log_dir / f"{self.worker_name(host)}.log").read_text(errors="replace") for host in self.hosts}
        return all(re.search(rf"worker@{re.escape(host)} ready\.", log) for host, log in logs.items())

    def start(self) -> "CeleryServices":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        Path(self.home.path).mkdir(parents=True, exist_ok=True)
        self.postgres.create_database(self.database)
        try:
            # The workers need only the broker to start: they import Airflow while the
            # metadata DB is migrated (which also writes airflow.cfg), then the services start.
            self._start_workers()
            self.cli("db", "migrate")
            super().start()
            self.wait_for(self._workers_ready, self.startup_timeout, "both Celery workers to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM everything (the workers' main processes first: a warm shutdown), SIGKILL
        what is left after ``timeout``. Short by default: the facts are read before, and an
        idle worker's or the api-server's graceful exit (5-12 s on 2 busy cores) is not what
        these tests check."""
        for host in self.hosts:
            worker = self.processes.get(self.worker_name(host))
            if worker is not None and worker.poll() is None:
                worker.terminate()
        super().stop(timeout)

    # ------------------------------------------------------------------ the metadata DB
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Read the metadata DB (PostgreSQL); ``?`` placeholders as for the SQLite services
        (so no literal ``?`` or ``%`` in ``sql``)."""
        import psycopg2.errors

        try:
            return self.postgres.query(self.database, sql.replace("?", "%s"), params)
        except psycopg2.errors.UndefinedTable:
            return []

    def _scheduler_running(self) -> bool:
        rows = self.query(
            "SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running' "
            "AND latest_heartbeat > now() - interval '30 seconds'"
        )
        return bool(rows and rows[0][0])

    def import_pools(self, document: dict[str, dict[str, Any]]) -> None:
        """``airflow pools import`` of a document like include/pools.json, through the REST
        API (no 10-20 s CLI start-up)."""
        for name, pool in document.items():
            self.api("POST", "/pools", {"name": name, **pool})

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for name in (*SERVICES, *(self.worker_name(h) for h in self.hosts)):
            parts.append(f"--- {name} (last {lines} lines of {self.log_dir / (name + '.log')}) ---")
            parts.append(tail(self.log_dir / f"{name}.log", lines))
        return "\n".join(parts)
