"""Session-wide test setup: a clean environment, the simulator fixture, the test order."""

import atexit
import os
import shutil
import tempfile

# The caller's shell is not the tests' configuration. MDE_* and AIRFLOW_* variables
# (AIRFLOW_CONN_*, AIRFLOW_VAR_*, AIRFLOW__SECTION__KEY, AIRFLOW_HOME) are read at import
# time by some modules (mde_pipeline.airflow.settings: MDE_FRESHNESS_DEADLINE_MINUTES,
# MDE_ALERT_IPS_TASK_RETRIES ...) and by Airflow's configuration, so they are removed here,
# in the first conftest pytest imports, before any test module (or the imports below) is
# loaded; every test sets what it depends on (monkeypatch, or the env it hands a child).
# The Makefile's own exports for `make test` (AIRFLOW_HOME=.airflow, the dags and plugins
# folders) go too: they are for `make run/ui/status`; without them `make test` is exactly
# the bare `.venv/bin/pytest`, and no test writes into the repo's .airflow (whose ledger
# `make run` uses). The session gets a temporary AIRFLOW_HOME instead, so that importing
# Airflow never touches ~/airflow. xdist workers import this file too.
SCRUBBED_PREFIXES = ("MDE_", "AIRFLOW_")
SCRUBBED = sorted(name for name in os.environ if name.startswith(SCRUBBED_PREFIXES))
for _name in SCRUBBED:
    del os.environ[_name]
SESSION_AIRFLOW_HOME = tempfile.mkdtemp(prefix="mde-tests-airflow-")
os.environ["AIRFLOW_HOME"] = SESSION_AIRFLOW_HOME
atexit.register(shutil.rmtree, SESSION_AIRFLOW_HOME, ignore_errors=True)

import pytest  # noqa: E402

from mde_simulator.process import SimulatorProcess  # noqa: E402


def pytest_report_header(config):
    # Names only: a value may be a secret (AIRFLOW_CONN_*).
    return f"environment: removed {', '.join(SCRUBBED)} (tests set their own)" if SCRUBBED else None


@pytest.fixture
def simulator(request, tmp_path_factory):
    """A running HTTPS simulator (mde_simulator.process.SimulatorProcess), stopped after the test.

    Options: parametrize indirectly, e.g.
        @pytest.mark.parametrize("simulator", [{"alerts": 50, "rate_limits": [[10, 1]]}],
                                 indirect=True)
    """
    options = dict(getattr(request, "param", None) or {})
    with SimulatorProcess(tmp_path_factory.mktemp("simulator"), **options) as sim:
        yield sim


# The longest modules (measured with --durations, longest test first) start first, so
# that `make test`'s xdist workers (-n 3 --maxschedchunk 1: tests are dealt one at a
# time, each worker holding one more in reserve) share them and the short tests fill the
# gaps, instead of one worker ending the run alone on a long tail. A module-scoped fixture
# is set up once per worker that runs a test of its module.
# tests/deploy/test_deploy_image_build.py stays out, far from test_deploy_init.py: both
# hold the lock of the image venv (.image-venv), and a worker waiting on it is idle.
LONGEST_FIRST = (
    "tests/integration/test_late_alerts_end_to_end.py",
    "tests/scheduler/test_backfill_priority.py",
    "tests/integration/test_dag_end_to_end.py",
    "tests/scheduler/test_celery_two_hosts.py",
    "tests/scheduler/test_freshness_deadline.py",
    "tests/integration/test_make_run_then_ui.py",
    "tests/deploy/test_deploy_init.py",
    "tests/status/test_status_browser.py",
    "tests/deploy/test_conn_form_browser.py",
    "tests/status/test_lineage.py",
    "tests/lake/test_lake_abfs_crash.py",
    "tests/lake/test_lake_commit_record.py",
    "tests/integration/test_tenants_end_to_end.py",
    "tests/integration/test_dag_azurite.py",
    "tests/integration/test_analysts_queries_demo.py",
    "tests/analytics/test_spark_sql.py",
    "tests/deploy/test_deploy_sandbox.py",
    "tests/analytics/test_compaction_dag.py",
    "tests/analytics/test_compaction.py",
    "tests/lake/test_lake_abfs.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each module and of the rest is kept
