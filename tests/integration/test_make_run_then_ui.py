"""The README's first hour: `make run`, then `make ui`, as a new user runs them.

Both through `make` (the Makefile's own command lines), in a temporary Airflow home (the
hidden ``--home`` option; the metadata DB is a copy of the session's migrated template,
so `make run` skips its one-time migration) and a temporary lake:

- `make run` loads the last two complete hours; its runs show how long they really took
  (dag.test starts a run at its logical date: the UI showed minutes to hours);
- `make ui` started right after it, as the same user would: the scheduler creates the
  scheduled run of the latest complete hour (make run's manual runs must not hold its
  logical date: "run already exists; skipping dagrun creation") and finishes it, settle
  included (a triggerer runs: the UI's health row shows it healthy); make ui says so on
  its output; Ctrl-C stops everything and make ui exits 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from local_airflow import REPO, fresh_home, migrated_template
from local_scheduler import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")


def make(target: str, args: str, home) -> list[str]:
    # AIRFLOW_HOME on make's command line overrides the Makefile's .airflow for the
    # script's own process too: nothing of this test lands in the repo's Airflow home.
    # -o: never rebuild the venv this test runs in (make test built it; a lock newer than
    # its stamp would otherwise start `rm -rf .venv` under the running suite).
    return ["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.installed", target,
            f"{'RUN' if target == 'run' else 'UI'}_ARGS={args} --home {home}", f"AIRFLOW_HOME={home}"]


def runs_of(db, run_type: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(
            "SELECT run_id, state, logical_date, data_interval_start, start_date, end_date FROM dag_run "
            "WHERE dag_id = 'mde_alert_ips' AND run_type = ? ORDER BY data_interval_start", (run_type,)
        ).fetchall()
    finally:
        con.close()


def utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def test_make_ui_after_make_run_schedules_and_finishes_the_latest_hour(template_db, tmp_path):
    home = fresh_home(template_db, tmp_path / "airflow").path  # the DB copy; make run adds the pool
    lake = tmp_path / "lake"
    began = datetime.now(timezone.utc)
    run = subprocess.run(make("run", f"--hours 2 --alerts-per-hour 4 --lake {lake}", home),
                         capture_output=True, text=True, timeout=420)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert re.search(r"against the simulator's ground truth: .*: exact$", run.stdout, re.MULTILINE), run.stdout[-3000:]
    manual = runs_of(home / "airflow.db", "manual")
    assert len(manual) == 2 and {state for _, state, *_ in manual} == {"success"}
    for run_id, _, logical, interval_start, started, ended in manual:
        # Off the hour grid (the scheduled runs' logical dates are hour starts) ...
        assert utc(logical) == utc(interval_start) + timedelta(hours=1, seconds=1), run_id
        # ... and started when it really did, not at its logical date.
        assert began <= utc(started) <= utc(ended) <= datetime.now(timezone.utc), run_id

    port = free_port()
    # As a terminal's foreground job: Ctrl-C at its default. A child inherits an ignored
    # SIGINT, and the xdist worker may hold one by now (an earlier test's in-process
    # Airflow or Celery code): make ui then slept through the Ctrl-C (faulthandler: in
    # its sleep(5) loop), found in the full suite only.
    ui = subprocess.Popen(make("ui", f"--port {port} --hours 2 --alerts-per-hour 4 --lake {lake} --settle-seconds 10", home),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            line = ui.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("== scheduled run "):
                break
        output = "".join(lines)
        assert lines and lines[-1].startswith("== scheduled run ") and ": success," in lines[-1], output[-4000:]
        [scheduled] = runs_of(home / "airflow.db", "scheduled")
        latest = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        assert utc(scheduled[3]) >= latest - timedelta(hours=1)  # the latest complete hour (the clock may pass one)
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=30))
        assert {name: part.get("status") for name, part in health.items()} == {
            "metadatabase": "healthy", "scheduler": "healthy", "triggerer": "healthy", "dag_processor": "healthy"}, health
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C in the terminal: make and make ui get it
        rest = stop_output(ui, home)
    # make itself dies of the SIGINT as in a terminal ("make: *** [ui] Interrupt"); the
    # script under it stops its services and exits.
    assert ui.returncode in (0, -signal.SIGINT), (output + rest)[-4000:]
    assert "== stopping" in rest and "Traceback" not in output + rest, (output + rest)[-4000:]
    deadline = time.monotonic() + 60
    while (left := leftover_processes(home)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, left


def stop_output(ui: subprocess.Popen, home) -> str:
    """What ``make ui`` printed after its Ctrl-C, once it has exited. Its services get 20 s
    to stop before SIGKILL; on a loaded machine the whole unwind (four services, the
    simulator, make) has taken over 120 s, so it gets 300 s, and a stack that never
    stops fails with what it printed and what was still running."""
    try:
        rest, _ = ui.communicate(timeout=300)
        return rest
    except subprocess.TimeoutExpired:
        left = leftover_processes(home)
        for entry in left:  # where make ui's script is stuck (faulthandler, to its stderr)
            if "include/local_ui.py" in entry:
                os.kill(int(entry.split(":")[0]), signal.SIGUSR1)
        time.sleep(2)
        os.killpg(ui.pid, signal.SIGKILL)
        rest, _ = ui.communicate(timeout=60)
        pytest.fail(f"make ui did not stop within 300 s of Ctrl-C; still running: {left}\n{rest[-8000:]}")


def leftover_processes(home) -> list[str]:
    """Processes still running with this test's Airflow home on their command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if int(pid) != os.getpid() and (str(home) in command or f"AIRFLOW_HOME={home}".encode() in environ):
            found.append(f"{pid}: {command[:200]}")
    return found
