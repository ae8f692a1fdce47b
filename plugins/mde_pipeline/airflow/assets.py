"""Airflow Assets for the lake tables, so downstream DAGs can be scheduled on them.

The names are static (the lake root is a runtime Variable, unknown when DAGs are
parsed); ``publish`` attaches the committed file URIs as asset-event extras.
"""

from airflow.sdk import Asset

ALERTS_ASSET = Asset(name="mde_lake.alerts", uri="mde-lake://alerts", group="mde_lake")
ALERT_IPS_ASSET = Asset(name="mde_lake.alert_ips", uri="mde-lake://alert_ips", group="mde_lake")
LAKE_ASSETS = [ALERTS_ASSET, ALERT_IPS_ASSET]
