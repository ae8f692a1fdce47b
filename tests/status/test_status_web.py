"""/mde without its slash reaches the app: the plugin's root middleware redirects it.

The API server mounts the app like Airflow 3.3's ``init_plugins`` (``app.mount(url_prefix,
subapp)``, then ``add_middleware`` for each root middleware), after which the UI's
catch-all route ``/{rest_of_path:path}`` answers every other path; the same here, without
starting Airflow.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mde_pipeline.airflow.status.web import URL_PREFIX, app as status_app
from mde_pipeline.airflow.plugin import MdePipelinePlugin


def api_server(root_path: str = "") -> FastAPI:
    server = FastAPI(root_path=root_path)
    for mounted in MdePipelinePlugin.fastapi_apps:
        server.mount(mounted["url_prefix"], mounted["app"])
    for middleware in MdePipelinePlugin.fastapi_root_middlewares:
        server.add_middleware(middleware["middleware"], *middleware.get("args", []), **middleware.get("kwargs", {}))

    @server.get("/{rest_of_path:path}")
    def ui_catch_all(rest_of_path: str) -> dict:
        return {"ui": rest_of_path}

    return server


@pytest.mark.parametrize("root_path", ["", "/airflow"])
def test_mde_without_its_slash_redirects_to_the_page(root_path):
    client = TestClient(api_server(root_path), root_path=root_path)
    answer = client.get(f"{root_path}{URL_PREFIX}?x=1", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (307, f"{root_path}{URL_PREFIX}/?x=1")
    # The slash and the rest reach the app (the Plotly bundle needs no login), other paths the UI.
    plotly = client.get(f"{root_path}{URL_PREFIX}/static/plotly.min.js")
    assert plotly.status_code == 200 and plotly.headers["content-type"].startswith("text/javascript")
    assert client.get(f"{root_path}{URL_PREFIX}x").json() == {"ui": f"{URL_PREFIX[1:]}x"}
    assert client.get(f"{root_path}/dags").json() == {"ui": "dags"}


def test_without_the_middleware_the_ui_catch_all_answers():
    # What the redirect is for: the mount alone does not match /mde.
    server = FastAPI()
    server.mount(URL_PREFIX, status_app)
    server.get("/{rest_of_path:path}")(lambda rest_of_path: {"ui": rest_of_path})
    assert TestClient(server).get(URL_PREFIX, follow_redirects=False).json() == {"ui": "mde"}
