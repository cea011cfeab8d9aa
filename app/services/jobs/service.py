"""What the API and the web UI ask of jobs: create one, list, read and delete them, an
operator's hand on one, and the report of the unfinished ones."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.states import JobKind, JobState, WebhookState
from app.db.base import utcnow
from app.db.models import UNFINISHED, Job
from app.db.session import Database
from app.services import retention
from app.services.access import Principal, get_owned
from app.services.errors import Conflict, NotFound, TooLarge
from app.services.jobs.claims import fail
from app.services.jobs.repository import JobRepository
from app.services.pagination import Cursor, CursorCodec, Listed, listed, position_of
from app.services.retention import export_path, upload_path

UPLOAD_CHUNK_BYTES = 64 * 1024


async def create_job(
    session: AsyncSession, principal: Principal, kind: JobKind, callback_url: str | None
) -> Job:
    job = Job(
        kind=kind,
        owner_id=principal.id,
        state=JobState.QUEUED,
        deliveries=0,
        done=0,
        total=0,
        callback_url=callback_url,
        webhook_state=WebhookState.PENDING if callback_url else WebhookState.NONE,
        webhook_attempts=0,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(job)
    await session.commit()
    return job


async def create_import(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    upload: BinaryIO,
    callback_url: str | None,
) -> Job:
    """An import job for the uploaded file (413 above IMPORT_MAX_BYTES)."""
    staged = await asyncio.to_thread(_stage_upload, settings, upload)
    try:
        job = await create_job(session, principal, JobKind.IMPORT, callback_url)
        staged.rename(upload_path(settings, job.id))
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return job


def _stage_upload(settings: Settings, upload: BinaryIO) -> Path:
    """Copy the upload into the uploads folder under a temporary name, in chunks."""
    folder = Path(settings.uploads_dir)
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".upload-{uuid.uuid4()}.partial"
    size = 0
    try:
        with staged.open("wb") as target:
            while chunk := upload.read(UPLOAD_CHUNK_BYTES):
                size += len(chunk)
                if size > settings.import_max_bytes:
                    raise TooLarge(
                        f"the file is larger than IMPORT_MAX_BYTES ({settings.import_max_bytes} B)"
                    )
                target.write(chunk)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


async def list_jobs(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None = None,
) -> Listed[Job]:
    """One page of the principal's jobs (everybody's for a superuser), newest first."""
    owner = None if principal.is_superuser else principal.id
    codec = CursorCodec(settings.secret_key, "jobs", "all" if owner is None else str(owner))

    async def read(at: Cursor | None) -> list[Job]:
        return await JobRepository(session).page(owner, at, limit)

    return await listed(codec, cursor, limit, read, position_of)


async def discard_job(session: AsyncSession, settings: Settings, job: Job) -> None:
    """Remove a job that could not be queued, with its upload."""
    await session.delete(job)
    await session.commit()
    upload_path(settings, job.id).unlink(missing_ok=True)


@dataclass(frozen=True)
class QueueReport:
    """The unfinished jobs, read at once for the metrics and the status page.

    `counts`: per unfinished state, 0 included. `oldest_seconds`: per state, how long its
    oldest job has been in it without a change (a queued job: waiting for a worker).
    `heartbeat_age_seconds`: the stalest heartbeat of a running job (0 with none running).
    `redelivered`: unfinished jobs delivered more than once."""

    counts: dict[JobState, int]
    oldest_seconds: dict[JobState, float]
    heartbeat_age_seconds: float
    redelivered: int


async def queue_report(db: Database, now: datetime | None = None) -> QueueReport | None:
    """Read through the partial index that holds the unfinished jobs alone: the finished
    ones are not read, however many the table keeps. None when the database does not
    answer: metrics must be served all the same."""
    try:
        async with db.session() as session:
            rows = await JobRepository(session).unfinished_by_state()
    except Exception:  # any failure of the database means "no report now"
        return None
    now = now or utcnow()
    found = {row.state: row for row in rows}

    def age(at: datetime | None) -> float:
        return max((now - at).total_seconds(), 0.0) if at is not None else 0.0

    running = found.get(JobState.RUNNING)
    return QueueReport(
        counts={state: found[state].jobs if state in found else 0 for state in UNFINISHED},
        oldest_seconds={
            state: age(found[state].oldest) if state in found else 0.0 for state in UNFINISHED
        },
        heartbeat_age_seconds=age(running.heartbeat) if running is not None else 0.0,
        redelivered=sum(row.redelivered for row in rows),
    )


async def get_job(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> Job:
    return await get_owned(session, principal, Job, job_id, "job")


async def delete_job(
    session: AsyncSession, settings: Settings, principal: Principal, job_id: uuid.UUID
) -> None:
    """Delete a finished job of the caller's (anyone's, for a superuser) and its files now,
    instead of JOB_RETENTION_DAYS after it ended (409 while it is queued or running). A
    download under way keeps reading the file it opened."""
    job = await get_job(session, principal, job_id)
    if not job.state.finished:
        raise Conflict(f"the job is {job.state}: it can be deleted once it has finished")
    await session.delete(job)
    await session.commit()
    retention.remove_files(settings, job_id)


def open_export(settings: Settings, job: Job) -> tuple[BinaryIO, int]:
    """A finished export's file, opened (and its size): once open, it stays readable to the
    end even if the job is deleted meanwhile."""
    if job.kind != JobKind.EXPORT:
        raise NotFound("only export jobs have a download")
    if job.state != JobState.SUCCEEDED:
        raise Conflict(f"the export is {job.state}, not finished")
    try:
        handle = export_path(settings, job.id).open("rb")
    except FileNotFoundError:
        raise NotFound("the export file is gone") from None
    return handle, os.fstat(handle.fileno()).st_size


class JobAction(StrEnum):
    FAIL = "fail"  # end it now, as failed
    RETRY = "retry"  # start it afresh: queued, no deliveries counted


def allowed_actions(state: JobState) -> list[JobAction]:
    """What an operator may do to a job in this state: `fail` one that has not finished,
    `retry` one that has not succeeded. `set_job_state` refuses the others (409)."""
    allowed = [] if state.finished else [JobAction.FAIL]
    return allowed if state is JobState.SUCCEEDED else [*allowed, JobAction.RETRY]


async def set_job_state(session: AsyncSession, job_id: uuid.UUID, action: JobAction) -> Job:
    """An operator's hand on a job: `fail` ends it now, `retry` starts it afresh."""
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound("job not found")
    if action not in allowed_actions(job.state):
        raise Conflict(
            f"the job is already {job.state}"
            if action is JobAction.FAIL
            else "the job has succeeded; it is not run again"
        )
    if action is JobAction.FAIL:
        await fail(session, job, "failed by an operator")
    else:
        job.state, job.error, job.deliveries, job.heartbeat_at = JobState.QUEUED, None, 0, None
        job.done, job.updated_at = 0, utcnow()
        await session.commit()
    return job
