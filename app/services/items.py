"""Items: owner-scoped CRUD with pagination and title search."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Item
from app.schemas.items import ItemCreate, ItemUpdate
from app.services.access import Actor, get_owned

# The listing reads plain rows through the table (no ORM objects or ORM compilation:
# nothing on that path is changed or lazily loaded) and the total in the same round
# trip, as a window count.
_items = Item.__table__.c
_LISTED = (_items.id, _items.title, _items.description, _items.owner_id, _items.created_at,
           _items.updated_at, func.count().over().label("total"))  # fmt: skip


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]  # rows with the ItemPublic fields as attributes
    total: int


def _visible_to(user: Actor) -> list[ColumnElement[bool]]:
    return [] if user.is_superuser else [_items.owner_id == user.id]


async def list_items(
    session: AsyncSession, user: Actor, *, limit: int, offset: int, search: str | None = None
) -> Page:
    filters = _visible_to(user)
    if search:
        filters.append(_items.title.icontains(search, autoescape=True))
    query = (
        select(*_LISTED)
        .where(*filters)
        .order_by(_items.created_at.desc(), _items.id)
        .limit(limit)
        .offset(offset)
    )
    rows = (await session.execute(query)).all()
    if rows:
        total = rows[0].total
    elif offset == 0:
        total = 0
    else:  # past the end: no row carries the total, so count on its own
        total = await session.scalar(
            select(func.count()).select_from(Item.__table__).where(*filters)
        )
    return Page(items=rows, total=total or 0)


async def get_item(session: AsyncSession, user: Actor, item_id: uuid.UUID) -> Item:
    return await get_owned(session, user, Item, item_id, "item")


async def create_item(session: AsyncSession, user: Actor, data: ItemCreate) -> Item:
    now = utcnow()
    item = Item(
        title=data.title,
        description=data.description,
        owner_id=user.id,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    await session.commit()
    return item


async def update_item(
    session: AsyncSession, user: Actor, item_id: uuid.UUID, data: ItemUpdate
) -> Item:
    item = await get_item(session, user, item_id)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(item, field, value)
    item.updated_at = utcnow()
    await session.commit()
    return item


async def delete_item(session: AsyncSession, user: Actor, item_id: uuid.UUID) -> uuid.UUID:
    """Delete the item; returns its owner's id (whose cached pages are now stale)."""
    item = await get_item(session, user, item_id)
    owner_id = item.owner_id
    await session.delete(item)
    await session.commit()
    return owner_id
