"""The test session ignores the caller's MDE_* and AIRFLOW_* variables (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POISON = {
    "MDE_FRESHNESS_DEADLINE_MINUTES": "0",
    "MDE_ALERT_IPS_TASK_RETRIES": "9",
    "AIRFLOW_VAR_MDE_TENANTS": '["x"]',
    "AIRFLOW_CONN_MDE_DEFAULT": "http://login:pass@example.invalid",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "True",
    "AIRFLOW_HOME": "/elsewhere",
}


def test_no_caller_variable_is_visible_in_the_session():
    from mde_pipeline.airflow import settings

    # Other tests' fixtures set variables of their own (an Azurite connection...): only the
    # caller's values must be gone.
    leftover = sorted(k for k, v in POISON.items() if os.environ.get(k) == v)
    assert leftover == []
    assert os.environ["AIRFLOW_HOME"] != "/elsewhere" and os.path.isdir(os.environ["AIRFLOW_HOME"])
    assert settings.TASK_RETRIES == 3 and settings.FRESHNESS_DEADLINE.total_seconds() == 3600  # read at import


def test_a_poisoned_shell_does_not_reach_the_tests(tmp_path):
    # The test above, in a pytest session started from a shell holding such variables.
    test = f"{Path(__file__).relative_to(REPO)}::test_no_caller_variable_is_visible_in_the_session"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", test],
        cwd=REPO, env={**os.environ, **POISON}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
    [header] = [line for line in result.stdout.splitlines() if line.startswith("environment: removed ")]
    assert set(POISON) <= set(header.removeprefix("environment: removed ").split(" (")[0].split(", "))
    assert "pass@" not in result.stdout  # names only in the header
