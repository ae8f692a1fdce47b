"""The pipeline's Airflow plugin for deployments from the repository (plugins_folder =
plugins/).

Where the wheel is installed (the image), Airflow loads the same class through the
wheel's entry point ``airflow.plugins``. Airflow keeps one plugin per name but reports the
second as a plugin import error ("already registered"), so this file then exposes
nothing: a plugins folder mounted over the image (docker-compose) stays quiet.
"""

from importlib.metadata import entry_points

ENTRY_POINT = "mde_pipeline.airflow.plugin:MdePipelinePlugin"

if not any(point.value == ENTRY_POINT for point in entry_points(group="airflow.plugins")):
    from mde_pipeline.airflow.plugin import MdePipelinePlugin

    __all__ = ["MdePipelinePlugin"]
