"""Every error answer has one JSON shape: ``{"detail": message, "status": code}``, plus ``errors``
(each with ``loc``, ``msg``, ``type``) when the request did not validate.

The rejected input is never echoed back: it may be a password.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

VALIDATION_SUMMARY_MAX = 3


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorPublic(BaseModel):
    detail: str
    status: int
    errors: list[ValidationIssue] | None = None


def error_response(status: int, detail: str, *, headers: dict[str, str] | None = None,
                   errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    issues = [{"loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
               "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in issues[:VALIDATION_SUMMARY_MAX])
    if len(issues) > VALIDATION_SUMMARY_MAX:
        summary += f" (and {len(issues) - VALIDATION_SUMMARY_MAX} more)"
    return error_response(422, summary or "invalid request", errors=issues)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

    def openapi() -> dict[str, Any]:
        # The documented error bodies are the ones actually sent (FastAPI documents its own 422 shape).
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ValidationIssue"] = ValidationIssue.model_json_schema()
            error = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
            error.pop("$defs", None)
            components["ErrorPublic"] = error
            components["HTTPValidationError"] = {"$ref": "#/components/schemas/ErrorPublic"}
            components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
