"""Command line: `python -m app COMMAND` (also installed as `shipshape`).

Every command turns a configuration or database problem into one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import code
import contextlib
import functools
import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from app.core.config import EXIT_CONFIG, ConfigError, Settings, get_settings, load_settings
from app.core.logging import configure_logging, error_text

cli = typer.Typer(
    name="shipshape",
    help="Shipshape service: serve, migrate, manage users, check configuration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: the image does not ship rich
)

F = TypeVar("F", bound=Callable[..., Any])
# Where a command's result lines go: the terminal (typer.echo), or a log inside a server.
Say = Callable[..., None]

EXIT_RUNTIME = 1


def _exit_with(message: str, code_: int) -> typer.Exit:
    """Say the message on stderr and return the exit to raise: `raise _exit_with(...)`."""
    typer.echo(message, err=True)
    return typer.Exit(code_)


def friendly_errors(func: F) -> F:
    """One clear line instead of a traceback for the errors a user can cause."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise _exit_with(f"config error: {exc}", EXIT_CONFIG) from None
        except SQLAlchemyError as exc:
            raise _exit_with(f"database error: {error_text(exc)}", EXIT_RUNTIME) from None
        except OSError as exc:
            raise _exit_with(f"error: {exc}", EXIT_RUNTIME) from None

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level)
    return settings


@cli.command()
@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: PORT]")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    prepare: Annotated[
        bool,
        typer.Option(help="Migrate to head and create the superuser first (`make run`)"),
    ] = False,
) -> None:
    """Run the HTTP server (uvicorn). Production images use gunicorn instead."""
    import uvicorn

    settings = _settings()
    if prepare:  # in this process: one interpreter importing the app, not three in a row
        from app.core.logging import configure_logging

        configure_logging(settings.log_level)  # as the server's: JSON lines on stdout
        say = _log_say("app.prepare")
        _migrate(settings, say=say)
        _create_superuser(settings, say)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        reload=reload,
        reload_dirs=["app"] if reload else None,
        log_config=None,  # our JSON logging, configured by create_app
        access_log=False,  # the request middleware writes the access log
        # Forwarded headers only from the proxies configured: trusted by default (uvicorn
        # trusts 127.0.0.1), any local process could fake its address past the login limits.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        server_header=False,
    )


