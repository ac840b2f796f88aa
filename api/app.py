"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi.routing
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

from api import errors
from api.accounts import bootstrap
from api.auth import declared_roles
from api.limits import (
    BodySizeLimit,
    ProxyHeaders,
    RateLimit,
    SecurityHeaders,
    TokenOwners,
    TrustedProxies,
    parse_networks,
)
from api.routers import (
    alarms,
    auth,
    callbacks,
    calls,
    commands,
    complaints,
    customers,
    dead_letters,
    devices,
    dispatch,
    engineers,
    equipment,
    faults,
    health,
    iso15143,
    kpis,
    parts,
    portal,
    sequences,
    service_groups,
    service_records,
    stations,
    tickets,
    vehicles,
    warehouses,
)
from core.db import open_pool
from core.metrics import RequestMetrics
from core.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
POOL_MAX_CONNECTIONS = 10
# The interactive docs' scripts and styles, shipped in the package (api/static/swagger-ui/README.md):
# /docs works on a network without a public CDN.
DOCS_URL = "/docs"
DOCS_OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
DOCS_ASSETS_URL = "/docs-assets"
DOCS_ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"


def create_app(settings: Settings, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = open_pool(database_url, max_size=POOL_MAX_CONNECTIONS, name="ironsight-api")
        try:
            with app.state.pool.connection() as conn:
                bootstrap(conn, settings)
            yield
        finally:
            app.state.pool.close()

    proxies = TrustedProxies(parse_networks(settings.trusted_proxies))
    app = FastAPI(title="IronSight", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Remote monitoring and diagnosis of heavy equipment.\n\n"
                              "Authenticate with `POST /api/v1/auth/token` (OAuth2 password flow) or an API key, "
                              "then send `Authorization: Bearer <token>`.")
    app.state.settings = settings
    app.state.token_owners = owners = TokenOwners()
    _serve_docs(app)
    for router in (auth.router, equipment.router, commands.router, devices.router, faults.router, alarms.router,
                   tickets.router, stations.router, engineers.router, vehicles.router, warehouses.router,
                   dispatch.router, kpis.router, portal.router, iso15143.router, health.router, dead_letters.router,
                   sequences.router, parts.router, service_records.router, customers.router, calls.router,
                   callbacks.router, complaints.router, service_groups.router):
        app.include_router(router, prefix=API_PREFIX)
    check_access_declared(app)
    errors.install(app)
    # Outermost last: headers go on every answer, including refusals by the limits below them.
    app.add_middleware(RateLimit, per_min=settings.rate_limit_per_min, burst=settings.rate_limit_burst, owners=owners)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["*"], allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics)  # every answer, refusals by the limits too (core.metrics)
    # Outermost: everything below sees the client's address as the trusted proxies tell it, or the peer's.
    # The server must pass forwarded headers through untouched (uvicorn: proxy_headers=False).
    app.add_middleware(ProxyHeaders, proxies=proxies)
    return app


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI from the files shipped in the package (FastAPI's self-hosting recipe). ReDoc is off:
    it would need its own script from a CDN, and /docs shows the same document."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=DOCS_OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon-32x32.png",
            # No badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    # Plain routes, as FastAPI adds its own docs: not API operations, so not in the OpenAPI document.
    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(DOCS_OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)


def api_routes(app: FastAPI) -> list:
    """Every API route as served, including those of included routers (which newer FastAPI
    versions keep as lazy contexts rather than copying into ``app.routes``)."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:
        return [route for route in app.routes if isinstance(route, APIRoute)]
    return [ctx for ctx in iter_contexts(app.routes) if isinstance(ctx.original_route, APIRoute)]


def check_access_declared(app: FastAPI) -> None:
    """Refuse to build an app with a route that does not say who may call it."""
    undeclared = [f"{sorted(route.methods)} {route.path}" for route in api_routes(app)
                  if declared_roles(route) is None]
    if undeclared:
        raise RuntimeError("routes without an access declaration (require(...) or public()): "
                           + ", ".join(undeclared))
