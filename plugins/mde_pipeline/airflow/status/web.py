"""The FastAPI app mounted at ``/mde`` on Airflow's API server (plugin ``fastapi_apps``).

Routes (under the mount point):

* ``/``                    the HTML page (page.render_page);
* ``/api/status``          the status document (report.build_status; docs/OPERATORS.md);
* ``/static/plotly.min.js`` Plotly.js from the ``plotly`` wheel (no CDN);

and ``/mde`` itself redirects to ``/mde/`` (:class:`MountSlashRedirect`, a root middleware).

Auth: the same as Airflow's REST API. The caller is identified by Airflow's own
``get_user`` dependency (``Authorization: Bearer <JWT from POST /auth/token>``, or the
UI's ``_token`` session cookie), and must be allowed to read DAG ``mde_alert_ips``, or
with Variable ``mde_tenants`` every ``mde_alert_ips_<name>`` (``is_authorized_dag(GET)``
of the configured auth manager). Without a valid identity
the JSON answers 401/403 like the REST API; the page redirects to Airflow's login.
The Plotly bundle is public (a library file, no data).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from mde_pipeline.airflow.status.page import render_page
from mde_pipeline.airflow.status.report import DAG_ID, build_status
from mde_pipeline.airflow.tenants import configured_tenant_dags

URL_PREFIX = "/mde"


class MountSlashRedirect:
    """Root middleware (plugin ``fastapi_root_middlewares``): ``/mde`` -> ``/mde/``.

    Airflow mounts the app with Starlette's ``Mount("/mde")``, which matches ``/mde/...``
    only; ``/mde`` itself fell through to the UI's catch-all route ("page not found" in the
    React UI). No route of the mounted app can see that path, so the redirect sits in
    front of the API server's router. Query strings are kept; every other request passes.
    """

    def __init__(self, app: Any, prefix: str = URL_PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            root, path = scope.get("root_path", ""), scope["path"]
            if root and path.startswith(root):  # servers that put the root path in front (uvicorn)
                path = path[len(root):]
            if path == self.prefix:
                query = scope.get("query_string", b"").decode("latin-1")
                location = f"{root}{self.prefix}/" + (f"?{query}" if query else "")
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def plotly_bundle() -> str:
    import plotly

    return os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")


def shown_dag_ids() -> list[str]:
    """The hourly DAGs whose tenants the page shows (Variable mde_tenants)."""
    try:
        return [dag.dag_id for dag in configured_tenant_dags()]
    except Exception:  # a bad Variable: the document says so; guard the default DAG
        return [DAG_ID]


async def authorized(request: Request) -> None:
    """Airflow's REST API identity + permission to read every hourly DAG shown (one per
    tenant, or mde_alert_ips)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_access_dag

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)
    for dag_id in await run_in_threadpool(shown_dag_ids):
        await run_in_threadpool(requires_access_dag("GET", param_dag_id=dag_id), request, user)


class _LoginRedirect(Exception):
    pass


async def page_authorized(request: Request) -> None:
    try:
        await authorized(request)
    except HTTPException as exc:
        if exc.status_code in (401, 403):
            raise _LoginRedirect() from exc
        raise


def create_app() -> FastAPI:
    app = FastAPI(title="MDE alert IPs: operator's view", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(_LoginRedirect)
    async def _to_login(request: Request, exc: _LoginRedirect) -> Any:
        from airflow.api_fastapi.app import get_auth_manager

        try:
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        except Exception:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)

    @app.get("/api/status", dependencies=[Depends(authorized)])
    async def status_json() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(build_status))

    @app.get("/", dependencies=[Depends(page_authorized)], response_class=HTMLResponse)
    async def status_page(request: Request) -> HTMLResponse:
        status = await run_in_threadpool(build_status)
        return HTMLResponse(render_page(status, request.scope.get("root_path", "") or URL_PREFIX))

    @app.get("/static/plotly.min.js")
    async def plotly_js() -> FileResponse:
        return FileResponse(plotly_bundle(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    return app


app = create_app()
