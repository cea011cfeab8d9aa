"""The one access rule of the example domain: owners and superusers only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.services.errors import Forbidden, NotFound


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the part of a user that authorization needs, small enough to cache
    between requests. Services take this, never the ORM `User`."""

    id: uuid.UUID
    is_active: bool
    is_superuser: bool
    # An access token issued under another version is refused (app/services/users.py).
    credential_version: int


class Owned(Protocol):
    owner_id: uuid.UUID


T = TypeVar("T", bound=Owned)


def check_owner(principal: Principal, owner_id: uuid.UUID, noun: str) -> None:
    """403 unless the principal owns the object or is a superuser."""
    if not principal.is_superuser and owner_id != principal.id:
        raise Forbidden(f"not enough permissions for this {noun}")


async def get_owned(
    session: AsyncSession, principal: Principal, model: type[T], object_id: uuid.UUID, noun: str
) -> T:
    """The object, if it exists (404) and the principal owns it or is a superuser (403)."""
    found = await session.get(model, object_id)
    if found is None:
        raise NotFound(f"{noun} not found")
    check_owner(principal, found.owner_id, noun)
    return found
