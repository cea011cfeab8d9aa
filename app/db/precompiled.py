"""SELECTs compiled once and run without SQLAlchemy's per-call work, for the hottest reads.

Every `session.execute(select(...))` builds the statement, computes its cache key, sets up
an execution context and wraps each row in a processed Row; on Postgres that was more than
the query itself on a 50-row page. A `Precompiled` statement is compiled once per dialect,
with named bound parameters, and:

- on Postgres its SQL goes straight to an asyncpg connection, which prepares it once per
  connection (asyncpg's statement cache) and returns its own Records, already typed (UUIDs,
  aware datetimes). A session with no transaction open (a read session, see
  `app.api.deps.get_read_session`) lends no connection of its own: one is taken from the
  engine's pool for this one statement, which is all an AUTOCOMMIT read would do, without
  the session's transaction bookkeeping. A session in a transaction runs it on its own
  connection, so the statement sees that transaction's writes;
- on SQLite the same statement runs through the session, where SQLAlchemy's column types
  turn stored text into the same Python values.

Either way the rows are sequences in the order of the selected columns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Select, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

Rows = Sequence[Sequence[Any]]


class Precompiled:
    """`planned_each_time`: on Postgres the statement is prepared anew for each run, so that
    it is always planned for its values. A statement the driver caches is planned for any
    values after its fifth run (a generic plan), and for a title search that plan walks the
    owner's index and filters: fine for a common word, every row for a rare one (85 ms at
    100,000 rows, against 2 ms through the trigram index, which only a plan that sees the
    pattern picks). The price is one more round trip."""

    def __init__(self, statement: Select[Any], *, planned_each_time: bool = False) -> None:
        self.statement = statement
        self.planned_each_time = planned_each_time
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        """The statement's SQL for the dialect and the names of its parameters in order."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            query = self.statement.compile(dialect=dialect)
            compiled = (query.string, tuple(query.positiontup or ()))
            self._compiled[dialect.name] = compiled
        return compiled

    async def all(self, session: AsyncSession, **params: Any) -> Rows:
        bind = session.sync_session.get_bind()
        if bind.dialect.name != "postgresql":
            processed: Rows = (await session.execute(self.statement, params)).all()
            return processed
        sql, names = self.sql(bind.dialect)
        args = [params[name] for name in names]
        if session.in_transaction() or not isinstance(bind, Engine):
            connection = await session.connection()
            driver = (await connection.get_raw_connection()).driver_connection
            return await _fetch(session, driver, sql, args, fresh=self.planned_each_time)
        pooled = await greenlet_spawn(_checkout, bind)
        try:
            # A connection that failed may be one the database closed (after a restart): it
            # is not handed out again.
            return await _fetch(
                session, pooled.driver_connection, sql, args, lost=pooled.invalidate,
                fresh=self.planned_each_time,
            )  # fmt: skip
        finally:
            await greenlet_spawn(pooled.close)


def _checkout(engine: Engine) -> Any:
    """A pooled connection, with a failure to connect raised as SQLAlchemy raises it for a
    session (sqlalchemy.exc.OperationalError, which the API answers 503), not as the
    driver's own exception type, which no handler knows (a 500)."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        return engine.pool.connect()
    except dbapi.Error as error:
        raise exc.DBAPIError.instance(
            None, None, error, dbapi.Error, dialect=engine.dialect
        ) from error


# The statement timeout (the API answers 503) and a request that is gone: nothing to translate.
_UNTRANSLATED = (TimeoutError, asyncio.CancelledError)


async def _fetch(
    session: AsyncSession,
    driver: Any,
    sql: str,
    args: list[Any],
    lost: Callable[[], None] | None = None,
    *,
    fresh: bool = False,
) -> Rows:
    """The rows from the driver (through a statement prepared for this run alone when
    `fresh`); after any other error, `lost` (in SQLAlchemy's greenlet), then the statement
    through SQLAlchemy."""
    try:
        if fresh:
            rows: Rows = await (await driver.prepare(sql)).fetch(*args)
        else:
            rows = await driver.fetch(sql, *args)
    except _UNTRANSLATED:
        raise
    except Exception:
        if lost is not None:
            await greenlet_spawn(lost)
        return await _through_sqlalchemy(session, sql, args)
    return rows


async def _through_sqlalchemy(session: AsyncSession, sql: str, args: list[Any]) -> Rows:
    """After a driver error, the statement once more through SQLAlchemy: it raises the error
    as its own exception type, and a connection the database closed makes the pool replace
    its connections (the API answers 503, and a read is run again on a fresh one). A read
    runs twice without harm."""
    connection = await session.connection()
    rows: Rows = (await connection.exec_driver_sql(sql, tuple(args))).all()
    return rows
