"""The current user; for superusers, the users: list, create, (de)activate."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api import API_PREFIX
from app.api.deps import (
    CacheDep,
    CurrentSuperuser,
    CurrentUser,
    CursorQuery,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
)
from app.api.errors import error_responses
from app.api.pages import LISTING_RESPONSES, link_header
from app.api.routing import Route
from app.db.models import User
from app.schemas.users import UserCreate, UserPage, UserPublic, UserUpdate
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
