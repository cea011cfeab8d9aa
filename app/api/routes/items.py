"""Items CRUD. Users see and change their own items; superusers see all."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api import API_PREFIX
from app.api.deps import (
    CacheDep,
    CurrentPrincipal,
    CursorQuery,
    ReadSessionDep,
    SessionDep,
    app_state,
    get_current_principal,
)
from app.api.errors import error_responses, validation_error
from app.api.pages import LISTING_RESPONSES, link_header
from app.api.routing import Route, shortcut
from app.db.models import Item
from app.schemas.common import SearchText
from app.schemas.items import ItemCreate, ItemPage, ItemPublic, ItemUpdate
from app.services import items as service
from app.services.access import Principal

# Every route needs a user: 401 without one, 403 for an inactive one.
router = APIRouter(
    prefix=f"{API_PREFIX}/items",
    tags=["items"],
    responses=error_responses(401, 403, 503),
    route_class=Route,
)


async def _page(
    request: Request, principal: Principal, limit: int, cursor: str | None, search: str | None
) -> Response:
    state = app_state(request)  # not dependencies: see app_state
    settings = state.settings
    if limit > settings.items_max_page_size:
        raise validation_error(
            ["query", "limit"],
            f"Input should be less than or equal to {settings.items_max_page_size}",
            limit,
        )
    body, following, preceding = await service.page_json(
        state.db.read_session,
        state.cache,
        settings,
        principal,
        limit=limit,
        cursor=cursor,
        search=search,
    )
    # The body is the page's JSON already (the response_model still documents the schema).
    return Response(
        content=body,
        media_type="application/json",
        headers=link_header(request, following, preceding),
    )


DEFAULT_LIMIT = 20
# What FastAPI reads as the same int and cursor: digits without a sign, spaces or a leading
# zero, and CursorQuery's alphabet and length.
_PLAIN_LIMIT = re.compile(r"[1-9][0-9]{0,5}")
_PLAIN_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,128}")


async def _plain_listing(request: Request) -> Response | None:
    """list_items for a request with nothing but a plain `limit` and `cursor`: the first
    page and the pages after it, the listing's most frequent requests, read without FastAPI
    (app/api/routing.py, `shortcut`). Anything else, a search, a repeated or unknown
    parameter, a value FastAPI would refuse, is None: the route answers it."""
    query = request.query_params
    if not query.keys() <= {"limit", "cursor"} or len(query) != len(query.multi_items()):
        return None
    limit = query.get("limit")
    cursor = query.get("cursor")
    if limit is not None and not _PLAIN_LIMIT.fullmatch(limit):
        return None
    if cursor is not None and not _PLAIN_CURSOR.fullmatch(cursor):
        return None
    principal = await get_current_principal(request)
    return await _page(request, principal, int(limit or DEFAULT_LIMIT), cursor, None)


@router.get("", response_model=ItemPage, responses=LISTING_RESPONSES)
@shortcut(_plain_listing)
async def list_items(
    request: Request,
    principal: CurrentPrincipal,
    limit: Annotated[
        int, Query(ge=1, description="Page size (at most ITEMS_MAX_PAGE_SIZE).")
    ] = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    q: Annotated[
        SearchText | None,
        Query(description="Case-insensitive title search: at least 3 characters, or none."),
    ] = None,
) -> Response:
    """The caller's items (everybody's for a superuser), newest first, a page at a time."""
    return await _page(request, principal, limit, cursor, q or None)


@router.post(
    "",
    response_model=ItemPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413),
)
async def create_item(
    data: ItemCreate, session: SessionDep, cache: CacheDep, principal: CurrentPrincipal
) -> Item:
    return await service.create_item(session, cache, principal, data)


@router.get("/{item_id:uuid}", response_model=ItemPublic, responses=error_responses(404))
async def read_item(
    item_id: uuid.UUID, session: ReadSessionDep, cache: CacheDep, principal: CurrentPrincipal
) -> ItemPublic:
    return await service.read_item(session, cache, principal, item_id)


@router.patch(
    "/{item_id:uuid}", response_model=ItemPublic, responses=error_responses(400, 404, 413)
)
async def update_item(
    item_id: uuid.UUID,
    data: ItemUpdate,
    session: SessionDep,
    cache: CacheDep,
    principal: CurrentPrincipal,
) -> Item:
    return await service.update_item(session, cache, principal, item_id, data)


@router.delete(
    "/{item_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def delete_item(
    item_id: uuid.UUID, session: SessionDep, cache: CacheDep, principal: CurrentPrincipal
) -> Response:
    await service.delete_item(session, cache, principal, item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
