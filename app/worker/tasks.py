"""Celery tasks: thin wrappers that run the async job services in the worker process."""

from __future__ import annotations

import asyncio
import uuid

from celery import Task, shared_task
from redis.asyncio import Redis

from app.core.config import get_settings
from app.db.session import Database
from app.services import webhooks
from app.services.cache import ReadCache
from app.services.jobs import attempt_webhook, run_job, webhook_event


async def _run(job_id: uuid.UUID) -> bool:
    settings = get_settings()
    db = Database(settings)
    url = settings.resolved_redis_url
    redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None
    try:
        await run_job(db, settings, ReadCache(redis, settings.cache_ttl_seconds), job_id)
        callback, _ = await webhook_event(db, job_id)
        return callback is not None
    finally:
        if redis is not None:
            await redis.aclose()
        await db.dispose()


@shared_task(name="shipshape.run_job")
def run_job_task(job_id: str) -> None:
    if asyncio.run(_run(uuid.UUID(job_id))):
        deliver_webhook_task.delay(job_id)


async def _deliver(job_id: uuid.UUID, attempt: int) -> bool:
    settings = get_settings()
    db = Database(settings)
    try:
        return await attempt_webhook(db, settings, job_id, attempt)
    finally:
        await db.dispose()


@shared_task(name="shipshape.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook_task(self: Task, job_id: str) -> None:
    attempt = self.request.retries + 1
    if asyncio.run(_deliver(uuid.UUID(job_id), attempt)):
        raise self.retry(countdown=webhooks.backoff_seconds(get_settings(), attempt))
