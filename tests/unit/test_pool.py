"""The database pool hands connections out in the order they were asked for."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from sqlalchemy import exc
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn

from app.db.session import FairQueuePool


class FakeConnection:
    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


async def order_of_service(pool_class: type[AsyncAdaptedQueuePool]) -> list[str]:
    """B waits for the only connection; D asks after B, but is already scheduled to run
    when the connection comes back: who gets it first?"""
    pool = pool_class(cast(Any, FakeConnection), pool_size=1, max_overflow=0, timeout=5)
    holder = await greenlet_spawn(pool.connect)
    served: list[str] = []

    async def user(name: str) -> None:
        connection: Any = await greenlet_spawn(pool.connect)
        served.append(name)
        await greenlet_spawn(connection.close)

    b = asyncio.create_task(user("B"))
    for _ in range(100):  # let B reach the point where it waits (bounded)
        await asyncio.sleep(0)
        if _waiting(pool):
            break
    assert _waiting(pool), "B never waited"
    d = asyncio.create_task(user("D"))
    await greenlet_spawn(holder.close)
    await asyncio.wait_for(asyncio.gather(b, d), timeout=10)
    return served


def _waiting(pool: AsyncAdaptedQueuePool) -> bool:
    turns = getattr(pool, "_turns", None)
    if turns is not None:
        return bool(turns._waiters)
    return bool(pool._pool._queue._getters)  # type: ignore[attr-defined]


def test_the_first_to_wait_is_served_first() -> None:
    assert asyncio.run(order_of_service(FairQueuePool)) == ["B", "D"]


def test_the_stock_pool_lets_a_later_request_overtake() -> None:
    # Why FairQueuePool exists; if SQLAlchemy's pool becomes fair, this test says so.
    assert asyncio.run(order_of_service(AsyncAdaptedQueuePool)) == ["D", "B"]


def test_a_checkout_that_waits_too_long_fails_and_its_turn_is_not_lost() -> None:
    async def scenario() -> None:
        pool = FairQueuePool(FakeConnection, pool_size=1, max_overflow=0, timeout=0.05)
        holder = await greenlet_spawn(pool.connect)
        with pytest.raises(exc.TimeoutError, match="QueuePool limit of size 1"):
            await greenlet_spawn(pool.connect)
        await greenlet_spawn(holder.close)
        for _ in range(3):  # the one connection is still handed out, again and again
            connection: Any = await greenlet_spawn(pool.connect)
            await greenlet_spawn(connection.close)

    asyncio.run(scenario())
