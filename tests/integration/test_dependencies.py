"""Postgres- and Redis-specific behaviour: readiness, outages, parallel migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.db.migrate import head_revision
from app.main import create_app
from app.services.users import ensure_superuser_standalone
from tests.docker_utils import ROOT, wait_until
from tests.integration.conftest import Services, pause, unpause


def test_ready_checks_postgres_and_redis(redis_settings: Settings) -> None:
    with TestClient(create_app(redis_settings)) as client:
        response = client.get("/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"
    assert checks["migrations"]["revision"] == head_revision()


def test_redis_outage_is_503_then_recovers(redis_settings: Settings, services: Services) -> None:
    settings = redis_settings.model_copy(update={"ready_timeout_seconds": 1.0})
    with TestClient(create_app(settings)) as client:
        pause(services.redis)
        try:
            response = client.get("/ready")
            assert response.status_code == 503
            assert response.json()["checks"]["redis"]["error"].startswith(("timed out", "Timeout"))
            assert response.json()["checks"]["database"]["status"] == "ok"
            assert client.get("/live").status_code == 200
        finally:
            unpause(services.redis)
        assert client.get("/ready").status_code == 200


def test_ready_is_not_503_when_redis_dropped_the_pooled_connections(
    redis_settings: Settings, services: Services
) -> None:
    """The fault: right after a Redis restart, the first /ready of every process answered 503
    from its pooled connection, dead since the restart, although Redis was back."""
    with TestClient(create_app(redis_settings)) as client:
        assert client.get("/ready").status_code == 200  # a pooled connection now exists
        killed = subprocess.run(
            ["docker", "exec", services.redis.id, "redis-cli", "CLIENT", "KILL", "TYPE", "normal"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert int(killed.stdout.strip() or 0) >= 1, killed.stdout + killed.stderr
        response = client.get("/ready")
        assert response.status_code == 200, response.json()


def test_postgres_outage_is_503_then_recovers_without_a_restart(
    settings: Settings, services: Services
) -> None:
    fast = settings.model_copy(update={"ready_timeout_seconds": 1.0})
    with TestClient(create_app(fast)) as client:
        assert client.get("/ready").status_code == 200
        pause(services.postgres)
        try:
            response = client.get("/ready")
            assert response.status_code == 503
            assert response.json()["checks"]["database"]["status"] == "error"
        finally:
            unpause(services.postgres)
        assert client.get("/ready").status_code == 200


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "test"}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_parallel_replicas_migrate_once_under_the_advisory_lock(services: Services) -> None:
    services.admin("CREATE DATABASE parallel_migrations")
    url = services.database_url("parallel_migrations")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: _cli(url, "migrate"), range(4)))
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        ran = sum("Running upgrade  -> 0001" in (r.stdout + r.stderr) for r in results)
        assert ran == 1  # the others waited on the lock, then found the schema at head

        with ThreadPoolExecutor(max_workers=3) as pool:
            created = list(pool.map(lambda _: _cli(url, "create-superuser"), range(3)))
        assert [r.returncode for r in created] == [0, 0, 0], [r.stderr for r in created]
        assert sum("created" in r.stdout and "already" not in r.stdout for r in created) == 1
    finally:
        services.admin("DROP DATABASE IF EXISTS parallel_migrations WITH (FORCE)")


@pytest.mark.parametrize(
    ("url_of", "said"),
    [
        (
            lambda url: url.replace("postgres:", "postgres:wrong", 1),
            "password authentication failed",
        ),
        (lambda url: url.rsplit("/", 1)[0] + "/absent", 'database "absent" does not exist'),
    ],
    ids=["wrong password", "absent database"],
)
def test_a_database_that_refuses_the_settings_ends_the_wait_at_once(
    services: Services, url_of: Callable[[str], str], said: str
) -> None:
    """The fault: a wrong password or database name was retried as if the server were not up
    yet, so a start with a volume initialised with another password failed only after
    DB_WAIT_TIMEOUT (60 s). The server's answer cannot change by waiting."""
    url = url_of(services.database_url("postgres"))
    started = time.monotonic()
    result = _cli(url, "wait-for-db", "--timeout", "60")
    took = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr
    assert "retrying cannot help" in result.stderr
    assert took < 20, f"gave up after {took:.0f}s"


