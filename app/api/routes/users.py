"""The current user, and user creation by a superuser."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api import API_PREFIX
from app.api.deps import CurrentSuperuser, CurrentUser, SessionDep
from app.api.errors import error_responses
from app.db.models import User
from app.schemas.users import UserCreate, UserPublic
from app.services.users import create_user

# Every route needs a user: 401 without one, 403 for an inactive one (or not a superuser).
router = APIRouter(
    prefix=f"{API_PREFIX}/users", tags=["users"], responses=error_responses(401, 403, 503)
)


@router.get("/me", response_model=UserPublic)
async def read_me(user: CurrentUser) -> User:
    return user


@router.post(
    "",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 409, 413, 503),
)
async def create(data: UserCreate, session: SessionDep, _admin: CurrentSuperuser) -> User:
    return await create_user(session, data)
