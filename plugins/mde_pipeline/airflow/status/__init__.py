"""The operator's view: budget, backfill progress and lake freshness (docs/OPERATORS.md).

``report.build_status`` assembles the JSON from the ledger (api.budget_status), the lake
(lake.lake_status) and Airflow's metadata (backfills); ``web`` serves it at ``/mde`` on
the API server (registered by the plugin, airflow/plugin.py), ``cli`` prints it
(``make status``).
"""
