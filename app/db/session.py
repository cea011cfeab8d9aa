"""Engine and session factory, built from the settings for SQLite or Postgres alike."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool
from sqlalchemy.util import await_only

from app.core import metrics
from app.core.config import ConfigError, DbSslMode, Settings
from app.core.logging import describe_error


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


class Workload(StrEnum):
    """What an engine's connections are for, which decides how long one statement may run."""

    REQUESTS = "requests"  # DB_STATEMENT_TIMEOUT_SECONDS: the request answers 503 by then
    JOBS = "jobs"  # JOB_STATEMENT_TIMEOUT_SECONDS: one batch of an import, export or sweep
    MIGRATIONS = "migrations"  # unbounded: an index built over a large table takes its time


def statement_timeout(settings: Settings, workload: Workload) -> float | None:
    if workload is Workload.REQUESTS:
        return settings.db_statement_timeout_seconds
    if workload is Workload.JOBS:
        return settings.job_statement_timeout_seconds
    return None


# Margin of the driver's own timeout over the server's statement_timeout: a server that
# answers cancels the statement itself (the connection stays usable); the driver's timeout
# is for a server that does not answer at all (paused, partitioned).
CLIENT_TIMEOUT_MARGIN_SECONDS = 1.0


def create_engine(settings: Settings, workload: Workload = Workload.REQUESTS) -> AsyncEngine:
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
            # No ping on every checkout (a round trip per request): connections idle for a
            # while are pinged instead (`_ping_after_idle`), and a connection that breaks
            # in use makes the pool replace all of its connections.
            pool_pre_ping=False,
            pool_recycle=1800,
            poolclass=FairQueuePool,
            connect_args=postgres_connect_args(settings, workload),
            # Waiting for a pooled connection is bounded as well: a 503, not a hang.
            pool_timeout=settings.db_connect_timeout_seconds * 2,
        )
    engine = create_async_engine(url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        _ping_after_idle(engine)
        event.listen(engine.sync_engine, "handle_error", _client_state_error_is_a_disconnect)
        event.listen(engine.sync_engine, "do_connect", _unreachable_is_operational)
    return engine


def postgres_ssl(settings: Settings) -> ssl.SSLContext | str | bool:
    """asyncpg's `ssl` for DB_SSLMODE, as libpq reads sslmode (DB_SSL_ROOT_CERT: the CA,
    empty for the system's)."""
    mode = settings.db_sslmode
    if mode is DbSslMode.DISABLE:
        return False
    if mode is DbSslMode.PREFER:
        return "prefer"
    if mode is DbSslMode.REQUIRE:
        encrypted = ssl.create_default_context()
        encrypted.check_hostname = False
        encrypted.verify_mode = ssl.CERT_NONE
        return encrypted
    verified = ssl.create_default_context(cafile=settings.db_ssl_root_cert or None)
    verified.check_hostname = mode is DbSslMode.VERIFY_FULL
    return verified


def postgres_connect_args(settings: Settings, workload: Workload) -> dict[str, Any]:
    args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_seconds,
        "ssl": postgres_ssl(settings),
    }
    bound = statement_timeout(settings, workload)
    if bound is not None:
        args["command_timeout"] = bound + CLIENT_TIMEOUT_MARGIN_SECONDS
        args["server_settings"] = {"statement_timeout": str(round(bound * 1000))}
    else:
        # The migrations after a restore run while the database refuses everyone else's
        # writes (scripts/restore.sh, maintenance): theirs must go through.
        args["server_settings"] = {"default_transaction_read_only": "off"}
    return args


