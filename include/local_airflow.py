"""Run the real Airflow CLI against an isolated home, as a user's deployment would.

Used by `make run` (include/local_run.py), the tests and the benchmarks.

Only ``dags_folder`` and ``plugins_folder`` point at the repo (the contract in
DEVELOPERS.md); everything else is Airflow's stock default, so what passes here is what
users get. ``load_examples`` is off only to keep parsing fast.

``airflow db migrate`` takes ~20 s, so one migrated SQLite file per test session is
copied into each fresh home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES="certificate_data,certificate_password,rate_limit_ledger",  # as docker-compose.yaml
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    # Tests and local runs list an hour as soon as it closes (extra_env may set another).
    env.setdefault("MDE_ALERT_IPS_SETTLE_SECONDS", "0")
    # Airflow finds plugins/ and dags/ through its own config; include/ is for tools only.
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class AirflowHome:
    """An Airflow home with its own SQLite metadata DB and logs."""

    path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = base_env(self.path)
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
            )
        return proc

    def test_runs(
        self,
        dag_id: str | list[str],
        run_ats,
        conf: dict | None = None,
        timeout: float = 900,
        fail_commit: str | None = None,
        lake_roots: list[str] | None = None,
        sim_clocks: dict[str, dict] | None = None,
    ) -> list[dict]:
        """Run ``dag.test()`` for each logical date in one process; one result dict each.
        Several DAG ids: each date for every DAG in turn (one process start-up for all).
        ``fail_commit``: ``STEP@N``, a lake commit fails once; ``lake_roots``: one lake
        root per logical date; ``sim_clocks``: dag_id -> {"base_url", "ca_bundle"} of the
        simulator whose clock each run of that DAG sets first (include/dag_runs.py)."""
        dag_ids = [dag_id] if isinstance(dag_id, str) else list(dag_id)
        run_ats = list(run_ats)
        args = [str(REPO / "include" / "dag_runs.py"), ",".join(dag_ids), *[t.isoformat() if hasattr(t, "isoformat") else str(t) for t in run_ats]]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        if fail_commit is not None:
            args += ["--fail-commit", fail_commit]
        if lake_roots is not None:
            args += ["--lake-roots", json.dumps([str(root) for root in lake_roots])]
        if sim_clocks is not None:
            args += ["--sim-clocks", json.dumps(sim_clocks)]
        proc = subprocess.run(
            [str(VENV_BIN / "python"), *args], env=self.env, cwd=self.path, capture_output=True, text=True, timeout=timeout
        )
        self.last_output = proc.stdout + proc.stderr
        runs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"run_at"')]
        if proc.returncode != 0 or len(runs) != len(run_ats) * len(dag_ids):
            raise AssertionError(f"dag_runs.py exited {proc.returncode}\n{self.last_output[-8000:]}")
        return runs

    def import_pools(self, pools_file: Path = REPO / "include" / "pools.json") -> None:
        """The pools file, plus pool ``mde_api_<name>`` (same slots) for each tenant of
        Variable mde_tenants as this home's processes see it (``AIRFLOW_VAR_MDE_TENANTS``)."""
        from mde_pipeline.airflow.tenants import TENANTS_ENV, parse_tenants, tenant_pools

        names = parse_tenants(self.env.get(TENANTS_ENV))
        if names:
            document = tenant_pools(json.loads(pools_file.read_text()), names)
            pools_file = self.path / "pools.tenants.json"
            pools_file.write_text(json.dumps(document, indent=2))
        self.cli("pools", "import", str(pools_file))

    def set_pool(self, name: str, slots: int) -> None:
        self.cli("pools", "set", name, str(slots), "test pool size")


def migrated_template(root: Path) -> Path:
    """Migrate one metadata DB for the whole session; homes get copies of it."""
    home = root / "template-home"
    if not (home / "airflow.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        AirflowHome(home).cli("db", "migrate")
    return home / "airflow.db"


def fresh_home(template_db: Path, path: Path, **extra_env: str) -> AirflowHome:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_db, path / "airflow.db")
    return AirflowHome(path, dict(extra_env))


def lake_env(lake_root: Path | str) -> dict[str, str]:
    return {"AIRFLOW_VAR_MDE_LAKE_ROOT": str(lake_root)}


def conn_env(conn: dict | str) -> dict[str, str]:
    return {"AIRFLOW_CONN_MDE_DEFAULT": conn if isinstance(conn, str) else json.dumps(conn)}
