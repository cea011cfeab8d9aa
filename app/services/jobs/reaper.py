"""The jobs whose run or message was lost, found and handed to a worker again. Safe to run
from several workers at once: each change is conditional on what was read."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from app.core import metrics
from app.core.config import Settings
from app.core.logging import log_fields
from app.core.states import JobKind, JobState
from app.db.base import utcnow
from app.db.session import Database
from app.services.jobs.claims import lost_message, stale_before
from app.services.jobs.exports import discard_partial
from app.services.jobs.repository import JobRepository

logger = logging.getLogger(__name__)

RESEND_BATCH = 1000  # jobs sent again per round at most; the next round takes the rest


async def reap_stalled_jobs(db: Database, settings: Settings) -> tuple[list[uuid.UUID], int]:
    """Jobs whose run stopped beating (its worker died): put back to `queued`, or failed
    after JOB_MAX_DELIVERIES starts. Returns the re-queued ids (to send to the broker) and
    the number failed."""
    cutoff = stale_before(settings)
    requeued: list[uuid.UUID] = []
    ended: list[JobKind] = []  # the kinds of the jobs failed, counted once committed
    async with db.session() as session:
        repository = JobRepository(session)
        for job_id, deliveries, kind in await repository.stalled(cutoff):
            values: dict[str, Any] = {"state": JobState.QUEUED, "updated_at": utcnow()}
            if deliveries >= settings.job_max_deliveries:
                values.update(state=JobState.FAILED, error=lost_message(deliveries))
            if await repository.end_stalled(job_id, deliveries, cutoff, values):
                if values["state"] == JobState.QUEUED:
                    requeued.append(job_id)
                else:
                    discard_partial(settings, job_id)
                    ended.append(kind)
        await session.commit()
    for kind in ended:
        metrics.JOBS_FINISHED.labels(kind, JobState.FAILED).inc()
    if requeued or ended:
        logger.warning(
            "stalled jobs reaped",
            extra=log_fields(requeued=[str(i) for i in requeued], failed=len(ended)),
        )
    return requeued, len(ended)


async def resend_forgotten_jobs(db: Database, settings: Settings) -> list[uuid.UUID]:
    """Jobs `queued` for longer than JOB_RESEND_AFTER_SECONDS, to send to the broker again.

    The row is the truth, the broker's message only a copy: Redis may have lost it (evicted
    under memory pressure, flushed, restored from an older file), and then the job waited
    for ever. Each one found moves its `updated_at` on, so it is sent once per period and by
    one reaper of several; a message that was not lost after all makes a second delivery,
    which finds the job claimed or finished and does nothing."""
    cutoff = utcnow() - timedelta(seconds=settings.job_resend_after_seconds)
    async with db.session() as session:
        repository = JobRepository(session)
        found = await repository.forgotten(cutoff, RESEND_BATCH)
        if not found:
            return []
        resent = await repository.touch_forgotten(found, cutoff)
        await session.commit()
    if resent:
        logger.warning(
            "queued jobs sent again", extra=log_fields(jobs=[str(job_id) for job_id in resent])
        )
    return resent


async def jobs_to_send(db: Database, settings: Settings) -> list[uuid.UUID]:
    """What a reaper hands to a worker again: the jobs whose run stopped beating, then those
    queued for longer than JOB_RESEND_AFTER_SECONDS."""
    requeued, _ = await reap_stalled_jobs(db, settings)
    return requeued + await resend_forgotten_jobs(db, settings)
