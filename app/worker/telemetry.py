"""The worker's own metrics: its task runs (outcome, duration) and the /metrics that serves
them.

The task signals fire in the pool's processes, which write their samples to
PROMETHEUS_MULTIPROC_DIR (the image sets it); the worker's main process serves them all on
WORKER_METRICS_PORT, with the access rules of the app's /metrics (the METRICS_TOKEN as bearer
token, or a METRICS_ALLOWED_NETWORKS address). Prometheus finds every worker replica by DNS
(monitoring/prometheus/prometheus.yml).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery.signals import task_postrun, task_prerun, worker_init

from app.core import metrics
from app.core.config import Settings, get_settings
from app.core.logging import describe_error, log_fields
from app.core.security import operator_allowed
from app.core.states import TaskOutcome

logger = logging.getLogger(__name__)

# Start times of the runs in progress in this process, by task id: one at a time with the
# prefetch multiplier of 1, never more than the pool's concurrency.
_started: dict[str, float] = {}


@task_prerun.connect
def _run_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _run_ended(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    began = _started.pop(task_id or "", None)
    name = str(getattr(task, "name", "unknown"))
    metrics.WORKER_TASKS.labels(name, TaskOutcome.of(state)).inc()
    if began is not None:
        metrics.WORKER_TASK_DURATION.labels(name).observe(time.monotonic() - began)


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def metrics_app(settings: Settings) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """GET /metrics for operators; a JSON error for everything else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def error(status: str, detail: str, *headers: tuple[str, str]) -> list[bytes]:
            body = json.dumps({"detail": detail}).encode()
            start_response(status, [("Content-Type", "application/json"), *headers])
            return [body]

        if environ.get("PATH_INFO") != "/metrics":
            return error("404 Not Found", "not found")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return error("405 Method Not Allowed", "method not allowed", ("Allow", "GET, HEAD"))
        authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
        if not operator_allowed(settings, authorization, environ.get("REMOTE_ADDR")):
            return error(
                "401 Unauthorized",
                "metrics need the METRICS_TOKEN bearer token or an allowed network",
                ("WWW-Authenticate", "Bearer"),
            )
        body, content_type = metrics.render()
        start_response("200 OK", [("Content-Type", content_type)])
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access line on stderr (every line of the worker's output is JSON); a client that
    stalls is dropped after this many seconds instead of holding the one serving thread."""

    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_metrics(settings: Settings) -> WSGIServer | None:
    """Serve /metrics on WORKER_METRICS_PORT in a thread of this process; None when the port
    is 0 or cannot be had (logged: the worker runs its jobs without metrics)."""
    if settings.worker_metrics_port == 0:
        return None
    try:
        server = make_server(
            settings.host, settings.worker_metrics_port, metrics_app(settings),
            handler_class=_QuietHandler,
        )  # fmt: skip
    except OSError as exc:
        logger.error(
            "worker metrics not served",
            extra=log_fields(port=settings.worker_metrics_port, error=describe_error(exc)),
        )
        return None
    # One request at a time, each bounded by the handler's timeout: Prometheus scrapes every
    # few seconds. The thread touches no lock a forked pool process needs (it reads the
    # sample files and writes to its socket), so the pool may fork beside it.
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("worker metrics served", extra=log_fields(port=settings.worker_metrics_port))
    return server


@worker_init.connect
def _serve_on_start(**_: Any) -> None:
    serve_metrics(get_settings())
