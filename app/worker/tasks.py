"""Celery tasks: thin wrappers that run the async job services in the worker process."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from celery import Task, bootsteps, shared_task
from redis.asyncio import Redis

from app.core.config import Settings, get_settings
from app.core.logging import describe_error, log_fields
from app.db.session import Database, Workload
from app.services import retention, webhooks
from app.services.cache import ReadCache
from app.services.jobs import (
    Outcome,
    attempt_webhook,
    jobs_to_send,
    run_job,
    webhook_event,
)
from app.worker.dispatch import send_password_reset

logger = logging.getLogger(__name__)


async def _run(job_id: uuid.UUID) -> tuple[Outcome, bool]:
    settings = get_settings()
    db = Database(settings, Workload.JOBS)
    url = settings.resolved_redis_url
    redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None
    try:
        outcome = await run_job(db, settings, ReadCache(redis, settings.cache_ttl_seconds), job_id)
        callback, _ = await webhook_event(db, job_id)
        return outcome, callback is not None
    finally:
        if redis is not None:
            await redis.aclose()
        await db.dispose()


@shared_task(name="shipshape.run_job", bind=True, max_retries=None)
def run_job_task(self: Task, job_id: str) -> None:
    outcome, webhook = asyncio.run(_run(uuid.UUID(job_id)))
    if outcome is Outcome.CONTINUE:
        # The slice ended at its checkpoint, well within the time limit: the next one goes
        # to the back of the queue, behind the jobs that waited meanwhile.
        run_job_task.apply_async(args=[job_id], ignore_result=True)
        return
    if outcome is Outcome.HELD:
        # Another run holds the job. If its worker died (this may be the redelivery of the
        # job it was running), its heartbeat goes stale: look again once it would be.
        raise self.retry(countdown=2 * get_settings().job_heartbeat_seconds)
    if webhook:
        deliver_webhook_task.delay(job_id)


async def _reap(settings: Settings) -> list[uuid.UUID]:
    db = Database(settings, Workload.JOBS)
    try:
        return await jobs_to_send(db, settings)
    finally:
        await db.dispose()


def _reap_once(settings: Settings) -> None:
    try:
        for job_id in asyncio.run(_reap(settings)):
            run_job_task.apply_async(args=[str(job_id)], ignore_result=True)
    except Exception as exc:  # the database or broker is down: try again next period
        logger.warning("job reaper failed", extra=log_fields(error=describe_error(exc)))


async def _sweep(settings: Settings) -> None:
    db = Database(settings, Workload.JOBS)
    try:
        await retention.sweep(db, settings)
    finally:
        await db.dispose()


def _sweep_once(settings: Settings) -> None:
    try:
        asyncio.run(_sweep(settings))
    except Exception as exc:  # the database is down: the next round tries again
        logger.warning("retention sweep failed", extra=log_fields(error=describe_error(exc)))


class JobReaper(bootsteps.StartStopStep):  # type: ignore[misc]  # celery has no types
    """Every half heartbeat interval, hand on the jobs of workers that died (their heartbeat
    stopped), so that a job ends within two intervals, and send again the jobs queued for
    longer than JOB_RESEND_AFTER_SECONDS (the broker lost them); every SWEEP_INTERVAL_SECONDS,
    delete what has passed its retention (app/services/retention.py).

    It runs on the timer of the worker's main process, in that process's only thread. As a
    thread of its own it made the pool hang: the pool forks its processes from the main
    process, and a fork while the reaper held a lock (logging's, the database driver's)
    left the new process waiting on that lock forever, with the job it had been handed.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.trefs: list[Any] = []

    def start(self, parent: Any) -> None:
        settings = get_settings()
        self.trefs = [
            parent.timer.call_repeatedly(
                settings.job_heartbeat_seconds / 2, _reap_once, (settings,)
            ),
            parent.timer.call_repeatedly(
                retention.SWEEP_INTERVAL_SECONDS, _sweep_once, (settings,)
            ),
        ]

    def stop(self, parent: Any) -> None:
        for tref in self.trefs:
            tref.cancel()
        self.trefs = []


async def _deliver(job_id: uuid.UUID, attempt: int) -> bool:
    settings = get_settings()
    db = Database(settings, Workload.JOBS)
    try:
        return await attempt_webhook(db, settings, job_id, attempt)
    finally:
        await db.dispose()


@shared_task(name="shipshape.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook_task(self: Task, job_id: str) -> None:
    attempt = self.request.retries + 1
    if asyncio.run(_deliver(uuid.UUID(job_id), attempt)):
        raise self.retry(countdown=webhooks.backoff_seconds(get_settings(), attempt))


async def _send_password_reset(email: str) -> None:
    settings = get_settings()
    db = Database(settings, Workload.JOBS)
    try:
        await send_password_reset(db, settings, email)
    finally:
        await db.dispose()


@shared_task(name="shipshape.send_password_reset")
def send_password_reset_task(email: str) -> None:
    """The reset e-mail for an address (app/services/passwords.py); retried on its own
    (app/services/mail.py)."""
    asyncio.run(_send_password_reset(email))
