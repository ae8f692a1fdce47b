"""Airflow plugin of the MDE alert-IPs pipeline.

Registers the priority weight strategy so that DAGs can refer to it by import path
(see mde_pipeline/airflow/priority.py), and the operator's view: a FastAPI app at
``/mde`` on the API server (page + ``/mde/api/status``, docs/OPERATORS.md) linked in the
UI's navigation. Everything else is a normal importable package.

Airflow finds it through the wheel's entry point ``airflow.plugins`` (pyproject.toml), or,
deploying from the repository, through plugins/mde_pipeline_plugin.py in the plugins
folder. Airflow keeps one plugin per name, so both at once register it once.
"""

from airflow.plugins_manager import AirflowPlugin

from mde_pipeline.airflow.priority import ScheduledBeforeBackfill
from mde_pipeline.airflow.status.web import URL_PREFIX, MountSlashRedirect, app as status_app


class MdePipelinePlugin(AirflowPlugin):
    name = "mde_pipeline"
    priority_weight_strategies = [ScheduledBeforeBackfill]
    fastapi_apps = [{"name": "mde_status", "app": status_app, "url_prefix": URL_PREFIX}]
    # /mde (no slash) is outside the mount: redirected to /mde/ before the UI's catch-all.
    fastapi_root_middlewares = [{"name": "mde_status_slash", "middleware": MountSlashRedirect, "kwargs": {"prefix": URL_PREFIX}}]
    external_views = [
        {
            "name": "MDE pipeline status",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "mde-status",
        }
    ]
