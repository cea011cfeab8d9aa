"""Request-scoped dependencies: settings, database session, current user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.security import InvalidToken, decode_access_token
from app.db.models import User
from app.db.session import Database
from app.services.cache import ItemCache
from app.services.users import get_user

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")


# Dependencies are `async def` even when they do no I/O: FastAPI runs a plain `def` one in
# a worker thread, a thread hand-off on every request.
async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.sessionmaker() as session:
        yield session


async def get_cache(request: Request) -> ItemCache:
    cache: ItemCache = request.app.state.cache
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CacheDep = Annotated[ItemCache, Depends(get_cache)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="could not validate credentials",
    headers={"WWW-Authenticate": "Bearer"},
)


async def get_current_user(
    session: SessionDep, settings: SettingsDep, token: Annotated[str, Depends(oauth2_scheme)]
) -> User:
    try:
        user_id = decode_access_token(settings, token)
    except InvalidToken:
        raise _UNAUTHORIZED from None
    user = await get_user(session, user_id)
    if user is None:
        raise _UNAUTHORIZED
    if not user.is_active:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="inactive user")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_current_superuser(user: CurrentUser) -> User:
    if not user.is_superuser:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="superuser required")
    return user


CurrentSuperuser = Annotated[User, Depends(get_current_superuser)]
