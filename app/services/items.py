"""Items: owner-scoped CRUD with pagination and title search, and their read cache.

The routes call these and only translate HTTP: who may see what (access), what is cached
and when it goes stale (cache), and the queries all live here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json
from sqlalchemy import BindParameter, ColumnElement, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Item
from app.db.precompiled import Precompiled
from app.schemas.items import ItemCreate, ItemPublic, ItemUpdate
from app.services.access import Principal, check_owner, get_owned
from app.services.cache import ReadCache

# The listing reads plain rows through the table (no ORM objects: nothing on that path is
# changed or lazily loaded) and the total in the same round trip, as a window count. Its
# four shapes (own items or all, with or without a title search) are compiled once.
_items = Item.__table__.c
_LISTED = (_items.id, _items.title, _items.description, _items.owner_id, _items.created_at,
           _items.updated_at, func.count().over().label("total"))  # fmt: skip
_LIKE_ESCAPE = "/"


def _filters(*, owner: Any, pattern: Any) -> list[ColumnElement[bool]]:
    """Whose items (None: everyone's) and a title search (None: any title); the pattern is
    escaped by _contains(), so that a search for "%" finds a "%"."""
    filters = []
    if owner is not None:
        filters.append(_items.owner_id == owner)
    if pattern is not None:
        filters.append(_items.title.icontains(pattern, escape=_LIKE_ESCAPE))
    return filters


def _listing(*, own: bool, search: bool) -> Precompiled:
    owner: BindParameter[Any] | None = bindparam("owner_id") if own else None
    pattern: BindParameter[Any] | None = bindparam("pattern") if search else None
    return Precompiled(
        select(*_LISTED)
        .where(*_filters(owner=owner, pattern=pattern))
        .order_by(_items.created_at.desc(), _items.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


_LISTINGS = {
    (own, search): _listing(own=own, search=search)
    for own in (False, True)
    for search in (False, True)
}


def _contains(text: str) -> str:
    """The search text as a LIKE operand that matches it literally (what SQLAlchemy's
    autoescape does for a literal value)."""
    escape = _LIKE_ESCAPE
    return text.replace(escape, escape * 2).replace("%", escape + "%").replace("_", escape + "_")


def _public(row: Sequence[Any]) -> dict[str, Any]:
    """A listed row as ItemPublic's JSON object, ready to serialize. The row is unpacked,
    not read field by field (2.4 times faster), and the ids become str here: asyncpg
    returns its own UUID subclass, which pydantic's JSON writer serializes 3.7 times slower
    than a str. A test keeps this equal to what ItemPage writes."""
    item_id, title, description, owner_id, created_at, updated_at, _total = row
    return {
        "id": str(item_id),
        "title": title,
        "description": description,
        "owner_id": str(owner_id),
        "created_at": created_at,
        "updated_at": updated_at,
    }


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]  # rows of _LISTED: the ItemPublic fields in order, then the total
    total: int


async def list_items(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int,
    offset: int,
    search: str | None = None,
) -> Page:
    owner = None if principal.is_superuser else principal.id
    pattern = _contains(search) if search else None
    listing = _LISTINGS[owner is not None, pattern is not None]
    params = {"owner_id": owner, "pattern": pattern, "limit": limit, "offset": offset}
    rows = await listing.all(session, **params)
    if rows:
        total = rows[0][-1]
    elif offset == 0:
        total = 0
    else:  # past the end: no row carries the total, so count on its own
        filters = _filters(owner=owner, pattern=pattern)
        total = await session.scalar(
            select(func.count()).select_from(Item.__table__).where(*filters)
        )
    return Page(items=rows, total=total or 0)


async def page_json(
    session: AsyncSession,
    cache: ReadCache,
    principal: Principal,
    *,
    limit: int,
    offset: int,
    search: str | None = None,
) -> bytes:
    """One page of the listing as the response body. The first page of an unfiltered listing
    is served from the cache when it is there, as the bytes stored on the miss."""
    first_page = offset == 0 and not search
    scope = "all" if principal.is_superuser else str(principal.id)
    if first_page and (cached := await cache.get_first_page(scope, limit)) is not None:
        return cached
    page = await list_items(session, principal, limit=limit, offset=offset, search=search)
    # Rows from the database are trusted (they were validated on the way in): serialized
    # once by pydantic's core, without a validation pass over them. The JSON is the same as
    # ItemPage's (a test compares them).
    items = [_public(row) for row in page.items]
    body = to_json({"items": items, "total": page.total, "limit": limit, "offset": offset})
    if first_page:
        await cache.set_first_page(scope, limit, body)
    return body


async def get_item(session: AsyncSession, principal: Principal, item_id: uuid.UUID) -> Item:
    return await get_owned(session, principal, Item, item_id, "item")


async def read_item(
    session: AsyncSession, cache: ReadCache, principal: Principal, item_id: uuid.UUID
) -> ItemPublic:
    """The item from the cache when it is there (its owner checked all the same), else from
    the database, then cached."""
    cached = await cache.get_item(item_id)
    if cached is not None:
        item = ItemPublic.model_validate(cached)
        check_owner(principal, item.owner_id, "item")
        return item
    item = ItemPublic.model_validate(await get_item(session, principal, item_id))
    await cache.set_item(item_id, item.model_dump(mode="json"))
    return item


async def create_item(
    session: AsyncSession, cache: ReadCache, principal: Principal, data: ItemCreate
) -> Item:
    now = utcnow()
    item = Item(
        title=data.title,
        description=data.description,
        owner_id=principal.id,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    await session.commit()
    await cache.invalidate(item.owner_id)
    return item


async def update_item(
    session: AsyncSession,
    cache: ReadCache,
    principal: Principal,
    item_id: uuid.UUID,
    data: ItemUpdate,
) -> Item:
    item = await get_item(session, principal, item_id)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(item, field, value)
    item.updated_at = utcnow()
    await session.commit()
    await cache.invalidate(item.owner_id, item.id)
    return item


async def delete_item(
    session: AsyncSession, cache: ReadCache, principal: Principal, item_id: uuid.UUID
) -> None:
    item = await get_item(session, principal, item_id)
    owner_id = item.owner_id
    await session.delete(item)
    await session.commit()
    await cache.invalidate(owner_id, item_id)
