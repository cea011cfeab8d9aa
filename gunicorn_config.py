"""gunicorn settings for the production image, all from the environment (one Settings class).

    gunicorn --config gunicorn_config.py "app.main:create_app()"

The resolved values are logged as one JSON line (`gunicorn settings`) when the master
starts, so operators and tests can see what is in force. The database is then prepared
(`python -m app prepare`'s steps, in a child forked from the master) before the master
listens. A configuration error ends the master with one line (status 2) before any worker
starts.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from gunicorn import glogging
from sqlalchemy.engine import make_url

from app.core.config import EXIT_CONFIG, ConfigError, load_settings
from app.core.logging import configure_logging, log_fields

try:
    settings = load_settings()
except ConfigError as exc:
    print(f"config error: {exc}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)

# Prometheus multiprocess mode: every worker writes its samples to files here, /metrics adds
# them up. Emptied before the app is loaded (preload_app), so a restart starts from zero.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


# What uvicorn's worker imports for itself as it starts (the preloaded app does not).
WORKER_MODULES = (
    "uvloop",
    "uvicorn.loops.uvloop",
    "httptools",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "anyio._backends._asyncio",
)


def available_cpus() -> int:
    """CPUs this container may use: the cgroup quota if one is set, else the affinity mask."""
    cpus = len(os.sched_getaffinity(0))
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        try:  # cgroup v1
            quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if quota_us > 0:
                cpus = min(cpus, max(1, quota_us // period_us))
        except (OSError, ValueError):
            pass
    return cpus


bind = f"{settings.host}:{settings.port}"
cpus = available_cpus()
workers = settings.web_concurrency or min(2 * cpus + 1, settings.max_workers)
# uvicorn's worker, with a shutdown that drops no request it was sent (see the module).
worker_class = "app.core.server.DrainingUvicornWorker"
timeout = settings.worker_timeout
graceful_timeout = settings.graceful_timeout
keepalive = settings.keepalive
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter
preload_app = True  # import once in the master: faster worker starts, shared memory pages
# Heartbeat files on tmpfs: no stalls on a slow or read-only disk.
worker_tmp_dir = "/dev/shm"  # noqa: S108
forwarded_allow_ips = settings.forwarded_allow_ips
proxy_allow_ips = settings.forwarded_allow_ips
control_socket_disable = True  # no runtime control socket: the app user has no home to put it in
accesslog = None  # the app's middleware writes the access log, as JSON with the request id
errorlog = "-"
loglevel = settings.log_level


class JsonLogger(glogging.Logger):
    """gunicorn's own records in the service's JSON schema, on stdout."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging(settings.log_level)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True


logger_class = JsonLogger


def on_starting(server: Any) -> None:
    resolved = {
        "bind": bind,
        "workers": workers,
        "worker_class": worker_class,
        "timeout": timeout,
        "graceful_timeout": graceful_timeout,
        "keepalive": keepalive,
        "max_requests": max_requests,
        "max_requests_jitter": max_requests_jitter,
        "worker_max_memory_mb": settings.worker_max_memory_mb,
        "preload_app": preload_app,
        "worker_tmp_dir": worker_tmp_dir,
        "forwarded_allow_ips": forwarded_allow_ips,
        "cpus": cpus,
    }
    logging.getLogger("gunicorn.error").info(
        "gunicorn settings", extra=log_fields(gunicorn=resolved)
    )
    _prepare_in_a_child()
    _import_what_every_worker_imports()


def _import_what_every_worker_imports() -> None:
    """The event loop, the HTTP parser, the lifespan and the database dialect: modules every
    worker imports as it starts, imported once here instead. Their pages are then shared
    by all workers, not built again in each (with two workers, 4 MB of PSS less)."""
    for module in WORKER_MODULES:
        with contextlib.suppress(ImportError):  # uvloop and httptools are optional
            importlib.import_module(module)
    make_url(settings.sqlalchemy_url).get_dialect()


def _prepare_in_a_child() -> None:
    """Wait for the database, migrate, create the superuser (RUN_MIGRATIONS,
    CREATE_SUPERUSER) before the master listens and forks the workers.

    In a child forked from the master, not in the master itself and not as a separate
    `python -m app prepare`: a second interpreter start and app import cost 1.5 s of a
    3.4 s container start, while a fork costs nothing. What the steps load and leave
    behind (alembic, mako, the migration scripts, the CLI's modules, the garbage of the
    run) goes with the child; kept in the master, every worker would share those pages:
    6 MB of PSS for master + one worker. The child's exit status is the master's."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            from app.cli import prepare_or_exit

            prepare_or_exit()
            status = 0
        except SystemExit as exc:  # prepare's own exit: None or a status
            status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # not the master's exit handlers: they belong to the master
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    if status != 0:
        sys.exit(status if status > 0 else 1)


def pre_fork(server: Any, worker: Any) -> None:
    # The preloaded app (some 130,000 objects) moves to the collector's permanent generation
    # before each fork: a worker's full collections no longer walk it (they ran every few
    # hundred requests and cost 20-30 % of the cold items page's time, and its p99), and the
    # walks no longer touch the master's shared pages.
    gc.collect()
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    worker.max_memory_bytes = settings.worker_max_memory_mb * 2**20


def child_exit(server: Any, worker: Any) -> None:
    """A worker's samples stay counted; its live gauges (in-flight requests) stop counting."""
    from app.core.metrics import mark_process_dead

    mark_process_dead(worker.pid)
