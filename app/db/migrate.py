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
    # 20261125_0004_add_a_field.py: the date, the sequential id, the message.
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["settings"] = settings
    return config


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest revision, read from the `revision` and `down_revision` assignments of the
    migration files: /ready asks for it, and loading Alembic for that would add about
    5 MB to every server process. (A test holds it equal to Alembic's own answer.)"""
    revisions: set[str] = set()
    parents: set[str] = set()
    for found in _migration_files():
        revisions.add(found["revision"])
        down = found.get("down_revision")
        parents.update([down] if isinstance(down, str) else (down or ()))
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads: {', '.join(sorted(heads))}")
    return heads.pop() if heads else None


def _migration_files() -> list[dict[str, Any]]:
    """The `revision` and `down_revision` of every migration file, read without Alembic."""
    return [
        _assignments(path, ("revision", "down_revision"))
        for path in (MIGRATIONS_DIR / "versions").glob("*.py")
    ]


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


def next_revision_id() -> str:
    """Revisions are numbered 0001, 0002, ...: the order is readable in the file names."""
    numbers = [
        int(found["revision"])
        for found in _migration_files()
        if str(found.get("revision", "")).isdigit()
    ]
    return f"{max(numbers, default=0) + 1:04d}"


def new_revision(settings: Settings, message: str) -> Path | None:
    """Write the migration from the models' differences with the database (upgraded to head
    first: Alembic compares against a database at head), formatted with ruff when it is
    installed. None when the models match the database: no empty migration is written."""
    import subprocess
    import sys

    from alembic import command

    upgrade(settings)
    config = alembic_config(settings)
    config.attributes["skip_empty"] = True  # read by env.py
    script = command.revision(config, message=message, autogenerate=True, rev_id=next_revision_id())
    if script is None or isinstance(script, list):
        return None
    path = Path(script.path)
    subprocess.run(  # noqa: S603 - this interpreter, a fixed argument list
        [sys.executable, "-m", "ruff", "format", "--quiet", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    return path


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
