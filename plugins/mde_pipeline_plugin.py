"""Airflow plugin of the MDE alert-IPs pipeline.

Registers the priority weight strategy so that DAGs can refer to it by import path
(see mde_pipeline/airflow/priority.py). Everything else is a normal importable package.
"""

from airflow.plugins_manager import AirflowPlugin

from mde_pipeline.airflow.priority import ScheduledBeforeBackfill


class MdePipelinePlugin(AirflowPlugin):
    name = "mde_pipeline"
    priority_weight_strategies = [ScheduledBeforeBackfill]
