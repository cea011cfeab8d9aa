"""The current user and their password; for superusers, the users: list, create,
(de)activate, reset a password."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api import API_PREFIX
from app.api.client import client_address, set_device_cookie
from app.api.deps import (
    CacheDep,
    CurrentPrincipal,
    CurrentSuperuser,
    CurrentUser,
    CursorQuery,
    LoginGuardDep,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
)
from app.api.errors import error_responses
from app.api.pages import LISTING_RESPONSES, link_header
from app.api.routing import Route
from app.core.security import create_access_token
from app.db.models import User
from app.schemas.users import (
    PasswordChange,
    PasswordSet,
    Token,
    UserCreate,
    UserPage,
    UserPublic,
    UserUpdate,
)
from app.services import passwords
from app.services.login_guard import issue_device_token
from app.services.users import create_user, list_users, set_active

MAX_PAGE_SIZE = 100

# Every route needs a user: 401 without one, 403 for an inactive one (or not a superuser).
router = APIRouter(
    prefix=f"{API_PREFIX}/users",
    tags=["users"],
    responses=error_responses(401, 403, 503),
    route_class=Route,
)


@router.get("/me", response_model=UserPublic)
async def read_me(user: CurrentUser) -> User:
    return user


@router.post("/me/password", response_model=Token, responses=error_responses(400, 403, 413, 429))
async def change_password(
    request: Request,
    response: Response,
    data: PasswordChange,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    guard: LoginGuardDep,
    principal: CurrentPrincipal,
) -> Token:
    """Change your password (the current one is required). Every access token and web UI
    session issued before is refused from now on, everywhere; the answer carries a new
    token for this client."""
    changed = await passwords.change_password(
        session,
        cache,
        guard,
        principal,
        data.current_password,
        data.new_password,
        client_address(request),
    )
    set_device_cookie(response, settings, issue_device_token(settings, changed.id))
    return Token(
        access_token=create_access_token(settings, changed.id, changed.credential_version),
        expires_in=settings.access_token_expire_minutes * 60,
    )


@router.get("", response_model=UserPage, responses=LISTING_RESPONSES)
async def list_all(
    request: Request,
    response: Response,
    session: ReadSessionDep,
    settings: SettingsDep,
    _admin: CurrentSuperuser,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: CursorQuery = None,
) -> UserPage:
    """Superusers: the users, newest first."""
    page = await list_users(session, settings, limit=limit, cursor=cursor)
    response.headers.update(link_header(request, page.next, page.prev))
    return UserPage(
        items=[UserPublic.model_validate(user) for user in page.rows],
        limit=limit,
        next=page.next,
        prev=page.prev,
    )


@router.post(
    "",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 409, 413, 503),
)
async def create(data: UserCreate, session: SessionDep, _admin: CurrentSuperuser) -> User:
    return await create_user(session, data)


@router.patch(
    "/{user_id:uuid}", response_model=UserPublic, responses=error_responses(400, 404, 409, 413)
)
async def update(
    user_id: uuid.UUID,
    data: UserUpdate,
    session: SessionDep,
    cache: CacheDep,
    admin: CurrentSuperuser,
) -> User:
    """Superusers: deactivate a user (signed out of the web UI at once, API tokens refused)
    or activate them again."""
    return await set_active(session, cache, admin, user_id, data.is_active)


@router.post(
    "/{user_id:uuid}/password", response_model=UserPublic, responses=error_responses(400, 404, 413)
)
async def reset_password(
    user_id: uuid.UUID,
    data: PasswordSet,
    session: SessionDep,
    cache: CacheDep,
    _admin: CurrentSuperuser,
) -> User:
    """Superusers: set a user's password. The user is signed out everywhere (tokens and web
    UI sessions refused from now on)."""
    return await passwords.reset_password(session, cache, user_id, data.new_password)
