"""Alembic, driven from code: `python -m app migrate` and the readiness check use this.

The migration scripts live in app/db/migrations; the database URL comes from the
settings (never from alembic.ini), so the CLI, the entrypoint and the tests migrate
exactly the database the service will use.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# pg_advisory_lock key: parallel replicas starting at once migrate one at a time.
MIGRATION_LOCK_KEY = 0x5348_4950  # "SHIP"


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest revision, read from the `revision` and `down_revision` assignments of the
    migration files: /ready asks for it, and loading Alembic for that would add about
    5 MB to every server process. (A test holds it equal to Alembic's own answer.)"""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = _assignments(path, ("revision", "down_revision"))
        revisions.add(found["revision"])
        down = found.get("down_revision")
        parents.update([down] if isinstance(down, str) else (down or ()))
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads: {', '.join(sorted(heads))}")
    return heads.pop() if heads else None


def _assignments(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    values[target.id] = ast.literal_eval(node.value)
    return values


# Alembic is imported where it is used: the server never migrates (the entrypoint or the
# CLI does), and does not carry it.
def upgrade(settings: Settings, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    from alembic import command

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
