"""Migrations on a fresh SQLite file: up, down, up, and in step with the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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


def _diff(settings: Settings) -> list[Any]:
    async def read() -> list[Any]:
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
    assert _tables(settings) == {
        "alembic_version",
        "users",
        "items",
        "jobs",
        "browser_sessions",
        "password_resets",
    }
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
    """One line of history; the head found without Alembic is Alembic's (next test)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from app.db.migrate import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_a_new_migration_is_numbered_formatted_and_never_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m app migration` (`make migration NAME=...`): the next sequential id after the
    head, the message in the file name, formatted; nothing written when nothing changed.
    The faults: random hex ids, an unformatted file that failed `make lint`, and
    "Target database is not up to date" on a database behind head."""
    import shutil

    from sqlalchemy import Column, Integer, Table

    from app.db import migrate

    scratch = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scratch)
    head = head_revision()
    assert head is not None
    settings = load_settings(
        environment="test", database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db"
    )  # a database never migrated: behind head
    assert migrate.new_revision(settings, "nothing") is None
    assert sorted(p.name for p in (scratch / "versions").glob("*nothing*")) == []

    table = Table("ratings", Base.metadata, Column("id", Integer, primary_key=True))
    try:
        path = migrate.new_revision(settings, "add ratings")
    finally:
        Base.metadata.remove(table)
    assert path is not None
    expected = f"{int(head) + 1:04d}"
    assert path.name.endswith(f"_{expected}_add_ratings.py")
    text = path.read_text()
    assert f'revision: str = "{expected}"' in text
    assert f'down_revision: str | None = "{head}"' in text
    assert 'op.create_table(\n        "ratings",' in text
    check = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", str(path)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_head_revision_matches_alembic() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from app.db.migrate import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_server_process_does_not_load_migration_or_worker_libraries(db_path: Path) -> None:
    # Each is several MB per server process; they load where they are used (CLI, worker).
    # A bare ASGI call (the test client itself would import httpx).
    code = """
import asyncio, sys
from app.main import create_app

async def ready_status():
    app, sent = create_app(), []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": "/ready", "headers": [],
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("test", 80),
             "scheme": "http", "root_path": "", "http_version": "1.1"}
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    return sent[0]["status"]

assert asyncio.run(ready_status()) == 200
print(sorted(m for m in ("alembic", "celery", "httpx", "httpcore") if m in sys.modules))
"""
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{db_path}"}  # migrated
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
