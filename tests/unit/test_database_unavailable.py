"""A database that cannot be reached is a 503 with Retry-After, whatever the failure looks like.

These need no Postgres: a host name that never resolves (`.invalid`, RFC 2606) is what a
stopped container looks like to a process on its network. The Postgres integration tier
covers a paused server and a statement that runs into its timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.core.config import Settings
from app.db.session import Workload, postgres_connect_args, statement_timeout, unavailable
from app.main import create_app
from tests.helpers import make_settings

UNRESOLVABLE = "postgresql+asyncpg://shipshape:secret@db.invalid:5432/shipshape"


@pytest.fixture
def unresolvable(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, UNRESOLVABLE)


def test_a_database_whose_name_does_not_resolve_is_a_503_not_a_500(
    unresolvable: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The fault: with the Postgres container stopped its name stopped resolving, asyncpg
    raised socket.gaierror, and every request that needed the database was a 500."""
    with TestClient(create_app(unresolvable), raise_server_exceptions=False) as client:
        login = client.post("/api/v1/auth/token", data={"username": "a", "password": "b"})
        ready = client.get("/ready")
        health = client.get("/health")
    assert login.status_code == 503, login.text
    assert login.json() == {"detail": "the database is unavailable; try again shortly"}
    assert login.headers["Retry-After"] == "5"
    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == "5"
    assert ready.json()["checks"]["database"]["error"].startswith("OperationalError")
    assert health.status_code == 503
    assert health.headers["Retry-After"] == "5"
    messages = [record.getMessage() for record in caplog.records]
    assert "unhandled error" not in messages
    assert messages.count("database unavailable") == 1


def test_the_web_ui_answers_an_unreachable_database_with_a_503_page(
    unresolvable: Settings,
) -> None:
    with TestClient(create_app(unresolvable), raise_server_exceptions=False) as client:
        page = client.get(unresolvable.ui_path + "/login")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        response = client.post(
            unresolvable.ui_path + "/login",
            data={"username": "a", "password": "b", "csrf_token": token},
        )
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "Unavailable" in response.text


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("57014", True),  # statement_timeout: the server cancelled the statement
        ("57P01", True),  # the server is shutting down (admin_shutdown)
        ("57P03", True),  # the server is starting and does not accept connections yet
        ("53300", True),  # too many connections
        ("08006", True),  # the connection failed
        ("25006", True),  # a write while the database is read-only (a restore's maintenance)
        ("25001", False),  # other transaction-state errors are bugs
        ("23505", False),  # a unique violation is the request's (or the code's) fault
        ("42P01", False),  # no such table: a bug, a 500
        ("40001", False),  # a serialization failure is retried by the code, not the client
    ],
)
def test_an_error_is_unavailable_by_its_sqlstate_class(sqlstate: str, expected: bool) -> None:
    error = DBAPIError("SELECT 1", None, _Orig(sqlstate))
    assert unavailable(error) is expected


def test_connection_level_errors_are_unavailable_and_others_are_not() -> None:
    assert unavailable(OperationalError("SELECT 1", None, Exception("refused")))
    assert unavailable(PoolTimeout("pool exhausted"))
    assert unavailable(ConnectionRefusedError())
    assert unavailable(TimeoutError())
    assert not unavailable(IntegrityError("INSERT", None, _Orig("23505")))
    assert not unavailable(ValueError("a bug"))


def test_each_workload_bounds_its_statements_on_the_server_and_in_the_driver(
    unresolvable: Settings,
) -> None:
    settings = unresolvable.model_copy(
        update={
            "db_connect_timeout_seconds": 2.0,
            "db_statement_timeout_seconds": 4.0,
            "job_statement_timeout_seconds": 90.0,
        }
    )
    assert statement_timeout(settings, Workload.REQUESTS) == 4.0
    assert statement_timeout(settings, Workload.JOBS) == 90.0
    assert statement_timeout(settings, Workload.MIGRATIONS) is None
    assert postgres_connect_args(settings, Workload.REQUESTS) == {
        "timeout": 2.0,
        "ssl": "prefer",  # DB_SSLMODE's default, the driver's own
        "command_timeout": 5.0,  # for a server that does not answer at all
        "server_settings": {"statement_timeout": "4000"},
    }
    assert postgres_connect_args(settings, Workload.JOBS)["server_settings"] == {
        "statement_timeout": "90000"
    }
    assert postgres_connect_args(settings, Workload.MIGRATIONS) == {
        "timeout": 2.0,
        "ssl": "prefer",
        "server_settings": {"default_transaction_read_only": "off"},
    }


def test_a_precompiled_read_of_an_unreachable_database_raises_what_means_unavailable(
    unresolvable: Settings,
) -> None:
    """The fault (under load with the database stopped): the items listing, which takes its
    connection from the pool itself, raised the driver's own error, which no handler knows:
    a 500 for every listing whose principal came from the cache."""
    import asyncio

    from sqlalchemy import select, text

    from app.db.precompiled import Precompiled
    from app.db.session import Database

    db = Database(unresolvable)
    statement = Precompiled(select(text("1")))

    async def read() -> None:
        try:
            async with db.read_sessionmaker() as session:
                await statement.all(session)
        finally:
            await db.dispose()

    with pytest.raises(Exception) as raised:  # noqa: PT011 - any type; the check is below
        asyncio.run(read())
    assert unavailable(raised.value), repr(raised.value)