@cli.command()
@friendly_errors
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Upgrade the database schema (default: to the latest revision)."""
    _migrate(_settings(), revision)


def _migrate(settings: Settings, revision: str = "head", say: Say = typer.echo) -> None:
    from app.db import migrate as migrations

    migrations.upgrade(settings, revision)
    say(f"database at {migrations.head_revision() if revision == 'head' else revision}")


@cli.command()
@friendly_errors
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base")],
) -> None:
    """Downgrade the database schema to REVISION."""
    from app.db import migrate as migrations

    settings = _settings()
    migrations.downgrade(settings, revision)
    reached = asyncio.run(_revision_now(settings))
    typer.echo(f"database downgraded to {reached or 'base (no revision)'}")


async def _revision_now(settings: Settings) -> str | None:
    """The revision the database is at now (a relative target such as -1 names none)."""
    from app.db.migrate import current_revision
    from app.db.session import Database, Workload

    db = Database(settings, Workload.JOBS)
    try:
        async with db.engine.connect() as connection:
            return await current_revision(connection)
    finally:
        await db.dispose()


@cli.command()
@friendly_errors
def migration(
    message: Annotated[str, typer.Argument(help='What the migration does, e.g. "add item rating"')],
) -> None:
    """Write a new migration from the models' differences with the database (`make migration`)."""
    from app.db import migrate as migrations

    settings = _settings()
    with _quiet_logs():  # Alembic's progress lines: the result is said below
        path = migrations.new_revision(settings, message)
    if path is None:
        typer.echo("the models match the database: no migration written", err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    typer.echo("review it, then apply it: make migrate (python -m app migrate)")


class JobCommand(StrEnum):  # app.services.jobs.JobAction, without importing it at start
    FAIL = "fail"
    RETRY = "retry"


@cli.command()
@friendly_errors
def jobs(
    action: Annotated[
        JobCommand, typer.Argument(help="fail: end the job now; retry: run it again from the start")
    ],
    job_id: Annotated[str, typer.Argument(help="The job's id")],
) -> None:
    """Fail or retry a job by hand (say, one whose worker keeps dying)."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise _exit_with(f"not a job id: {job_id!r}", EXIT_CONFIG) from None
    job = asyncio.run(_operate(_settings(), parsed, action.value))
    typer.echo(f"job {job_id}: {job}")


async def _operate(settings: Settings, job_id: uuid.UUID, action: str) -> str:
    from fastapi import BackgroundTasks

    from app.db.session import Database, Workload
    from app.services.cache import ReadCache
    from app.services.errors import ServiceError
    from app.services.jobs import JobAction
    from app.worker.dispatch import operate

    db = Database(settings, Workload.JOBS)
    background = BackgroundTasks()
    try:
        job = await operate(background, db, settings, ReadCache(None, 0), job_id, JobAction(action))
        await background()  # without a broker, a retried job runs here and now
        return str(job.state)
    except ServiceError as exc:
        raise _exit_with(f"job {job_id}: {exc.detail}", EXIT_RUNTIME) from None
    finally:
        await db.dispose()


@cli.command()
@friendly_errors
def sweep() -> None:
    """Delete the finished jobs past JOB_RETENTION_DAYS with their files, and files without a
    job (the worker does this every hour; for a cron job or by hand)."""
    with _quiet_logs():  # the sweep's log record: the result is said below
        swept = asyncio.run(_sweep(_settings()))
    if swept is None:
        typer.echo("another sweep is running: nothing done")
    else:
        typer.echo(f"deleted {swept.jobs} expired jobs and {swept.orphans} files without a job")


async def _sweep(settings: Settings) -> Any:
    from app.db.session import Database, Workload
    from app.services import retention

    db = Database(settings, Workload.JOBS)
    try:
        return await retention.sweep(db, settings)
    finally:
        await db.dispose()


@cli.command("create-superuser")
@friendly_errors
def create_superuser() -> None:
    """Create the ADMIN_USERNAME / ADMIN_EMAIL / ADMIN_PASSWORD superuser if absent."""
    _create_superuser(_settings())


def _create_superuser(settings: Settings, say: Say = typer.echo) -> None:
    from app.services.users import ensure_superuser_standalone

    if not settings.admin_password:
        raise ConfigError(
            f"ADMIN_PASSWORD is required in {settings.environment} to create the superuser: "
            "set ADMIN_PASSWORD or ADMIN_PASSWORD_FILE"
        )
    _check_admin(settings)
    created = asyncio.run(ensure_superuser_standalone(settings))
    state = "created" if created else "already exists"
    say(f"superuser {settings.admin_username}: {state}")


def _check_admin(settings: Settings) -> None:
    """The ADMIN_* values against the rules every user is held to (the UserCreate schema):
    one line naming the variable, as for any configuration error."""
    from pydantic import ValidationError

    from app.schemas.users import UserCreate

    try:
        UserCreate(
            username=settings.admin_username,
            email=settings.admin_email,
            password=settings.admin_password,
            is_superuser=True,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"ADMIN_{str(error['loc'][0]).upper()}: {error['msg']}") from None


WaitTimeout = Annotated[
    int | None, typer.Option(help="Seconds to keep trying [default: DB_WAIT_TIMEOUT]")
]
JsonLines = Annotated[
    bool,
    typer.Option("--json", help="Progress as JSON log lines (what the image's entrypoint uses)"),
]


@cli.command("wait-for-db")
@friendly_errors
def wait_for_db(timeout: WaitTimeout = None, json_lines: JsonLines = False) -> None:
    """Wait until the database accepts a query (SELECT 1); exit 1 after the timeout."""
    settings = _settings()
    _wait_for_database(settings, timeout, _log_say("app.prepare") if json_lines else typer.echo)


def _wait_for_database(settings: Settings, timeout: int | None, say: Say = typer.echo) -> None:
    from app.db.session import Database, DatabaseRefused, wait_until_reachable

    budget = settings.db_wait_timeout if timeout is None else timeout

    def progress(remaining: float, error: str) -> None:
        say(f"waiting for the database ({remaining:.0f}s left): {error}", err=True)

    async def run() -> tuple[bool, float, str]:
        db = Database(settings)
        try:
            return await wait_until_reachable(db, budget, progress)
        finally:
            await db.dispose()

    try:
        ok, waited, error = asyncio.run(run())
    except DatabaseRefused as exc:
        raise _exit_with(
            "the database refused the connection settings (DB_USER, DB_PASSWORD, DB_NAME or "
            f"DATABASE_URL); retrying cannot help: {exc}",
            EXIT_CONFIG,
        ) from None
    if not ok:
        raise _exit_with(
            f"database not reachable after {waited:.0f}s (DB_WAIT_TIMEOUT): {error}", EXIT_RUNTIME
        )
    say(f"database reachable after {waited:.1f}s")


@cli.command()
@friendly_errors
def prepare(timeout: WaitTimeout = None, json_lines: JsonLines = False) -> None:
    """Before serving, in one process: check the configuration, wait for the database, then
    migrate to head if RUN_MIGRATIONS and create the superuser if CREATE_SUPERUSER."""
    _prepare(timeout, _log_say("app.prepare") if json_lines else typer.echo)


def _prepare(timeout: int | None, say: Say) -> None:
    settings = _settings()
    _wait_for_database(settings, timeout, say)
    if settings.run_migrations:
        say("running migrations")
        _migrate(settings, say=say)
    if settings.create_superuser:
        _create_superuser(settings, say)
    if settings.ui_static_dir:
        _collect_static(Path(settings.ui_static_dir), say)


def _collect_static(target: Path, say: Say) -> None:
    from app.web.assets import Assets

    assets = Assets()
    written = assets.collect(target)
    say(f"web UI static files: {written} new of {len(assets.by_name)} in {target}")


@cli.command("collect-static")
@friendly_errors
def collect_static(
    target: Annotated[Path, typer.Argument(help="Directory nginx serves the files from.")],
) -> None:
    """Copy the web UI's static files, under their fingerprinted names, into TARGET (the
    production start does this into UI_STATIC_DIR)."""
    _collect_static(target, typer.echo)


def _log_say(name: str) -> Say:
    """Progress as log records (JSON lines, like the server's) instead of plain text."""
    log = logging.getLogger(name)

    def say(message: str, err: bool = False) -> None:
        log.log(logging.WARNING if err else logging.INFO, message)

    return say


def prepare_or_exit() -> None:
    """`prepare` inside a server's master process (gunicorn_config.py): the same steps and
    exit statuses, its lines logged as JSON like the server's, without starting a second
    Python and importing the app twice."""
    try:
        friendly_errors(_prepare)(None, _log_say("app.prepare"))
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None


@cli.command()
@friendly_errors
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes [default: WORKER_CONCURRENCY]")
    ] = None,
) -> None:
    """Run the Celery worker for background jobs (needs a broker: Redis)."""
    settings = _settings()
    if settings.jobs_run_in_process:
        raise ConfigError(
            "no broker configured: set REDIS_HOST/REDIS_URL or CELERY_BROKER_URL "
            "(without one, jobs run inside the API process and no worker is needed)"
        )
    from app.worker.celery_app import celery_for

    celery_for(settings).worker_main(
        [
            "--quiet",  # no ASCII-art banner: every line of the worker's output is JSON
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--max-tasks-per-child={settings.worker_max_tasks_per_child}",
            "--hostname=worker@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@cli.command("worker-ping")
@friendly_errors
def worker_ping(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer")] = 5.0,
) -> None:
    """Healthcheck: exit 0 when this host's worker answers a ping through the broker."""
    import socket

    from app.worker.celery_app import celery_for

    settings = _settings()
    node = f"worker@{socket.gethostname()}"
    replies = celery_for(settings).control.ping(destination=[node], timeout=timeout)
    if not any(node in reply for reply in replies):
        raise _exit_with(f"worker {node} did not answer within {timeout:g}s", EXIT_RUNTIME)
    typer.echo(f"{node}: pong")


@cli.command("check-config")
def check_config(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success")] = False,
) -> None:
    """Validate the environment; print the resolved configuration (secrets redacted)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise _exit_with(f"config error: {exc}", EXIT_CONFIG) from None
    if not quiet:
        typer.echo(json.dumps(settings.redacted(), indent=2, default=str))


@cli.command()
@friendly_errors
def shell(
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="Run this Python code and exit")
    ] = None,
) -> None:
    """Python shell with `settings`, `db`, `models` and `run` (run a coroutine) loaded."""
    from app.db import models
    from app.db.session import Database, Workload

    settings = _settings()
    db = Database(settings, Workload.JOBS)
    # One event loop for the whole session: the pool's connections belong to the loop that
    # opened them, so a loop per `run` (asyncio.run) broke the second query on Postgres.
    runner = asyncio.Runner()
    namespace: dict[str, Any] = {
        "settings": settings,
        "db": db,
        "models": models,
        "run": runner.run,
    }
    # An operator's prompt: warnings and errors only, whatever LOG_LEVEL says.
    with _quiet_logs(), contextlib.ExitStack() as cleanup:
        cleanup.callback(runner.close)
        cleanup.callback(runner.run, db.dispose())
        if command is not None:
            # `shell -c CODE` runs the operator's own code, as `python -c` would.
            exec(compile(command, "<shell -c>", "exec"), namespace)  # noqa: S102  # nosec B102
            return
        banner = "Shipshape shell: settings, db (db.session()), models, run(coro)"
        try:
            from IPython import start_ipython  # type: ignore[import-not-found]
        except ImportError:
            start_ipython = None
        if start_ipython is None:  # outside the handler: no chained ImportError in tracebacks
            code.interact(banner=banner, local=namespace)
        else:
            start_ipython(argv=[], user_ns=namespace, display_banner=False)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Records below WARNING are dropped while it lasts (the process-wide switch is put back:
    tests run these commands in one process)."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def main() -> None:
    cli(prog_name="python -m app" if sys.argv[0].endswith("__main__.py") else None)
