"""Start the simulator as a subprocess and talk to its control plane.

    with SimulatorProcess(tmp_path / "sim", alerts=50, rate_limits=[[10, 1]]) as sim:
        os.environ.update(sim.env())          # or pass sim.env() to a child process
        sim.configure(fault_5xx=0.1)
        sim.stats()["clients"][0]["windows"]

Keyword options are the command-line options with '_' for '-' (see README.md):
True adds a flag, False/None leaves it out, lists/dicts become JSON, lists of strings
for repeatable options (san, extra_scopes, client_cert_pem) repeat the flag.
"""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

INCLUDE_DIR = Path(__file__).resolve().parent.parent
REPEATABLE = {"san": "--san", "extra_scopes": "--extra-scope",
              "client_cert_pem": "--client-cert-pem", "client": "--client"}


class SimulatorError(RuntimeError):
    """The simulator did not start, or a control-plane call failed."""


def build_command(state_dir: Path, options: dict, python: str = sys.executable) -> list[str]:
    command = [python, "-m", "mde_simulator", "--state-dir", str(state_dir)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        if name in REPEATABLE:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                command += [REPEATABLE[name],
                            json.dumps(item) if isinstance(item, dict) else str(item)]
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif isinstance(value, (list, tuple, dict)):
            if name == "fault_endpoints":
                command += [flag, ",".join(value)]
            else:
                command += [flag, json.dumps(value)]
        else:
            command += [flag, str(value)]
    return command


class SimulatorProcess:
    def __init__(self, state_dir, *, startup_timeout: float = 30.0, python: str = sys.executable,
                 **options):
        self.state_dir = Path(state_dir)
        self.options = options
        self.startup_timeout = startup_timeout
        self.python = python
        self.process: subprocess.Popen | None = None
        self.info: dict = {}
        self._ssl_context: ssl.SSLContext | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "SimulatorProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ready = self.state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(INCLUDE_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self._stderr_path = self.state_dir / "simulator.stderr.log"
        self._stderr = open(self._stderr_path, "wb")
        options = {"parent_pid": os.getpid(), **self.options}
        self.process = subprocess.Popen(
            build_command(self.state_dir, options, self.python),
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if ready.exists():
                try:
                    self.info = json.loads(ready.read_text())
                    break
                except ValueError:
                    pass  # cannot happen with the atomic rename, but never trust a race
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise SimulatorError(f"simulator exited with code {code} before it was ready:\n"
                                     f"{self._stderr_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SimulatorError(f"simulator not ready after {self.startup_timeout} s:\n"
                                     f"{self._stderr_tail()}")
            time.sleep(0.02)
        self._ssl_context = ssl.create_default_context(cafile=self.info["ca_bundle"])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _stderr_tail(self, limit: int = 4000) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no stderr captured)"

    # ------------------------------------------------------------ facts
    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def ca_bundle(self) -> str:
        return self.info["ca_bundle"]

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only this simulator's CA."""
        return self._ssl_context

    def connection_uri(self, *, login: str | None = None, password: str | None = None,
                       host: str | None = None, **extra_overrides) -> str:
        """AIRFLOW_CONN_MDE_DEFAULT (JSON form) for this simulator; extra keys override."""
        extra = {"tenant_id": self.info["tenant_id"],
                 "authority_host": self.info["authority_host"],
                 "rate_limits": self.info["rate_limits"]}
        extra.update(extra_overrides)
        return json.dumps({"conn_type": "http", "host": host or self.base_url,
                           "login": login or self.info["client_id"],
                           "password": password or self.info["client_secret"],
                           "extra": extra})

    def env(self, **extra_overrides) -> dict:
        """Environment a client process needs: trust the CA, find the connection."""
        return {"REQUESTS_CA_BUNDLE": self.ca_bundle, "SSL_CERT_FILE": self.ca_bundle,
                "AIRFLOW_CONN_MDE_DEFAULT": self.connection_uri(**extra_overrides)}

    # ------------------------------------------------------------ control plane
    def _call(self, method: str, path: str, payload=None, timeout: float = 30.0):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout,
                                        context=self._ssl_context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SimulatorError(f"{method} {path} -> {exc.code}: "
                                 f"{exc.read().decode(errors='replace')}") from None

    def stats(self) -> dict:
        return self._call("GET", "/_sim/stats")

    def calls(self) -> list:
        """Every API call since the last reset: [{"client_id", "tenant_id", "calls":
        [[arrival, endpoint, admitted], ...]}] (GET /_sim/calls)."""
        return self._call("GET", "/_sim/calls")["clients"]

    def reset_stats(self, limiter: bool = False) -> dict:
        """Forget recorded calls; limiter=True also empties the rate-limit windows."""
        return self._call("POST", "/_sim/reset_stats", {"limiter": limiter})

    def configure(self, **settings) -> dict:
        """POST /_sim/config (faults, limits, clients, ...); returns the new settings."""
        return self._call("POST", "/_sim/config", settings)

    def settings(self) -> dict:
        return self._call("GET", "/_sim/config")

    def advance(self, *, ids=None, count=None, to=None, add_ip: bool = False) -> dict:
        """Move alerts' lastUpdateTime forward (to `to`, ISO, default now)."""
        payload = {"add_ip": add_ip}
        if ids is not None:
            payload["ids"] = list(ids)
        if count is not None:
            payload["count"] = count
        if to is not None:
            payload["to"] = to
        return self._call("POST", "/_sim/advance", payload)

    def ground_truth(self) -> dict:
        return self._call("GET", "/_sim/ground_truth")

    def requests(self) -> list:
        """The most recent requests (method, path, endpoint, status, client id)."""
        return self._call("GET", "/_sim/requests")["requests"]