def _unreachable_is_operational(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect, and turn every socket error into the driver's OperationalError.

    asyncpg raises the socket's own errors from connect: a refused connection is a
    ConnectionError, but a host whose name no longer resolves (a stopped container, a DNS
    outage) raises socket.gaierror, an OSError that no database error handler expected: a
    500 with a traceback for every request while Postgres was stopped. As an
    OperationalError it is what it means, "the database cannot be reached now", for the
    API, the web UI, the worker and the CLI alike."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:  # gaierror, refused, unreachable, reset, timed out
        raise dialect.loaded_dbapi.OperationalError(describe_error(exc)) from exc


# SQLSTATEs that mean "not now" rather than "this request is wrong": classes 08 connection
# exception, 53 insufficient resources (too many connections, disk full), 57 operator
# intervention (statement_timeout, a server shutting down or not yet accepting connections),
# and 25006, a write while the database is read-only (maintenance during a restore).
UNAVAILABLE_SQLSTATES = ("08", "53", "57", "25006")


def unavailable(exc: BaseException) -> bool:
    """Whether a database error means "cannot be reached now" (a 503), not a bug (a 500)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    return isinstance(exc, PoolTimeout | ConnectionError | TimeoutError)


def _client_state_error_is_a_disconnect(context: Any) -> None:
    """asyncpg's InternalClientError ("cannot switch to state 15; another operation is in
    progress") comes from a connection the server closed under it (a restart, a restore,
    pg_terminate_backend): that connection can never be used again. SQLAlchemy does not count
    it as a disconnect, so the pool kept handing it out; now it is replaced like any other
    broken connection, and the request gets 503 (a read is run again) instead of 500."""
    client_error = getattr(context.dialect.dbapi, "InternalClientError", None)
    if client_error is not None and isinstance(context.original_exception, client_error):
        context.is_disconnect = True


class FairQueuePool(AsyncAdaptedQueuePool):
    """The async queue pool, handing connections out in the order they were asked for.

    Under load (more requests than connections) the stock pool lets a newly arriving
    request take a connection that was just returned for a request already waiting, which
    goes back to the end of the line: some requests waited the whole length of a load test
    (seconds) while others passed. A FIFO semaphore of the pool's capacity in front of it
    makes waiting fair; the queue behind it then always has a connection ready.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(self.size() + max(self._max_overflow, 0))

    def _do_get(self) -> Any:
        await_only(self._take_turn())
        try:
            return super()._do_get()
        except BaseException:
            self._turns.release()
            raise

    async def _take_turn(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs every wait in a task
        # of its own, even one that need not wait.
        try:
            async with asyncio.timeout(self._timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise exc.TimeoutError(
                f"QueuePool limit of size {self.size()} overflow {self._max_overflow} reached, "
                f"connection timed out, timeout {self._timeout:.2f}",
                code="3o7r",
            ) from None

    def _do_return_conn(self, record: Any) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self._turns.release()


# SQLAlchemy names a pool's logger after its class, and quiets its own ("sqlalchemy.*") to
# warnings; this class lives under "app", so it gets the same treatment by hand.
logging.getLogger(f"{__name__}.{FairQueuePool.__name__}").setLevel(logging.WARNING)

PING_IF_IDLE_SECONDS = 5.0


def _ping_after_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only if it sat idle: after a database restart or
    a dropped idle connection, the request gets a fresh connection instead of an error,
    and a busy pool pays nothing."""

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_IF_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool replaces the connection and tries again
            raise DisconnectionError(describe_error(exc)) from exc

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


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
    # SQLite's own lower() folds only ASCII: `q=ünï` found "ÜNÏ" on Postgres but not here.
    # Python's str.lower folds as Postgres does in a UTF-8 locale, so case-insensitive
    # search (lower(title) LIKE lower(:q)) answers the same on both.
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


class Database:
    """One engine and session factory per process."""

    def __init__(self, settings: Settings, workload: Workload = Workload.REQUESTS) -> None:
        self.engine = create_engine(settings, workload)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # For requests that only read (GET, HEAD) on Postgres: no BEGIN and ROLLBACK around
        # them, two round trips fewer. Each statement sees its own snapshot, so such a
        # path reads what it needs in one statement (see the items listing).
        self.read_sessionmaker = (
            self.sessionmaker
            if settings.is_sqlite
            else async_sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
        )
        # SQLite has no pool to report (one connection per checkout).
        self._pool_size = 0 if settings.is_sqlite else settings.db_pool_size
        if self._pool_size:
            metrics.POOL_SIZE.inc(self._pool_size)
            _count_pool_usage(self.engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (`read_sessionmaker`), closed only if it was used: a read
        answered without it (from the cache, or a precompiled statement on a connection of
        its own) leaves it untouched, and closing an untouched session is a trip through
        SQLAlchemy's greenlet for nothing (the warm items page: 15-20 % more requests per
        second; the uncached one: 3 greenlet hand-offs per request instead of 4)."""
        session = self.read_sessionmaker()
        try:
            yield session
        finally:
            if session.in_transaction() or session.identity_map:
                await session.close()

    async def dispose(self) -> None:
        await self.engine.dispose()
        metrics.POOL_SIZE.dec(self._pool_size)


# SQLSTATEs of a server that is up and refuses these settings, which no retry can change:
# class 28 (a wrong password, an unknown role, no pg_hba.conf entry) and 3D000 (no such
# database). A Postgres still initialising refuses TCP connections instead: that is waited for.
REFUSED_FOR_GOOD = ("28", "3D000")


class DatabaseRefused(Exception):
    """The database answered and refused the connection settings: waiting cannot help."""


def _refused_for_good(error: BaseException) -> bool:
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(REFUSED_FOR_GOOD)


async def wait_until_reachable(
    db: Database,
    budget_seconds: float,
    progress: Callable[[float, str], None],
    interval: float = 1.0,
) -> tuple[bool, float, str]:
    """Poll `SELECT 1` until it answers or the budget is spent: (ok, seconds waited, error).
    Raises DatabaseRefused at once when the server refuses the credentials or database."""
    started = time.monotonic()
    deadline = started + budget_seconds
    last_report = 0.0
    error = ""
    while True:
        try:
            async with db.engine.connect() as connection:
                await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=5)
            return True, time.monotonic() - started, ""
        except Exception as exc:  # any other failure is "not yet"; the last one is reported
            error = describe_error(exc, limit=200)
            if _refused_for_good(exc):
                raise DatabaseRefused(error) from None
        now = time.monotonic()
        if now >= deadline:
            return False, now - started, error
        if now - last_report >= 5:
            progress(deadline - now, error)
            last_report = now
        await asyncio.sleep(min(interval, max(deadline - now, 0)))  # retry pacing, bounded
