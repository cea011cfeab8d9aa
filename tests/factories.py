"""Users and items written straight to the database: a test's starting state, without a
request, a login or a cache in the way. A test about creating them goes through the API.

The async functions add to a session the test holds; the others open the database of
`settings` for one write.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.security import configure_password_hashing, hash_password
from app.db.base import utcnow
from app.db.models import Item, User
from app.db.session import Database

PASSWORD = "correct-horse-battery"


async def add_user(
    session: AsyncSession,
    username: str | None = None,
    *,
    password: str = PASSWORD,
    is_superuser: bool = False,
    is_active: bool = True,
) -> User:
    """A user (a random name by default), committed; hashed with the process's parameters."""
    username = username or f"u{uuid.uuid4().hex[:12]}"
    user = User(
        username=username,
        email=f"{username}@example.com",
        hashed_password=await hash_password(password),
        is_superuser=is_superuser,
        is_active=is_active,
        created_at=utcnow(),
    )
    session.add(user)
    await session.commit()
    return user


async def add_items(
    session: AsyncSession, owner: uuid.UUID, titles: Iterable[str], *, at: datetime | None = None
) -> list[Item]:
    """An owner's items, created at `at` (now by default), committed."""
    at = at or utcnow()
    items = [Item(title=title, owner_id=owner, created_at=at, updated_at=at) for title in titles]
    session.add_all(items)
    await session.commit()
    return items


def create_user(
    settings: Settings,
    username: str | None = None,
    *,
    password: str = PASSWORD,
    is_superuser: bool = False,
    is_active: bool = True,
) -> uuid.UUID:
    """`add_user` in the database of `settings`, hashed with its parameters; its id."""
    configure_password_hashing(settings)

    async def write(session: AsyncSession) -> uuid.UUID:
        user = await add_user(
            session, username, password=password, is_superuser=is_superuser, is_active=is_active
        )
        return user.id

    return _in_database(settings, write)


def create_items(
    settings: Settings, owner: uuid.UUID, titles: Iterable[str], *, at: datetime | None = None
) -> list[uuid.UUID]:
    """`add_items` in the database of `settings`; their ids."""

    async def write(session: AsyncSession) -> list[uuid.UUID]:
        return [item.id for item in await add_items(session, owner, titles, at=at)]

    return _in_database(settings, write)


T = TypeVar("T")


def _in_database(settings: Settings, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(settings)
        try:
            async with db.session() as session:
                return await write(session)
        finally:
            await db.dispose()

    # In a thread of its own: the caller may be inside an event loop (Playwright's).
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()
