"""Who may call what: the request's principal from its bearer token, and the access declaration
every route makes.

People log in with the OAuth2 password flow and get an access token that expires; integrations get
long-lived API keys (api.accounts stores both, api.credentials hashes them). Every route declares
the roles that may call it with ``require(...)`` (or one of the aliases ``Reader``, ``Staff``,
``AnyCaller``); ``create_app`` refuses to build an app with a route that declares nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer

from api.accounts import authenticate
from api.deps import DbConn
from api.roles import READERS, STAFF, Principal, Role

TOKEN_URL = "/api/v1/auth/token"
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, conn: DbConn, token: str | None = Depends(_bearer)) -> Principal:
    if not token:
        raise _unauthorized("not authenticated: send Authorization: Bearer <token>")
    principal = authenticate(conn, token)
    if principal is None:
        raise _unauthorized("invalid, expired or revoked token")
    request.state.principal = principal
    # From now on the rate limit charges this token's requests to its account (api.limits.RateLimit).
    owners = getattr(request.app.state, "token_owners", None)
    authorization = request.headers.get("authorization")
    if owners is not None and authorization is not None:
        owners.remember(authorization, principal.user_id)
    return principal


def require(*roles: Role) -> Any:
    """The access declaration of a route: the caller must hold one of ``roles``.

    Use as ``caller: Annotated[Principal, require(Role.admin, Role.dispatcher)]`` or in a route's
    ``dependencies=[require(...)]``. A missing or bad token answers 401, another role 403.
    """
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("require() needs at least one role; use public() for open routes")

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(403, f"a {principal.role.value} may not do this")
        return principal

    check.access_roles = allowed  # type: ignore[attr-defined]
    return Depends(check)


def public() -> Any:
    """The access declaration of a route anyone may call (health, login)."""

    def anyone() -> None:
        return None

    anyone.access_roles = frozenset()  # type: ignore[attr-defined]
    return Depends(anyone)


# Route-level declarations (``dependencies=...``) for routes that do not use their caller.
STAFF_ONLY = [require(*STAFF)]
ADMIN_OR_DISPATCHER = [require(Role.admin, Role.dispatcher)]

# The callers routes most often take, named once: ``caller: Reader`` instead of
# ``caller: Annotated[Principal, require(*READERS)]``.
Reader = Annotated[Principal, require(*READERS)]
Staff = Annotated[Principal, require(*STAFF)]
AnyCaller = Annotated[Principal, require(*Role)]


def declared_roles(route: Any) -> frozenset[Role] | None:
    """The roles a route declared through require()/public(); None if it declared nothing."""
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        roles = getattr(dependant.call, "access_roles", None)
        if roles is not None:
            return roles
        stack.extend(dependant.dependencies)
    return None
