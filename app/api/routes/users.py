"""The current user, and user creation by a superuser."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import CurrentSuperuser, CurrentUser, SessionDep
from app.db.models import User
from app.schemas.users import UserCreate, UserPublic
from app.services.users import create_user

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("/me", response_model=UserPublic)
async def read_me(user: CurrentUser) -> User:
    return user


@router.post("", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
async def create(data: UserCreate, session: SessionDep, _admin: CurrentSuperuser) -> User:
    return await create_user(session, data)
