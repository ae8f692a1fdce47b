"""The standalone command and the SimulatorProcess helper other tests build on."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mde_simulator.process import INCLUDE_DIR, SimulatorError, SimulatorProcess, build_command

READY_KEYS = {"base_url", "authority_host", "tenant_id", "client_id", "client_secret",
              "ca_bundle", "stats_url", "ground_truth", "pid"}


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "mde_simulator", "--help"],
                            env={**os.environ, "PYTHONPATH": str(INCLUDE_DIR)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--state-dir", "--port", "--seed", "--alerts", "--start", "--end",
                   "--rate-limits", "--limit-scope", "--token-lifetime", "--tenant-id",
                   "--client-id", "--client-secret", "--client-cert-pem", "--next-link",
                   "--fault-5xx", "--fault-slow", "--slow-seconds", "--fault-drop",
                   "--fault-malformed", "--fault-endpoints", "--invalid-ip-rate",
                   "--vanish-rate", "--advance-rate"):
        assert option in result.stdout


def test_ready_file_connection_and_environment(tmp_path):
    state = tmp_path / "sim"
    with SimulatorProcess(state, alerts=3, rate_limits=[[10, 1], [50, 5]]) as sim:
        ready = json.loads((state / "ready.json").read_text())
        assert READY_KEYS <= set(ready) and ready == sim.info
        assert ready["base_url"].startswith("https://127.0.0.1:")
        assert ready["authority_host"] == ready["base_url"]
        assert Path(ready["ca_bundle"]) == state / "ca.pem" and (state / "ca.pem").exists()
        assert Path(ready["ground_truth"]).exists()
        assert ready["pid"] == sim.process.pid
        connection = json.loads(sim.connection_uri(timeout=5))
        assert connection == {
            "conn_type": "http", "host": ready["base_url"], "login": ready["client_id"],
            "password": ready["client_secret"],
            "extra": {"tenant_id": ready["tenant_id"], "authority_host": ready["base_url"],
                      "rate_limits": [[10, 1], [50, 5]], "timeout": 5}}
        env = sim.env()
        assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == ready["ca_bundle"]
        assert json.loads(env["AIRFLOW_CONN_MDE_DEFAULT"])["login"] == ready["client_id"]
        # A client process that only gets env() reaches the API with TLS verified.
        probe = ("import json, os, urllib.request, urllib.parse, ssl\n"
                 "c = json.loads(os.environ['AIRFLOW_CONN_MDE_DEFAULT'])\n"
                 "ctx = ssl.create_default_context()\n"   # honours SSL_CERT_FILE
                 "data = urllib.parse.urlencode({'grant_type': 'client_credentials', "
                 "'client_id': c['login'], 'client_secret': c['password'], "
                 "'scope': 'https://api.securitycenter.microsoft.com/.default'}).encode()\n"
                 "url = c['extra']['authority_host'] + '/' + c['extra']['tenant_id'] + "
                 "'/oauth2/v2.0/token'\n"
                 "print(json.load(urllib.request.urlopen(url, data, context=ctx))['token_type'])\n")
        result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env},
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "Bearer", result.stderr
        process = sim.process
    assert process.poll() is not None              # stopped on exit
    assert not (state / "ready.json").exists()     # and no stale ready file is left


def test_start_failure_raises_with_the_process_stderr(tmp_path):
    with pytest.raises(SimulatorError) as caught:
        SimulatorProcess(tmp_path / "sim", rate_limits=[[0, 60]]).start()
    assert "rate limit" in str(caught.value)
    assert "exited with code 2" in str(caught.value)


def test_options_become_command_line_flags(tmp_path):
    command = build_command(tmp_path, {"alerts": 5, "next_link": True, "vanish_rate": None,
                                       "rate_limits": [[3, 1]], "fault_endpoints": ["ips"],
                                       "san": ["sim.local", "10.0.0.5"], "log_requests": False})
    assert command[1:] == ["-m", "mde_simulator", "--state-dir", str(tmp_path), "--alerts", "5",
                           "--next-link", "--rate-limits", "[[3, 1]]", "--fault-endpoints", "ips",
                           "--san", "sim.local", "--san", "10.0.0.5"]


def test_stats_shape(simulator, api):
    api.get("/api/alerts", {"$top": "1"})
    stats = simulator.stats()
    assert set(stats) >= {"since", "now", "calls", "throttled", "tokens_issued", "faults",
                          "clients", "rate_limits", "limit_scope"}
    assert stats["calls"]["list"] == {"200": 1} and stats["calls"]["token"] == {"200": 1}
    (client,) = stats["clients"]
    assert [(w["limit"], w["seconds"]) for w in client["windows"]] == [(100, 60), (1500, 3600)]
    assert client["windows"][0]["all"] == {"max_calls": 1, "max_admitted": 1}
    simulator.reset_stats()
    assert simulator.stats()["calls"] == {} and simulator.stats()["clients"] == []
