from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.auth import public
from api.schemas.health import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, dependencies=[public()])
def health(request: Request, response: Response) -> Health:
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # psycopg errors and the pool's own PoolTimeout alike
        response.status_code = 503
        return Health(status="degraded", database=False, detail=type(exc).__name__)
    return Health(status="ok", database=True)
