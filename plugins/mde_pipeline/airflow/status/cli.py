"""``make status``: the operator's view in the terminal (the same document as ``/mde``).

    python -m mde_pipeline.airflow.status.cli [--json] [--lake ROOT] [--ledger-dir DIR]

Reads the budget ledger and the lake directly, and Airflow's metadata DB when this
process has one (``make status`` uses the repo's ``.airflow/``, the home of ``make run``
and ``make ui``). One section per tenant of Variable ``mde_tenants`` (here: only from
``AIRFLOW_VAR_MDE_TENANTS``), each from its connection ``mde_<name>`` and its lake
partition. Without tenants and without connection ``mde_default`` in this process,
every budget the ledger holds and every tenant the lake holds are shown (default limits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mde_pipeline.airflow.status.text import render
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the status document (docs/OPERATORS.md)")
    parser.add_argument("--lake", help="lake root (default: Variable mde_lake_root, then <repo>/lake)")
    parser.add_argument("--ledger-dir", help="budget ledger directory (default: the connection's, then $AIRFLOW_HOME/mde_rate_ledger)")
    args = parser.parse_args(argv)

    from mde_pipeline.airflow.lake_location import configured_lake_location
    from mde_pipeline.airflow.status.report import build_status

    location = configured_lake_location(args.lake) if args.lake else None
    ledger = os.path.join(args.ledger_dir, LEDGER_FILE_NAME) if args.ledger_dir else None
    status = build_status(location=location, ledger_path=ledger)
    print(json.dumps(status, indent=1) if args.json else render(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
