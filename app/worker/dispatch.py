"""Hand a job to the worker, or run it in this process when no broker is configured.

With the embedded default (no Redis), `make run` has no worker: the job runs right after
the response is sent, webhook retries included, so every feature works without Docker.
"""

from __future__ import annotations

import asyncio
import uuid

from fastapi import BackgroundTasks

from app.core.config import Settings
from app.db.session import Database
from app.services import webhooks
from app.services.cache import ReadCache
from app.services.jobs import attempt_webhook, run_job


async def run_in_process(
    db: Database, settings: Settings, cache: ReadCache, job_id: uuid.UUID
) -> None:
    await run_job(db, settings, cache, job_id)
    for attempt in range(1, settings.webhook_max_attempts + 1):
        if not await attempt_webhook(db, settings, job_id, attempt):
            return
        await asyncio.sleep(webhooks.backoff_seconds(settings, attempt))  # retry backoff


def enqueue(
    background: BackgroundTasks,
    db: Database,
    settings: Settings,
    cache: ReadCache,
    job_id: uuid.UUID,
) -> None:
    """Queue the job on the broker of `settings`, or run it here when there is none."""
    if settings.jobs_run_in_process:
        background.add_task(run_in_process, db, settings, cache, job_id)
        return
    # Imported on the first queued job: a server without a broker never loads Celery.
    from app.worker.celery_app import celery_for

    celery_for(settings).send_task("shipshape.run_job", args=[str(job_id)])
