"""Keyset pagination, the one way every listing pages (items, jobs, users; API and web UI).

A listing is ordered newest first by `(created_at, id)`, both descending, and an index on
those two columns (after the owner's id, where a listing is one owner's) serves it: a page
after a cursor is a range of that index, `(created_at, id) < (:t, :i)`, read for `limit + 1`
rows, so a page costs the same at any depth and at any table size. No total is computed:
counting one owner's rows reads all of them (77 ms at a million rows), and a window count on
the page itself made every page read every row (half a second). A page says only whether
another one follows (`next`) or precedes it (`prev`).

A cursor is opaque to clients: a direction, a position (created_at, id) and an expiry,
signed with SECRET_KEY together with the listing, the caller's scope and the search it was
issued for. A cursor that was altered, issued to someone else or for another listing or
search, or is older than CURSOR_LIFETIME, is refused (400): nothing else is ever read from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.orm import QueryableAttribute

from app.db.base import utcnow
from app.services.errors import ServiceError

CURSOR_LIFETIME = timedelta(hours=24)
_MAC_BYTES = 16
# direction (1 byte), created_at in microseconds since the epoch, id, expiry in seconds
_LAYOUT = struct.Struct(">Bq16sq")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = TypeVar("Row")
Column = ColumnElement[Any] | QueryableAttribute[Any]


class InvalidCursor(ServiceError):
    """400: the cursor was not issued for this listing, caller and search, or it expired."""


class Direction(StrEnum):
    NEXT = "next"  # older rows: after the cursor's position in the listing's order
    PREV = "prev"  # newer rows: before it


_CODES = {Direction.NEXT: 1, Direction.PREV: 2}
_DIRECTIONS = {code: direction for direction, code in _CODES.items()}


@dataclass(frozen=True)
class Position:
    """Where a row sits in a listing's order."""

    created_at: datetime
    id: uuid.UUID


def position_of(row: Any) -> Position:
    """The position of a row (or ORM object) with `created_at` and `id`."""
    return Position(created_at=row.created_at, id=row.id)


@dataclass(frozen=True)
class Cursor:
    direction: Direction
    position: Position


@dataclass(frozen=True)
class Window:
    """One page's rows, newest first, and the positions of the pages around it."""

    rows: Sequence[Any]
    next: Position | None  # the last row, when older rows follow
    prev: Position | None  # the first row, when newer rows precede


class CursorCodec:
    """Signs and reads the cursors of one listing for one caller and one search."""

    def __init__(
        self,
        secret: str,
        listing: str,
        scope: str,
        search: str | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._key = hashlib.sha256(b"shipshape cursor\0" + secret.encode()).digest()
        self._context = "\0".join((listing, scope, search or "")).encode()
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, self._context + b"\0" + payload, "sha256").digest()[:_MAC_BYTES]

    def encode(self, direction: Direction, position: Position) -> str:
        expires = int((self._clock() + CURSOR_LIFETIME).timestamp())
        micros = (position.created_at - _EPOCH) // timedelta(microseconds=1)
        payload = _LAYOUT.pack(_CODES[direction], micros, position.id.bytes, expires)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def decode(self, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if len(payload) != _LAYOUT.size or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursor(
                "invalid cursor: use the `next` or `prev` of a page of this same listing"
            )
        code, micros, id_bytes, expires = _LAYOUT.unpack(payload)
        if expires < self._clock().timestamp():
            raise InvalidCursor("the cursor has expired: start again from the first page")
        position = Position(_EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=id_bytes))
        return Cursor(_DIRECTIONS[code], position)


def beyond(
    created_at: Column, row_id: Column, direction: Direction | None, bound: tuple[Any, Any]
) -> list[ColumnElement[bool]]:
    """The condition of a page in `direction` from the position `bound` (values or bound
    parameters): none for the first page (`direction` None)."""
    if direction is None:
        return []
    key, at = tuple_(created_at, row_id), tuple_(*bound)
    return [key < at if direction is Direction.NEXT else key > at]


def ordering(created_at: Column, row_id: Column, direction: Direction | None) -> list[Any]:
    """A page's order: newest first, or oldest first for the rows before a position."""
    if direction is Direction.PREV:
        return [created_at.asc(), row_id.asc()]
    return [created_at.desc(), row_id.desc()]


def keyset(
    statement: Select[Any],
    created_at: Column,
    row_id: Column,
    direction: Direction | None,
    bound: tuple[Any, Any] = (None, None),
) -> Select[Any]:
    """The statement ordered for a page in `direction` from the position `bound` (ignored for
    the first page, `direction` None). Rows before the position come oldest first: `window`
    turns them round. The caller adds the limit: a page and one."""
    return statement.where(*beyond(created_at, row_id, direction, bound)).order_by(
        *ordering(created_at, row_id, direction)
    )


def seek(
    statement: Select[Any],
    created_at: Column,
    row_id: Column,
    cursor: Cursor | None,
    limit: int,
) -> Select[Any]:
    """`keyset` for the cursor, limited to a page and one more row (does another follow?)."""
    if cursor is None:
        return keyset(statement, created_at, row_id, None).limit(limit + 1)
    bound = (cursor.position.created_at, cursor.position.id)
    return keyset(statement, created_at, row_id, cursor.direction, bound).limit(limit + 1)


def window(
    rows: Sequence[Row],
    cursor: Cursor | None,
    limit: int,
    position: Callable[[Row], Position],
) -> Window:
    """The page in the rows `keyset` read, and whether pages follow or precede it."""
    more = len(rows) > limit
    page = list(rows[:limit])
    if cursor is not None and cursor.direction is Direction.PREV:
        page.reverse()
        newer, older = more, True
    else:
        newer, older = cursor is not None, more
    if not page:
        return Window(rows=page, next=None, prev=None)
    return Window(
        rows=page,
        next=position(page[-1]) if older else None,
        prev=position(page[0]) if newer else None,
    )


async def paginate(
    read: Callable[[Cursor | None], Awaitable[Sequence[Row]]],
    cursor: Cursor | None,
    limit: int,
    position: Callable[[Row], Position],
) -> Window:
    """One page: `read` runs the listing's `keyset` statement for a cursor. Walking back to
    the newest rows ends on the first page itself, full, rather than on a short one."""
    rows = await read(cursor)
    if cursor is not None and cursor.direction is Direction.PREV and len(rows) <= limit:
        cursor, rows = None, await read(None)
    return window(rows, cursor, limit, position)


def links(codec: CursorCodec, found: Window) -> tuple[str | None, str | None]:
    """The window's (next, prev) cursors."""
    return (
        codec.encode(Direction.NEXT, found.next) if found.next else None,
        codec.encode(Direction.PREV, found.prev) if found.prev else None,
    )


@dataclass(frozen=True)
class Listed(Generic[Row]):
    """A page as a listing answers it: its rows and the cursors of the pages around it."""

    rows: list[Row]
    next: str | None
    prev: str | None


async def listed(
    codec: CursorCodec,
    token: str | None,
    limit: int,
    read: Callable[[Cursor | None], Awaitable[Sequence[Row]]],
    position: Callable[[Row], Position],
) -> Listed[Row]:
    """The page after (or before) the cursor `token` the codec issued, or the first page."""
    found = await paginate(read, codec.decode(token) if token else None, limit, position)
    following, preceding = links(codec, found)
    return Listed(list(found.rows), following, preceding)
