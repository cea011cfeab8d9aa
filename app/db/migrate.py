"""Alembic, driven from code: `python -m app migrate` and the readiness check use this.

The migration scripts live in app/db/migrations; the database URL comes from the
settings (never from alembic.ini), so the CLI, the entrypoint and the tests migrate
exactly the database the service will use.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# pg_advisory_lock key: parallel replicas starting at once migrate one at a time.
MIGRATION_LOCK_KEY = 0x5348_4950  # "SHIP"


def alembic_config(settings: Settings) -> Config:
    config = _script_only_config()
    config.attributes["settings"] = settings
    return config


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    script = ScriptDirectory.from_config(_script_only_config())
    return script.get_current_head()


def _script_only_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


async def current_revision(connection: AsyncConnection) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    try:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
    except (OperationalError, ProgrammingError) as exc:
        if _is_missing_table(exc):
            return None
        raise
    return result.scalar_one_or_none()


def _is_missing_table(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower()
    return "no such table" in message or "does not exist" in message
