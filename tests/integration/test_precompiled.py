"""Precompiled reads on Postgres: the driver's rows equal SQLAlchemy's, a transaction sees its
own writes, and connections the database closed are replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.core.config import Settings
from app.db.base import utcnow
from app.db.models import Item
from app.db.precompiled import Precompiled
from app.db.session import Database
from tests.factories import add_items, add_user
from tests.integration.conftest import Services

_items = Item.__table__.c
MINE = Precompiled(
    select(_items.id, _items.title, _items.owner_id, _items.created_at)
    .where(_items.owner_id == bindparam("owner_id"))
    .order_by(_items.title)
)


def _with_database(settings: Settings, scenario: Callable[[Database], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        db = Database(settings)
        try:
            return await scenario(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


async def _owner_with_items(db: Database, *titles: str) -> uuid.UUID:
    async with db.sessionmaker() as session:
        owner = await add_user(session)
        await add_items(session, owner.id, titles)
        return owner.id


def test_the_driver_rows_are_the_rows_sqlalchemy_reads(settings: Settings) -> None:
    async def scenario(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        owner = await _owner_with_items(db, "b", "a")
        async with db.read_sessionmaker() as session:
            fast = [tuple(row) for row in await MINE.all(session, owner_id=owner)]
            slow = [
                tuple(row) for row in await session.execute(MINE.statement, {"owner_id": owner})
            ]
        return fast, slow

    fast, slow = _with_database(settings, scenario)
    assert [row[1] for row in fast] == ["a", "b"]
    assert fast == slow  # same UUIDs, same aware datetimes
    assert all(row[3].utcoffset().total_seconds() == 0 for row in fast)


def test_a_session_in_a_transaction_reads_its_own_writes(settings: Settings) -> None:
    async def scenario(db: Database) -> tuple[list[str], list[str]]:
        owner = await _owner_with_items(db, "committed")
        async with db.sessionmaker() as writer, db.read_sessionmaker() as reader:
            now = utcnow()
            writer.add(Item(title="pending", owner_id=owner, created_at=now, updated_at=now))
            await writer.flush()
            inside = [row[1] for row in await MINE.all(writer, owner_id=owner)]
            outside = [row[1] for row in await MINE.all(reader, owner_id=owner)]
            await writer.rollback()
        return inside, outside

    inside, outside = _with_database(settings, scenario)
    assert inside == ["committed", "pending"]
    assert outside == ["committed"]


def test_dead_connections_are_replaced_and_reported_as_sqlalchemy_reports_them(
    settings: Settings, services: Services
) -> None:
    """After a restart every pooled connection is dead. The read that finds them raises what
    SQLAlchemy raises for a lost connection (the API answers 503 and runs a read again),
    the pool replaces its connections, and the next reads get their rows."""
    database = make_url(settings.database_url).database

    async def scenario(db: Database) -> list[object]:
        owner = await _owner_with_items(db, "kept")
        async with db.read_sessionmaker() as first, db.read_sessionmaker() as second:
            # two connections in the pool, both about to die
            await asyncio.gather(MINE.all(first, owner_id=owner), MINE.all(second, owner_id=owner))
        await asyncio.to_thread(
            services.admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        )
        answers: list[object] = []
        for _ in range(3):
            async with db.read_sessionmaker() as session:
                try:
                    answers.append([row[1] for row in await MINE.all(session, owner_id=owner)])
                except DBAPIError as exc:
                    answers.append(f"lost, invalidated: {exc.connection_invalidated}")
        return answers

    assert _with_database(settings, scenario) == [
        "lost, invalidated: True",
        ["kept"],
        ["kept"],
    ]
