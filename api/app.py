"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fastapi.routing
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from api import errors
from api.accounts import bootstrap
from api.auth import declared_roles
from api.limits import BodySizeLimit, RateLimit, SecurityHeaders
from api.routers import (
    alarms,
    auth,
    commands,
    devices,
    dispatch,
    engineers,
    equipment,
    faults,
    health,
    iso15143,
    kpis,
    portal,
    stations,
    tickets,
    vehicles,
    warehouses,
)
from core.db import open_pool
from core.settings import Settings

API_PREFIX = "/api/v1"
POOL_MAX_CONNECTIONS = 10


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

    app = FastAPI(title="IronSight", version="0.1.0", lifespan=lifespan,
                  description="Remote monitoring and diagnosis of heavy equipment.\n\n"
                              "Authenticate with `POST /api/v1/auth/token` (OAuth2 password flow) or an API key, "
                              "then send `Authorization: Bearer <token>`.")
    app.state.settings = settings
    for router in (auth.router, equipment.router, commands.router, devices.router, faults.router, alarms.router,
                   tickets.router, stations.router, engineers.router, vehicles.router, warehouses.router,
                   dispatch.router, kpis.router, portal.router, iso15143.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    check_access_declared(app)
    errors.install(app)
    # Outermost last: headers go on every answer, including refusals by the limits below them.
    app.add_middleware(RateLimit, per_min=settings.rate_limit_per_min, burst=settings.rate_limit_burst)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["*"], allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.add_middleware(SecurityHeaders)
    return app


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
