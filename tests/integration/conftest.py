"""Integration tier: the service against real Postgres and Redis containers.

One Postgres and one Redis container per session (published on 127.0.0.1, random
ports). A template database is migrated once; each test gets a fresh copy of it
(CREATE DATABASE ... TEMPLATE), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from app.core.config import Settings, load_settings
from app.db.migrate import upgrade
from tests.docker_utils import Container, docker, running, wait_until
from tests.helpers import make_settings

POSTGRES_PASSWORD = secrets.token_urlsafe(16)
TEMPLATE_DB = "shipshape_template"


def postgres(
    port: int, password: str, sql: str, *, value: bool = False, timeout: float = 10
) -> object:
    """Run `sql` as the postgres superuser on 127.0.0.1:`port`; with `value`, its first value."""

    async def run() -> object:
        connection = await asyncpg.connect(
            host="127.0.0.1", port=port, user="postgres", password=password,
            database="postgres", timeout=timeout,
        )  # fmt: skip
        try:
            return await (connection.fetchval(sql) if value else connection.execute(sql))
        finally:
            await connection.close()

    return asyncio.run(run())


@dataclass
class Services:
    postgres: Container
    redis: Container

    @property
    def pg_port(self) -> int:
        return self.postgres.port(5432)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port(6379)}/0"

    def database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres:{POSTGRES_PASSWORD}@127.0.0.1:{self.pg_port}/{name}"

    def admin(self, sql: str) -> None:
        postgres(self.pg_port, POSTGRES_PASSWORD, sql)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    options = ("--publish", "127.0.0.1::5432", "--tmpfs", "/var/lib/postgresql/data")
    with (
        running(
            "postgres:15-alpine",
            env={"POSTGRES_PASSWORD": POSTGRES_PASSWORD},
            options=options,
            publish=False,
        ) as pg,
        running("redis:7-alpine", options=("--publish", "127.0.0.1::6379"), publish=False) as redis,
    ):
        found = Services(pg, redis)
        wait_until(
            lambda: postgres(found.pg_port, POSTGRES_PASSWORD, "SELECT 1", value=True, timeout=2) == 1,
            60, "Postgres to accept connections",
        )  # fmt: skip
        found.admin(f"CREATE DATABASE {TEMPLATE_DB}")
        upgrade(load_settings(environment="test", database_url=found.database_url(TEMPLATE_DB)))
        yield found


@pytest.fixture
def database(services: Services) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    services.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    try:
        yield services.database_url(name)
    finally:
        services.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(database: str, tmp_path: Path) -> Settings:
    """Overrides the fast tier's SQLite settings: the same tests, on Postgres."""
    return make_settings(tmp_path, database)


@pytest.fixture
def redis_settings(database: str, services: Services, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, database, redis_url=services.redis_url)


def pause(container: Container) -> None:
    docker("pause", container.id)


def unpause(container: Container) -> None:
    docker("unpause", container.id)
