"""One delivery of a job, run to its end. Each run is idempotent: a redelivered job never
writes twice, and a job started JOB_MAX_DELIVERIES times without an outcome is failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.core.logging import log_fields
from app.core.states import JobKind, JobState
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import Database
from app.services.cache import ReadCache
from app.services.jobs import claims
from app.services.jobs.exports import discard_partial, run_export
from app.services.jobs.imports import run_import
from app.services.retention import upload_path

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    DONE = "done"  # finished now, or earlier, or unknown: nothing more to do
    HELD = "held"  # a live run holds the job (its heartbeat is fresh): look again later
    CONTINUE = "continue"  # a slice ended at its checkpoint: queued again, send it again


# An export runs in slices of this share of TASK_TIME_LIMIT: each ends at a checkpoint and
# the next continues from it, so no export of any size runs into the worker's time limit.
EXPORT_SLICE_SHARE = 0.5
# An import is one transaction (all rows or none) and cannot be cut: it stops this long
# before TASK_TIME_LIMIT, rolled back and failed with that reason, instead of being killed.
IMPORT_TIME_MARGIN_SECONDS = 15.0


async def run_job(db: Database, settings: Settings, cache: ReadCache, job_id: uuid.UUID) -> Outcome:
    """Run one job to its end. Safe to call again for the same job (redelivery): the run
    that claims the job holds it while its heartbeat stays fresh, and a job started
    JOB_MAX_DELIVERIES times without an outcome is failed instead of started again."""
    async with db.session() as session:
        job = await session.get(Job, job_id)
        if job is None or job.state.finished:
            return Outcome.DONE  # unknown, or already done by an earlier delivery
        if job.state == JobState.RUNNING and not claims.stalled(job, settings):
            return Outcome.HELD
        if job.deliveries >= settings.job_max_deliveries:
            await _give_up(session, settings, job)
            return Outcome.DONE
        if not await claims.claim(session, job):
            return Outcome.HELD  # another delivery claimed it first
        beating = claims.heartbeat(db, job_id, settings.job_heartbeat_seconds)
        heartbeat = asyncio.create_task(beating)
        try:
            return await run_claimed(db, session, settings, cache, job)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat


async def run_claimed(
    db: Database, session: AsyncSession, settings: Settings, cache: ReadCache, job: Job
) -> Outcome:
    """The run of a job this delivery has claimed."""
    job_id = job.id  # readable after a rollback, which expires the job's attributes
    started = time.monotonic()
    try:
        if job.kind == JobKind.IMPORT:
            limit = settings.task_time_limit - IMPORT_TIME_MARGIN_SECONDS
            await run_import(db, session, settings, job, started + limit)
        elif not await run_export(
            session, settings, job, started + settings.task_time_limit * EXPORT_SLICE_SHARE
        ):
            await _continue_later(session, job)
            return Outcome.CONTINUE
    except claims.TakenOver:
        # The run that claimed it after this one owns the job, its upload and its file.
        logger.warning("job taken over by a later delivery", extra=log_fields(job_id=str(job_id)))
        return Outcome.DONE
    except Exception:
        # The exception's text may hold SQL, parameters or paths: it goes to the log,
        # and the user reads a reference to it. An import keeps its upload for a retry.
        logger.exception("job failed", extra=log_fields(job_id=str(job_id)))
        discard_partial(settings, job_id)
        await claims.roll_back(session, job)
        await claims.fail(session, job, f"the job failed on an internal error (job {job_id})")
        return Outcome.DONE
    if job.state == JobState.SUCCEEDED:  # a failure was counted where it was recorded
        metrics.JOBS_FINISHED.labels(job.kind, JobState.SUCCEEDED).inc()
    if job.kind == JobKind.IMPORT and job.state == JobState.SUCCEEDED:
        await cache.invalidate(job.owner_id)
    if job.kind == JobKind.IMPORT and job.state.finished:
        # Succeeded, or refused for what the file holds: no run needs it again.
        upload_path(settings, job.id).unlink(missing_ok=True)
    logger.info(
        "job finished",
        extra=log_fields(job_id=str(job.id), kind=job.kind, state=job.state, rows=job.total),
    )
    return Outcome.DONE


async def _continue_later(session: AsyncSession, job: Job) -> None:
    """Queue the job again after a slice: a slice that ended by itself is not a start
    that was lost, so it does not count against JOB_MAX_DELIVERIES."""
    job.state, job.deliveries, job.updated_at = JobState.QUEUED, job.deliveries - 1, utcnow()
    await session.commit()
    logger.info("job continues", extra=log_fields(job_id=str(job.id), done=job.done))


async def _give_up(session: AsyncSession, settings: Settings, job: Job) -> None:
    # Every earlier start ended without an outcome: the worker died running it.
    discard_partial(settings, job.id)
    await claims.fail(session, job, claims.lost_message(job.deliveries))
    logger.error("job given up", extra=log_fields(job_id=str(job.id), deliveries=job.deliveries))
