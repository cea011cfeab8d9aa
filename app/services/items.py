"""Items: owner-scoped CRUD with pagination and title search."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Item, User
from app.schemas.items import ItemCreate, ItemUpdate
from app.services.access import get_owned


@dataclass(frozen=True)
class Page:
    items: list[Item]
    total: int


def _visible_to(user: User, query: Select[Item]) -> Select[Item]:
    return query if user.is_superuser else query.where(Item.owner_id == user.id)


async def list_items(
    session: AsyncSession, user: User, *, limit: int, offset: int, search: str | None = None
) -> Page:
    query = _visible_to(user, select(Item))
    if search:
        query = query.where(Item.title.icontains(search, autoescape=True))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Item.created_at.desc(), Item.id).limit(limit).offset(offset)
    )
    return Page(items=list(rows), total=total or 0)


async def get_item(session: AsyncSession, user: User, item_id: uuid.UUID) -> Item:
    return await get_owned(session, user, Item, item_id, "item")


async def create_item(session: AsyncSession, user: User, data: ItemCreate) -> Item:
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
    session: AsyncSession, user: User, item_id: uuid.UUID, data: ItemUpdate
) -> Item:
    item = await get_item(session, user, item_id)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(item, field, value)
    item.updated_at = utcnow()
    await session.commit()
    return item


async def delete_item(session: AsyncSession, user: User, item_id: uuid.UUID) -> uuid.UUID:
    """Delete the item; returns its owner's id (whose cached pages are now stale)."""
    item = await get_item(session, user, item_id)
    owner_id = item.owner_id
    await session.delete(item)
    await session.commit()
    return owner_id
