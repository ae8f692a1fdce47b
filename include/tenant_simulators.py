"""One simulator per tenant of Variable mde_tenants, for `make run` and the tests.

Each tenant name ``N`` gets its own HTTPS simulator (include/mde_simulator): its own
Entra tenant id (a stable UUID derived from the name), its own seed (so its alerts are
its own), and connection ``mde_N`` pointing at it (``AIRFLOW_CONN_MDE_<N>``, trusting
that simulator's CA through the connection's extra ``ca_bundle``). Without tenants: one
simulator behind ``mde_default``, as before tenants.
"""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from pathlib import Path

from mde_pipeline.airflow.tenants import TENANTS_ENV, tenant_dag
from mde_simulator.process import SimulatorProcess

_NAMESPACE = uuid.UUID("5b0e7f4e-3f2a-4c8e-9d61-6d2f0a7c1e11")


def tenant_id_of(name: str) -> str:
    """The simulated Entra tenant id of tenant ``name`` (the lake partition's id)."""
    return str(uuid.uuid5(_NAMESPACE, name))


def start_simulators(stack: ExitStack, state_root: Path, names: list[str], *, seed: int = 1,
                     **options) -> dict[str | None, SimulatorProcess]:
    """Name -> running simulator (closed with ``stack``); ``{None: ...}`` without names."""
    if not names:
        return {None: stack.enter_context(SimulatorProcess(state_root, seed=seed, **options))}
    return {
        name: stack.enter_context(
            SimulatorProcess(state_root / name, tenant_id=tenant_id_of(name), seed=seed + index, **options)
        )
        for index, name in enumerate(names)
    }


def simulators_env(simulators: dict[str | None, SimulatorProcess], **extra) -> dict[str, str]:
    """Environment of an Airflow home using them: the Variable and one connection per tenant
    (``extra`` goes into each connection's extra)."""
    if list(simulators) == [None]:
        return simulators[None].env(**extra)
    env = {TENANTS_ENV: json.dumps(list(simulators))}
    for name, sim in simulators.items():
        conn_id = tenant_dag(name).conn_id
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = sim.connection_uri(ca_bundle=sim.ca_bundle, **extra)
    return env
