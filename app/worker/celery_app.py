"""The Celery application: Redis as broker and result backend, reliability settings on.

    python -m app worker        # what the image's `worker` mode runs

- acks_late + reject_on_worker_lost: a job is acknowledged only when it has finished, so
  a worker killed mid-job (OOM, SIGKILL, node loss) leaves it to be delivered again;
  the jobs are idempotent, so a second delivery never writes twice.
- prefetch multiplier 1: a worker takes one job at a time, long jobs do not queue behind
  each other on one worker while another is idle.
- visibility timeout above the task time limit: Redis hands an unacknowledged job to
  another worker only after the first could no longer be working on it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.worker.dispatch import ENQUEUE_TIMEOUT_SECONDS

_apps: dict[str, Celery] = {}


def make_celery(settings: Settings) -> Celery:
    app = Celery("shipshape", include=["app.worker.tasks"])
    app.conf.update(
        broker_url=settings.resolved_broker_url or "memory://",
        result_backend=settings.resolved_result_backend,
        task_always_eager=settings.jobs_run_in_process,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=24 * 3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_concurrency=settings.worker_concurrency,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(1, settings.task_time_limit - 10),
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Queuing a job from a request must fail fast when Redis is down, not hang.
            "socket_connect_timeout": ENQUEUE_TIMEOUT_SECONDS,
            "socket_timeout": ENQUEUE_TIMEOUT_SECONDS,
        },
        broker_connection_timeout=ENQUEUE_TIMEOUT_SECONDS,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    from app.worker import telemetry  # noqa: F401 - connects the task runs' metrics
    from app.worker.tasks import JobReaper

    app.steps["consumer"].add(JobReaper)
    return app


def celery_for(settings: Settings) -> Celery:
    """One Celery app per broker in a process, made on first use: importing this module
    reads no configuration, so the API can be imported without a valid environment."""
    key = settings.resolved_broker_url or "in-process"
    if key not in _apps:
        _apps[key] = make_celery(settings)
    return _apps[key]


@setup_logging.connect
def _json_logging(**_: Any) -> None:
    """Celery's own records in the service's JSON schema instead of its text format."""
    configure_logging(get_settings().log_level)
