"""The environment a test's MDE client needs beside a module's running simulator."""

from __future__ import annotations


def use_simulator(sim, monkeypatch, tmp_path):
    """Trust the simulator's CA (and nothing else set by the caller), give the test its own
    rate-limit ledger folder and Airflow home; returns ``sim``."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("MDE_RATE_LIMIT_LEDGER_DIR", str(tmp_path / "ledger"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    return sim
