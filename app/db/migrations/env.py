"""Alembic environment: async engine from the service settings."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.core.config import get_settings
from app.db import models  # noqa: F401 - registers the tables on the metadata
from app.db.base import Base
from app.db.migrate import MIGRATION_LOCK_KEY
from app.db.session import Workload, create_engine

config = context.config
target_metadata = Base.metadata


def _skip_empty(_context: object, _revision: object, directives: list[Any]) -> None:
    """`python -m app migration` writes nothing when the models match the database."""
    if directives and directives[0].upgrade_ops.is_empty():
        directives[:] = []


def _do_run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held for the life of this connection: a second replica waits here, then finds
        # the schema already at head and does nothing.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        compare_type=True,
        process_revision_directives=_skip_empty if config.attributes.get("skip_empty") else None,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    settings = config.attributes.get("settings") or get_settings()
    engine = create_engine(settings, Workload.MIGRATIONS)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")

asyncio.run(_run_async())
