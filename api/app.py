"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routers import alarms, commands, devices, dispatch, equipment, faults, health, kpis, tickets
from core.db import open_pool
from core.settings import Settings

API_PREFIX = "/api/v1"
POOL_MAX_CONNECTIONS = 10


def create_app(settings: Settings, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = open_pool(database_url, max_size=POOL_MAX_CONNECTIONS, name="ironsight-api")
        try:
            yield
        finally:
            app.state.pool.close()

    app = FastAPI(title="IronSight", version="0.1.0", lifespan=lifespan,
                  description="Remote monitoring and diagnosis of heavy equipment.")
    app.state.settings = settings
    for router in (equipment.router, commands.router, devices.router, faults.router, alarms.router, tickets.router,
                   dispatch.router, kpis.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    return app
