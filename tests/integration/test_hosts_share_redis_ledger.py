"""Two worker hosts, one budget: a Redis ledger shared by processes with separate Airflow
homes (and separate SQLite ledger folders, unused) against one simulator with tight
windows. Nothing is throttled, every window stays within its limit, every IP is right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mde_simulator.process import SimulatorProcess
from local_redis import PASSWORD, RedisServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIGHT = [[10, 1], [50, 5]]
ALERTS_PER_HOST = 40


def max_calls(stats: dict, seconds: float) -> int:
    (client,) = [c for c in stats["clients"] if c["calls"]]
    (window,) = [w for w in client["windows"] if w["seconds"] == seconds]
    return window["all"]["max_calls"]


def test_two_hosts_sharing_a_redis_ledger_get_no_429_and_stay_in_every_window(tmp_path):
    with RedisServer(tmp_path / "redis") as redis, SimulatorProcess(tmp_path / "sim", alerts=120, seed=11) as sim:
        sim.configure(rate_limits=TIGHT)
        truth = sim.ground_truth()["alerts"]
        ok = sorted(i for i, a in truth.items() if a["ips_status"] == "ok" and not a["vanished"])
        assert len(ok) >= 2 * ALERTS_PER_HOST
        start = tmp_path / "start"
        hosts = []
        for number in range(2):
            home = tmp_path / f"host{number}"
            home.mkdir()
            ids = home / "ids.json"
            ids.write_text(json.dumps(ok[number::2][:ALERTS_PER_HOST]))
            env = {
                **os.environ,
                **sim.env(rate_limits=TIGHT, rate_limit_margin_seconds=0.05, rate_limit_ledger=redis.url),
                "AIRFLOW_HOME": str(home / "airflow"),
                "MDE_RATE_LIMIT_LEDGER_DIR": str(home / "sqlite-ledger"),  # must stay unused
                "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("plugins", "include", ".")),
            }
            result = home / "result.json"
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.fetch_worker", str(ids), str(start), str(result)],
                cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
            )
            hosts.append((process, result, home))
        deadline = time.monotonic() + 180
        while not all(Path(f"{r}.ready").exists() for _, r, _ in hosts):
            assert time.monotonic() < deadline and all(p.poll() is None for p, _, _ in hosts), "a host did not start"
            time.sleep(0.1)
        start.touch()
        outcomes = []
        for process, result, home in hosts:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
            assert PASSWORD not in err  # the ledger URL's password never reaches a log
            assert not (home / "sqlite-ledger").exists()
            outcomes.append(json.loads(result.read_text()))
        stats = sim.stats()

    got = {alert_id: ips for outcome in outcomes for alert_id, ips in outcome["ips"].items()}
    assert got == {alert_id: truth[alert_id]["served_ips"] for alert_id in got}
    assert len(got) == 2 * ALERTS_PER_HOST
    assert stats["throttled"] == 0 and sum(o["throttled"] for o in outcomes) == 0
    assert max_calls(stats, 1) <= 10 and max_calls(stats, 5) <= 50
