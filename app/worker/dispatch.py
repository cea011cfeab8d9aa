"""Hand a job to the worker, or run it in this process when no broker is configured.

With the embedded default (no Redis), `make run` has no worker: the job runs right after
the response is sent, webhook retries included, so every feature works without Docker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from fastapi import BackgroundTasks
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.logging import describe_error, log_fields
from app.db.models import Job
from app.db.session import Database
from app.services import mail, passwords, webhooks
from app.services.cache import ReadCache
from app.services.errors import Unavailable
from app.services.jobs import (
    JobAction,
    Outcome,
    attempt_webhook,
    discard_job,
    jobs_to_send,
    run_job,
    set_job_state,
)

logger = logging.getLogger(__name__)


# Seconds a submission may wait for the broker, all of it (connection, send), before 503.
ENQUEUE_TIMEOUT_SECONDS = 2.0
# After a failed send, submissions are refused at once for this long.
SKIP_BROKER_AFTER_FAILURE_SECONDS = 2.0


@dataclass
class _BrokerState:
    down_until: float = 0.0


_broker = _BrokerState()


async def run_in_process(
    db: Database, settings: Settings, cache: ReadCache, job_id: uuid.UUID
) -> None:
    while await run_job(db, settings, cache, job_id) is Outcome.CONTINUE:
        pass  # the next slice of a long export, right away: no time limit here
    for attempt in range(1, settings.webhook_max_attempts + 1):
        if not await attempt_webhook(db, settings, job_id, attempt):
            return
        await asyncio.sleep(webhooks.backoff_seconds(settings, attempt))  # retry backoff


async def recover_in_process(db: Database, settings: Settings, cache: ReadCache) -> None:
    """Without a broker this process is the worker, and its reaper: every half heartbeat
    interval (the first one after start), the jobs whose run stopped beating (the process
    running them was stopped) and those queued for longer than JOB_RESEND_AFTER_SECONDS
    (the process that accepted them stopped first) run here. Until cancelled; the runs it
    started are cancelled too."""
    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            # Not at start-up itself: a process starting does no database work it need not.
            await asyncio.sleep(settings.job_heartbeat_seconds / 2)
            try:
                for job_id in await jobs_to_send(db, settings):
                    run = asyncio.create_task(run_in_process(db, settings, cache, job_id))
                    running.add(run)
                    run.add_done_callback(running.discard)
            except Exception as exc:  # the database is down: the next round tries again
                logger.warning("job reaper failed", extra=log_fields(error=describe_error(exc)))
    finally:
        for run in running:
            run.cancel()


async def operate(
    background: BackgroundTasks,
    db: Database,
    settings: Settings,
    cache: ReadCache,
    job_id: uuid.UUID,
    action: JobAction,
) -> Job:
    """An operator's `fail` or `retry` of a job; a retried job is queued again."""
    async with db.session() as session:
        job = await set_job_state(session, job_id, action)
    if action is JobAction.RETRY:
        await enqueue(background, db, settings, cache, job_id)
    return job


async def enqueue(
    background: BackgroundTasks,
    db: Database,
    settings: Settings,
    cache: ReadCache,
    job_id: uuid.UUID,
) -> None:
    """Queue the job on the broker of `settings`, or run it here when there is none.

    Raises Unavailable (503) within about two seconds when the broker cannot take it;
    the caller then removes the job, so that none is left `queued` for ever."""
    if settings.jobs_run_in_process:
        background.add_task(run_in_process, db, settings, cache, job_id)
        return
    await _submit(settings, "shipshape.run_job", str(job_id))


async def submit(
    background: BackgroundTasks,
    db: Database,
    session: AsyncSession,
    settings: Settings,
    cache: ReadCache,
    job: Job,
) -> None:
    """Hand a new job on (broker or this process), as both faces' forms and routes do: when
    no broker takes it, the job is removed again and Unavailable (a 503) raised, so that
    none is left `queued` for ever."""
    try:
        await enqueue(background, db, settings, cache, job.id)
    except Unavailable:
        await discard_job(session, settings, job)
        raise


async def send_password_reset(db: Database, settings: Settings, email: str) -> None:
    """The reset e-mail for this address, if an account has it (in the worker, or here after
    the response without a broker). A failure is logged, never raised: nobody waits for it."""
    try:
        found = await passwords.prepare_reset(db, settings, email)
        if found is not None:
            await asyncio.to_thread(mail.send, settings, found)
    except Exception as exc:
        logger.error("password reset e-mail failed", extra=log_fields(error=describe_error(exc)))


async def submit_password_reset(
    background: BackgroundTasks, db: Database, settings: Settings, email: str
) -> None:
    """Hand the reset e-mail for `email` to the worker, or to this process after the
    response. Who has the address is looked up there, not while answering."""
    if settings.jobs_run_in_process:
        background.add_task(send_password_reset, db, settings, email)
        return
    await _submit(settings, "shipshape.send_password_reset", email)


async def _submit(settings: Settings, task: str, argument: str) -> None:
    """Queue a task on the broker; Unavailable (503) within about two seconds when the broker
    cannot take it."""
    if time.monotonic() < _broker.down_until:
        raise Unavailable("the job queue is unavailable; nothing was queued")
    try:
        # A blocking network call: in a thread, the event loop keeps serving meanwhile. The
        # whole send is bounded, not only each socket operation: with many submissions at
        # once, those waiting for one of the client's pooled connections took up to 10 s.
        # A job sent after the bound is delivered with its row removed by the caller: the
        # worker finds no job and does nothing.
        async with asyncio.timeout(ENQUEUE_TIMEOUT_SECONDS):
            await asyncio.to_thread(_send, settings, task, argument)
    except Exception as exc:
        # Later submissions are refused at once for a while instead of each waiting out
        # the timeout (Retry-After says when to come back).
        _broker.down_until = time.monotonic() + SKIP_BROKER_AFTER_FAILURE_SECONDS
        logger.warning(
            "job queue unavailable",
            extra=log_fields(task=task, error=describe_error(exc)),
        )
        raise Unavailable("the job queue is unavailable; nothing was queued") from None


def _send(settings: Settings, task: str, argument: str) -> None:
    # Imported on the first queued task: a server without a broker never loads Celery.
    from app.worker.celery_app import celery_for

    # No result is ever read (a job's row is its state): without ignore_result, Celery
    # first waits for the Redis result backend, retrying for about 20 s when Redis is down.
    celery_for(settings).send_task(
        task,
        args=[argument],
        ignore_result=True,
        retry=True,
        retry_policy={"max_retries": 0},
    )
