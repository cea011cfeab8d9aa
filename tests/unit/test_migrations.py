"""Migrations on a fresh SQLite file: up, down, up, and in step with the models."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.config import Settings, load_settings
from app.db.base import Base
from app.db.migrate import downgrade, head_revision, upgrade
from app.db.session import create_engine


def _tables(settings: Settings) -> set[str]:
    async def read() -> set[str]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _diff(settings: Settings) -> list:
    async def read() -> list:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_up_down_up_on_a_fresh_file(tmp_path: Path) -> None:
    settings = load_settings(
        environment="test", database_url=f"sqlite+aiosqlite:///{tmp_path}/new/app.db"
    )
    upgrade(settings)
    assert _tables(settings) == {"alembic_version", "users", "items", "jobs"}
    downgrade(settings, "base")
    assert _tables(settings) == {"alembic_version"}
    upgrade(settings)
    assert {"users", "items"} <= _tables(settings)


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    """A model change without a migration fails here, not in production."""
    settings = load_settings(
        environment="test", database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db"
    )
    upgrade(settings)
    assert _diff(settings) == []


def test_single_head() -> None:
    assert head_revision() == "0002"
