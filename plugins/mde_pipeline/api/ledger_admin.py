"""Show and clear the throttle blocks of the host's rate-limit ledger (no Airflow needed).

    python -m mde_pipeline.api.ledger_admin show  [--ledger-dir DIR | --ledger redis://...] [--key TENANT:CLIENT]
    python -m mde_pipeline.api.ledger_admin clear [--ledger-dir DIR | --ledger redis://...] [--key TENANT:CLIENT]

A 429 writes a block to the ledger that every task on the host waits out (README
"Clearing a throttle block"). Blocks never reach past the longest rate window plus a
minute, but after a wrong block (or before the cap existed) clearing it saves the wait.
Clearing does not lift the service's own throttle: calling during it prolongs it.
``--ledger-dir`` defaults to what the tasks use (default_ledger_dir(): the connection's
``rate_limit_ledger_dir`` is not read here; pass it if you set one). With a shared Redis
ledger (extra ``rate_limit_ledger``), pass its URL as ``--ledger`` (or env
``MDE_RATE_LIMIT_LEDGER``) instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from typing import Sequence, TextIO

from mde_pipeline.api.ledger_backends import safe_ledger_display
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, SqliteLedger, default_ledger_dir
from mde_pipeline.api.redis_ledger import RedisLedger, is_redis_url
from mde_pipeline.api.tls import trust_bundle


def _when(until: float) -> str:
    try:
        return datetime.fromtimestamp(until, timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "never (absurd)"


def show(ledger: SqliteLedger | RedisLedger, where: str, key: str | None, out: TextIO, now: float) -> int:
    blocks = {k: v for k, v in ledger.blocks().items() if key is None or k == key}
    active = {k: v for k, v in blocks.items() if v > now}
    if not active:
        print(f"no active throttle block in {where}", file=out)
    for name, until in sorted(active.items()):
        print(f"{name}  blocked until {_when(until)} ({until - now:.0f}s more)", file=out)
    return 0


def clear(ledger: SqliteLedger | RedisLedger, where: str, key: str | None, out: TextIO) -> int:
    removed = ledger.clear_blocks(key)
    print(f"removed {removed} throttle block(s) from {where}", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m mde_pipeline.api.ledger_admin", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("show", "clear"))
    parser.add_argument("--ledger-dir", default=None, help="folder of the ledger file (default: %(default)s -> "
                        "$MDE_RATE_LIMIT_LEDGER_DIR, else $AIRFLOW_HOME/mde_rate_ledger)")  # fmt: skip
    parser.add_argument("--ledger", default=os.environ.get("MDE_RATE_LIMIT_LEDGER"),
                        help="a shared Redis ledger's URL (the connection's rate_limit_ledger)")
    parser.add_argument("--key", default=None, help="one budget, tenant_id:client_id in lower case (default: all)")
    args = parser.parse_args(argv)
    if args.ledger and is_redis_url(args.ledger):
        # rediss:// is verified against the CAs the API calls trust (REQUESTS_CA_BUNDLE too).
        ledger, where = RedisLedger(args.ledger, ca_file=trust_bundle()), safe_ledger_display(args.ledger)
    else:
        where = os.path.join(default_ledger_dir(args.ledger_dir), LEDGER_FILE_NAME)
        if not os.path.exists(where):
            print(f"no ledger at {where}", file=out)
            return 0 if args.action == "show" else 1
        ledger = SqliteLedger(where)
    try:
        key = args.key.strip().lower() if args.key else None
        if args.action == "show":
            return show(ledger, where, key, out, time.time())
        return clear(ledger, where, key, out)
    finally:
        ledger.close()


if __name__ == "__main__":
    sys.exit(main())
