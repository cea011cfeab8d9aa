"""A run's hold on its job: its claim, its heartbeat, and how it records progress and failure.

A job's delivery count is its version: a run claims the job by raising it, and of two
deliveries that try at once, one matches it. The claim stands while the run's heartbeat
stays fresh; a run that lost it commits nothing (`hold_claim`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.core.logging import describe_error, log_fields
from app.core.states import JobState
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import Database
from app.services.jobs.repository import JobRepository

logger = logging.getLogger(__name__)


class TakenOver(Exception):
    """Another delivery claimed the job while this run worked on it: this run's heartbeat
    went stale (its process stalled, or died with its last statements still on their way
    to the database, which then ran them)."""


def stale_before(settings: Settings) -> datetime:
    # A live run beats every interval: 1.5 intervals without one, and it is gone.
    return utcnow() - timedelta(seconds=1.5 * settings.job_heartbeat_seconds)


def stalled(job: Job, settings: Settings) -> bool:
    return job.heartbeat_at is None or job.heartbeat_at < stale_before(settings)


def lost_message(deliveries: int) -> str:
    return f"the worker was lost {deliveries} times while running this job; it is not retried again"


async def claim(session: AsyncSession, job: Job) -> bool:
    """Mark the job running for this delivery, unless another claimed it meanwhile."""
    claimed = await JobRepository(session).claim(job.id, job.deliveries)
    await session.commit()
    if not claimed:
        return False
    await session.refresh(job)
    return True


async def hold_claim(session: AsyncSession, job: Job) -> None:
    """Before a run commits its outcome: lock the job's row in the run's transaction, on
    condition that the run's claim still stands (the delivery count it claimed with). Then
    no other delivery can claim it before this commit, and a run that lost its claim
    commits nothing: it rolls back, the rows it wrote with it, and raises TakenOver."""
    if not await JobRepository(session).hold(job.id, job.deliveries):
        await session.rollback()
        raise TakenOver


async def heartbeat(db: Database, job_id: uuid.UUID, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            async with db.session() as session:
                await JobRepository(session).beat(job_id)
                await session.commit()
        except Exception as exc:  # the next beat may get through; the reaper is the net
            logger.warning(
                "job heartbeat failed",
                extra=log_fields(job_id=str(job_id), error=describe_error(exc)),
            )


async def progress(session: AsyncSession, job: Job, done: int) -> None:
    job.done, job.updated_at = done, utcnow()
    await session.commit()


async def report_progress(db: Database, job_id: uuid.UUID, done: int) -> None:
    """Progress committed in a session of its own, outside the run's transaction."""
    async with db.session() as session:
        await JobRepository(session).set_done(job_id, done)
        await session.commit()


async def fail(session: AsyncSession, job: Job, error: str, **result: Any) -> None:
    job.state, job.error, job.updated_at = JobState.FAILED, error, utcnow()
    job.checkpoint = None
    if result:
        job.result = result
    kind = job.kind  # read before the commit expires it
    await session.commit()
    metrics.JOBS_FINISHED.labels(kind, JobState.FAILED).inc()


async def roll_back(session: AsyncSession, job: Job) -> None:
    """Roll the session back and read the job again: a rollback expires what the session
    holds, and an expired attribute cannot be loaded on first access under asyncio."""
    await session.rollback()
    await session.refresh(job)
