"""Engine and session factory, built from the settings for SQLite or Postgres alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from app.core import metrics
from app.core.config import ConfigError, Settings
from app.core.logging import describe_error


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.sqlalchemy_url
    kwargs: dict[str, Any] = {"echo": settings.db_echo}
    if settings.is_sqlite:
        path = sqlite_path(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"DATABASE_URL: cannot create the directory {path.parent}: {exc.strerror}"
                ) from None
        # A fresh connection per checkout: SQLite connections are cheap, and /ready then
        # sees the real state of the file instead of a connection opened long ago.
        kwargs.update(poolclass=NullPool, connect_args={"timeout": 15})
    else:
        kwargs.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,  # survive a database restart without serving errors
            pool_recycle=1800,
            connect_args={"timeout": 10, "command_timeout": 30},
        )
    engine = create_async_engine(url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _count_pool_usage(engine: AsyncEngine) -> None:
    """Feed the connections-in-use gauge of /metrics from the pool's own events."""
    event.listen(engine.sync_engine, "checkout", lambda *_: metrics.POOL_CHECKED_OUT.inc())
    event.listen(engine.sync_engine, "checkin", lambda *_: metrics.POOL_CHECKED_OUT.dec())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


class Database:
    """One engine and session factory per process."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has no pool to report (one connection per checkout).
        self._pool_size = 0 if settings.is_sqlite else settings.db_pool_size
        if self._pool_size:
            metrics.POOL_SIZE.inc(self._pool_size)
            _count_pool_usage(self.engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        metrics.POOL_SIZE.dec(self._pool_size)


async def wait_until_reachable(
    db: Database,
    budget_seconds: float,
    progress: Callable[[float, str], None],
    interval: float = 1.0,
) -> tuple[bool, float, str]:
    """Poll `SELECT 1` until it answers or the budget is spent: (ok, seconds waited, error)."""
    started = time.monotonic()
    deadline = started + budget_seconds
    last_report = 0.0
    error = ""
    while True:
        try:
            async with db.engine.connect() as connection:
                await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=5)
            return True, time.monotonic() - started, ""
        except Exception as exc:  # every failure is "not yet"; the last one is reported
            error = describe_error(exc, limit=200)
        now = time.monotonic()
        if now >= deadline:
            return False, now - started, error
        if now - last_report >= 5:
            progress(deadline - now, error)
            last_report = now
        await asyncio.sleep(min(interval, max(deadline - now, 0)))  # retry pacing, bounded
