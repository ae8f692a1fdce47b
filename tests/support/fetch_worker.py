"""A stand-in for one worker host: its own process and Airflow home, the real connection
lookup (AIRFLOW_CONN_MDE_DEFAULT), fetching the IPs of the alert ids it is given.

    python -m tests.support.fetch_worker <ids.json> <start-file> <result.json>

Waits for <start-file> to exist (so every host starts together), then writes
{"ips": {alert_id: [...]}, "throttled": n, "calls": n} to <result.json>.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    ids_file, start_file, result_file = (Path(a) for a in argv)
    from mde_pipeline.airflow.hooks import MdeHook

    hook = MdeHook()
    client = hook.get_client()
    alert_ids = json.loads(ids_file.read_text())
    Path(f"{result_file}.ready").touch()
    deadline = time.monotonic() + 300
    while not start_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        ips = {alert_id: client.get_alert_ips(alert_id) for alert_id in alert_ids}
        stats = client.stats.snapshot()
        result_file.write_text(json.dumps({"ips": ips, "throttled": stats.throttled, "calls": stats.calls}))
    finally:
        hook.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
