"""Operator endpoints: Prometheus ``/metrics``, the ``/dashboard`` page and its data, offline ``/docs``."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from mlstack import messages, metrics
from mlstack.api import operator_view
from mlstack.api.auth import auth_failure
from mlstack.api.jsonsafe import SafeJSONResponse
from mlstack.api.services import ServicesDep
from mlstack.jobstore import StoreError

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_DIR = "/static/swagger-ui"
# The figures read at scrape time come from the store; a scrape never waits longer than this for them.
SCRAPE_READ_TIMEOUT_S = 5.0


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/metrics")
async def prometheus_metrics(request: Request, services: ServicesDep) -> Response:
    """Open on loopback (or everywhere with MLSTACK_METRICS_PUBLIC=true); elsewhere the client token."""
    if not (services.settings.metrics_public or _loopback(request)):
        failure = auth_failure(request.headers.get("authorization"), services.settings.api_token)
        if failure is not None:
            status_code, headers, body = failure
            return Response(body, status_code=status_code, headers=headers, media_type="application/json")
    try:
        figures = await asyncio.wait_for(operator_view.model_figures(services), SCRAPE_READ_TIMEOUT_S)
    except (*StoreError, TimeoutError) as exc:
        log.warning("metrics: model figures unavailable (%s)", exc.__class__.__name__)
        figures = []  # the counters are still worth a scrape
    return Response(metrics.exposition(figures), media_type=metrics.CONTENT_TYPE)


# The page runs only its own script and talks only to this API; nobody may frame it.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.get("/dashboard")
async def dashboard_page() -> FileResponse:
    # The page holds no data: it asks /dashboard/data with the token the operator types in.
    return FileResponse(STATIC_DIR / "dashboard" / "index.html", media_type="text/html", headers=DASHBOARD_HEADERS)


@router.get("/dashboard/data")
async def dashboard_data(services: ServicesDep) -> SafeJSONResponse:
    """Client token (checked by AuthMiddleware, like the public endpoints)."""
    try:
        return SafeJSONResponse(await operator_view.dashboard(services), headers={"Cache-Control": "no-store"})
    except StoreError:
        return SafeJSONResponse({"status": "Error", "response": messages.DASHBOARD_DB_FAILED}, status_code=503)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """FastAPI's Swagger page with its JavaScript and CSS served from the package (no CDN)."""
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url=f"{SWAGGER_DIR}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_DIR}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_DIR}/favicon-32x32.png",
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()