def test_postgres_down_is_a_fast_503_and_one_log_line_then_recovers(
    settings: Settings, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The fault: requests hung up to 10 s, then 500 "unhandled error" with a traceback each."""
    from tests.helpers import login

    bounded = settings.model_copy(
        update={"db_connect_timeout_seconds": 1.0, "db_statement_timeout_seconds": 2.0}
    )
    with TestClient(create_app(bounded)) as client:
        asyncio.run(ensure_superuser_standalone(bounded))
        admin = login(client, bounded.admin_username, bounded.admin_password)
        assert client.get("/api/v1/users/me", headers=admin).status_code == 200
        pause(services.postgres)
        try:
            started = time.monotonic()
            response = client.get("/api/v1/users/me", headers=admin)
            took = time.monotonic() - started
        finally:
            unpause(services.postgres)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {"detail": "the database is unavailable; try again shortly"}
        assert took < 6
        assert not [r for r in caplog.records if r.getMessage() == "unhandled error"]
        assert [r.getMessage() for r in caplog.records].count("database unavailable") == 1
        wait_until(
            lambda: client.get("/api/v1/users/me", headers=admin).status_code == 200,
            30,
            "requests to succeed again",
        )


def test_a_paused_database_is_a_503_before_it_comes_back(
    settings: Settings, services: Services
) -> None:
    """The fault: with Postgres paused for 15 s, every request stalled for the whole pause and
    none got a 503 (only new connections were bounded; a statement could wait 30 s). With the
    default bounds a request on a pooled connection is answered 503 while Postgres is still
    paused: the pause lasts until the answer arrives, or 60 s at most."""
    from tests.helpers import login

    # The documented default bounds (docs/faults.md): a request waits at most about 6 s.
    assert (settings.db_statement_timeout_seconds, settings.db_connect_timeout_seconds) == (5, 3)
    with TestClient(create_app(settings)) as client:
        asyncio.run(ensure_superuser_standalone(settings))
        admin = login(client, settings.admin_username, settings.admin_password)
        assert client.post("/api/v1/items", json={"title": "before"}, headers=admin).is_success
        answers: list[tuple[int, str | None, bool]] = []
        paused = threading.Event()

        def write() -> None:
            started = time.monotonic()
            response = client.post("/api/v1/items", json={"title": "during"}, headers=admin)
            answers.append(
                (response.status_code, response.headers.get("Retry-After"), paused.is_set())
            )
            print(f"\nanswered {response.status_code} after {time.monotonic() - started:.1f}s")

        pause(services.postgres)
        paused.set()
        try:
            writer = threading.Thread(target=write)
            writer.start()
            writer.join(60)
        finally:
            paused.clear()
            unpause(services.postgres)
        writer.join()
        assert answers == [(503, "5", True)]
        wait_until(
            lambda: client.get("/api/v1/items", headers=admin).status_code == 200,
            60,
            "requests to succeed again",
        )


def test_a_statement_that_runs_into_the_server_timeout_is_a_503(
    settings: Settings, services: Services
) -> None:
    """A server that answers but is stuck (here: a lock held elsewhere) cancels the statement
    at DB_STATEMENT_TIMEOUT_SECONDS; SQLSTATE 57014 is "not now", a 503, not a 500."""
    from tests.helpers import login

    quick = settings.model_copy(update={"db_statement_timeout_seconds": 1.0})

    async def hold_lock(released: threading.Event, held: threading.Event) -> None:
        connection = await asyncpg.connect(
            settings.database_url.replace("postgresql+asyncpg", "postgresql")
        )
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
                held.set()
                await asyncio.to_thread(released.wait)
        finally:
            await connection.close()

    with TestClient(create_app(quick)) as client:
        asyncio.run(ensure_superuser_standalone(quick))
        admin = login(client, quick.admin_username, quick.admin_password)
        released, held = threading.Event(), threading.Event()
        locker = threading.Thread(target=asyncio.run, args=(hold_lock(released, held),))
        locker.start()
        try:
            assert held.wait(60)
            response = client.post("/api/v1/items", json={"title": "blocked"}, headers=admin)
        finally:
            released.set()
            locker.join()
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert client.post("/api/v1/items", json={"title": "after"}, headers=admin).is_success


def test_a_read_on_a_connection_the_database_closed_is_answered_from_a_fresh_one(
    settings: Settings, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The fault: after a database restart or restore, the pooled connections are dead and
    the requests that found them failed (500, then 503). A read (GET) is run once more on a
    fresh connection; a write is not repeated and gets its 503."""
    from tests.helpers import login

    database = make_url(settings.database_url).database

    def drop_the_app_connections() -> None:
        services.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )

    with TestClient(create_app(settings)) as client:
        asyncio.run(ensure_superuser_standalone(settings))
        admin = login(client, settings.admin_username, settings.admin_password)
        item = client.post("/api/v1/items", json={"title": "kept"}, headers=admin).json()
        assert client.get("/api/v1/items", headers=admin).status_code == 200
        drop_the_app_connections()
        # The listing (a precompiled read) takes a fresh connection itself...
        for _ in range(3):
            response = client.get("/api/v1/items", headers=admin)
            assert response.status_code == 200, response.text
            assert response.json()["items"][0]["id"] == item["id"]
        # ...any other read is run again by the middleware.
        drop_the_app_connections()
        response = client.get(f"/api/v1/items/{item['id']}", headers=admin)
        assert response.status_code == 200, response.text
        assert "retried on a fresh database connection" in [r.getMessage() for r in caplog.records]

        drop_the_app_connections()
        created = client.post("/api/v1/items", json={"title": "once"}, headers=admin)
        assert created.status_code in (201, 503), created.text  # never 500
        print(f"\na write on a closed connection: {created.status_code}")
        assert client.get("/api/v1/items", headers=admin).status_code == 200


def test_the_shell_runs_one_query_after_another_on_postgres(database: str) -> None:
    """The fault (Postgres only): the second `run(...)` in `make shell` raised "Event loop is
    closed": asyncio.run made a loop per call, and asyncpg's pooled connection kept the first."""
    from tests.unit.test_cli import SHELL_QUERIES

    env = {**os.environ, "DATABASE_URL": database, "ENVIRONMENT": "test"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "shell"], input=SHELL_QUERIES + "\n", env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "users: " in result.stdout, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
