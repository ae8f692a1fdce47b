"""``make query``: the analysts' DuckDB CLI on the lake as Airflow configures it.

The CLI itself (:mod:`mde_pipeline.analytics.cli`) reads the lake only; this entry point
hands it the Airflow-side resolver, so ``--lake`` defaults to Variable ``mde_lake_root``
and an ``abfs://`` root opens with the connection of Variable ``mde_lake_conn_id``.
"""

from __future__ import annotations

import sys

from mde_pipeline.airflow.lake_location import configured_lake_location
from mde_pipeline.analytics.cli import main as analytics_main


def main(argv: list[str] | None = None) -> int:
    return analytics_main(argv, locate=configured_lake_location)


if __name__ == "__main__":
    sys.exit(main())
