"""Request-scoped dependencies: settings, database session, current user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Protocol, cast

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import API_PREFIX
from app.api.routing import authenticates_first, reads_credentials
from app.core.config import Settings
from app.core.security import InvalidToken, TokenClaims, decode_access_token, operator_allowed
from app.db.models import User
from app.db.session import Database
from app.services.access import Principal
from app.services.cache import ReadCache
from app.services.health import HealthState
from app.services.login_guard import LoginGuard
from app.services.users import get_principal, get_user

if TYPE_CHECKING:
    from redis.asyncio import Redis

oauth2_scheme = OAuth2PasswordBearer(tokenUrl=f"{API_PREFIX}/auth/token")


class AppState(Protocol):
    """What create_app and its lifespan keep in `app.state` (app/main.py), as the routes of
    both faces read it: through `app_state`, typed, never as untyped attributes."""

    settings: Settings
    db: Database
    redis: Redis | None
    cache: ReadCache
    login_guard: LoginGuard
    health: HealthState


def app_state(request: Request) -> AppState:
    """Also for the routes on the hottest paths to read without a dependency: FastAPI solves
    each dependency on every request, some 25 µs each (items page: 6 of them were 60 % of a
    cached page's cost), and a page served from the cache needs no session."""
    return cast("AppState", request.app.state)


# Dependencies are `async def` even when they do no I/O: FastAPI runs a plain `def` one in
# a worker thread, a thread hand-off on every request.
async def get_settings_dep(request: Request) -> Settings:
    return app_state(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-write session: its statements run in one transaction the service commits."""
    async with app_state(request).db.sessionmaker() as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for handlers that only read. On Postgres it runs in AUTOCOMMIT: no BEGIN and
    ROLLBACK around the reads (two round trips fewer), but a write through it would commit
    statement by statement, so a handler that writes takes SessionDep instead."""
    async with app_state(request).db.read_session() as session:
        yield session


async def get_cache(request: Request) -> ReadCache:
    return app_state(request).cache


async def get_login_guard(request: Request) -> LoginGuard:
    return app_state(request).login_guard


async def is_operator(request: Request) -> bool:
    """Is the caller allowed the operators' views (/metrics, the /health report)?"""
    settings = app_state(request).settings
    client = request.client.host if request.client else None
    return operator_allowed(settings, request.headers.get("authorization", ""), client)


# A page's cursor as the previous page gave it (app/services/pagination.py): the base64url
# alphabet, and far shorter than this bound.
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The `next` or `prev` of the page before; none for the first page.",
    ),
]

SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
OperatorDep = Annotated[bool, Depends(is_operator)]
LoginGuardDep = Annotated[LoginGuard, Depends(get_login_guard)]
CacheDep = Annotated[ReadCache, Depends(get_cache)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]

_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="could not validate credentials",
    headers={"WWW-Authenticate": "Bearer"},
)


_INACTIVE = HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="inactive user")


def _token_claims(settings: Settings, token: str) -> TokenClaims:
    try:
        return decode_access_token(settings, token)
    except InvalidToken:
        raise _UNAUTHORIZED from None


def _admitted(claims: TokenClaims, credential_version: int, active: bool) -> None:
    """401 for a token issued before the user's last sign-out everywhere (new password,
    deactivation), 403 for an inactive user."""
    if claims.credential_version != credential_version:
        raise _UNAUTHORIZED
    if not active:
        raise _INACTIVE


async def get_current_user(
    session: ReadSessionDep, settings: SettingsDep, token: Annotated[str, Depends(oauth2_scheme)]
) -> User:
    claims = _token_claims(settings, token)
    user = await get_user(session, claims.user_id)
    if user is None:
        raise _UNAUTHORIZED
    _admitted(claims, user.credential_version, user.is_active)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def _principal(request: Request, token: str) -> Principal:
    state = app_state(request)
    claims = _token_claims(state.settings, token)
    cache = state.cache
    principal = await cache.get_principal(claims.user_id)
    if principal is None:
        async with state.db.read_sessionmaker() as session:
            principal = await get_principal(session, claims.user_id)
        if principal is None:
            raise _UNAUTHORIZED
        await cache.set_principal(principal)
    _admitted(claims, principal.credential_version, principal.is_active)
    return principal


async def _principal_first(request: Request) -> None:
    """The gate of routes with a body (app/api/routing.py): who is asking, before the body."""
    token = await oauth2_scheme(request)
    request.state.principal = await _principal(request, token or "")


@authenticates_first(_principal_first)
@reads_credentials(oauth2_scheme)
async def get_current_principal(request: Request) -> Principal:
    """Who is asking, for routes that only need to know who may do what (the services take
    this): served from the cache when it can be, so such requests need no database round
    trip for the user; on a miss, from a read session of its own. `get_current_user` is
    for routes that show the user's account itself.

    It asks FastAPI for nothing, not even the token: it takes settings, cache and database
    from the app and reads the token as `oauth2_scheme` does (401 without one). Every
    dependency FastAPI solves costs each request some 25 µs; the four this had declared
    were a fifth of a cached items page."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:  # the route's gate found it before the body was read, or runs now
        await _principal_first(request)
        found = request.state.principal
    return found


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


async def get_current_superuser(principal: CurrentPrincipal) -> Principal:
    if not principal.is_superuser:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="superuser required")
    return principal


CurrentSuperuser = Annotated[Principal, Depends(get_current_superuser)]
