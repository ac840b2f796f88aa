"""Every error answer has one JSON shape: ``{"detail": message, "status": code}``, plus ``errors``
(each with ``loc``, ``msg``, ``type``) when the request did not validate.

The rejected input is never echoed back: it may be a password. Nor is what the database said about
it: a database error is answered with a generic message and a request id (also in ``X-Request-ID``),
and logged under that id with the database's own text.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import psycopg
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


def request_id() -> str:
    """A short random id tying an error answer to its log line."""
    return secrets.token_hex(6)


def _db_error(request: Request, exc: psycopg.Error, status: int, message: str,
              level: int = logging.WARNING) -> JSONResponse:
    rid = request_id()
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    log.log(level, "request %s: %s %s: database %s (sqlstate %s): %s", rid, request.method, request.url.path,
            type(exc).__name__, getattr(exc, "sqlstate", None), first_line[:500])
    return error_response(status, f"{message} (request id {rid})", headers={"X-Request-ID": rid})


async def _bad_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
    # Input the models let through but the database cannot hold or compare (a NUL character in a
    # text, a number beyond bigint): the caller's mistake, so 422; what exactly is logged, not sent.
    return _db_error(request, exc, 422, "invalid value: the database cannot store or compare a value of this request",
                     logging.INFO)


async def _conflict(request: Request, exc: psycopg.IntegrityError) -> JSONResponse:
    # A constraint the route did not check first (usually a race with another request).
    return _db_error(request, exc, 409, "the request conflicts with the stored data; reload and try again")


async def _unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
    # The database is gone, restarting, overloaded or cancelled the statement (and pool timeouts).
    response = _db_error(request, exc, 503, "the database is unavailable; try again shortly")
    response.headers["Retry-After"] = "5"
    return response


async def _database(request: Request, exc: psycopg.Error) -> JSONResponse:
    rid = request_id()
    log.error("request %s: %s %s: database error", rid, request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error (request id {rid})", headers={"X-Request-ID": rid})


async def _out_of_range(request: Request, exc: OverflowError) -> JSONResponse:
    # Date arithmetic on an input at the edge of the calendar (a period ending in year 1).
    return error_response(422, f"value out of range: {exc}")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id()
    log.error("request %s: unexpected error on %s %s", rid, request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error (request id {rid})", headers={"X-Request-ID": rid})


def install(app: FastAPI) -> None:
    # FastAPI's decorator form registers the same handlers (``add_exception_handler``) and, unlike
    # Starlette's method, accepts handlers typed for the exception class they handle.
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(psycopg.DataError)(_bad_value)
    app.exception_handler(psycopg.IntegrityError)(_conflict)
    app.exception_handler(psycopg.OperationalError)(_unavailable)
    app.exception_handler(psycopg.Error)(_database)
    app.exception_handler(OverflowError)(_out_of_range)
    app.exception_handler(Exception)(_unexpected)

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
            _document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}
_ERRORS = {
    "401": "missing, invalid, expired or revoked token",
    "403": "the caller's role may not do this",
    "404": "no such resource, or not the caller's",
    "413": "request body too large",
    "422": "invalid request",
    "429": "too many requests (Retry-After says when to try again)",
}


def _document_errors(schema: dict[str, Any]) -> None:
    """List on every operation the error answers any request may get, in their one shape."""
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["422", "429"]
            if operation.get("security"):
                codes += ["401", "403"]
            if "{" in path or operation.get("security"):
                codes.append("404")
            if "requestBody" in operation:
                codes.append("413")
            for code in codes:
                existing = operation["responses"].setdefault(code, {"description": _ERRORS[code]})
                existing.setdefault("content", _ERROR_BODY)
