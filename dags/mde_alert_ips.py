"""Airflow DAGs mde_alert_ips[_<tenant>]: MDE alert IPs, hourly (the flow: mde_pipeline.airflow.dags.alert_ips)."""

from mde_pipeline.airflow.dags.alert_ips import hourly_dags

globals().update(hourly_dags())
