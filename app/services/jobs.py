"""CSV import and export jobs. Each run is idempotent: a redelivered job never writes twice.

An import validates every row first and writes nothing unless all rows are valid; the
rows and the job's succeeded state are committed in one transaction, so a worker
killed mid-import leaves no rows behind, and a redelivered import after success is a
no-op. An export writes to a temporary file and renames it into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydantic import ValidationError
from sqlalchemy import (
    Select,
    Table,
    Uuid,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.core.logging import describe_error, log_fields
from app.core.states import JobKind, JobState, WebhookState
from app.db.base import utcnow
from app.db.models import EVERY_ROW_SQL, UNFINISHED, UNFINISHED_SQL, Item, Job, User
from app.db.precompiled import Precompiled
from app.db.session import Database
from app.schemas.items import ItemCreate
from app.schemas.jobs import JobPublic
from app.services import csvfiles, retention, webhooks
from app.services.access import Principal, get_owned
from app.services.cache import ReadCache
from app.services.errors import Conflict, NotFound, TooLarge
from app.services.pagination import Cursor, CursorCodec, Listed, listed, position_of, seek
from app.services.retention import export_path, upload_path

logger = logging.getLogger(__name__)

_items = Item.__table__.c
_ITEMS_TABLE = cast(Table, Item.__table__)
_EXPORTED = (_items.id, _items.title, _items.description, _items.created_at, _items.updated_at)

FINISHED = tuple(state for state in JobState if state.finished)
UPLOAD_CHUNK_BYTES = 64 * 1024
EXPORT_CHUNK_ROWS = 10_000  # rows exported at a time
IMPORT_BATCH_ROWS = 5000  # rows read, validated and written at a time
MAX_REPORTED_ROWS = 100  # a report of the first rejected rows; the count says how many


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
    scope = text(EVERY_ROW_SQL) if principal.is_superuser else Job.owner_id == principal.id
    codec = CursorCodec(
        settings.secret_key, "jobs", "all" if principal.is_superuser else str(principal.id)
    )

    async def read(at: Cursor | None) -> list[Job]:
        query = seek(select(Job).where(scope), Job.created_at, Job.id, at, limit)
        return list(await session.scalars(query))

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
    oldest = func.min(Job.updated_at)
    heartbeat = func.min(func.coalesce(Job.heartbeat_at, Job.updated_at))
    redelivered = func.sum(case((Job.deliveries > 1, 1), else_=0))
    try:
        async with db.session() as session:
            rows = (
                await session.execute(
                    # The index's own predicate, as literal SQL: a plan made for bound
                    # parameters could not prove it, and would read the whole table.
                    select(Job.state, func.count(), oldest, heartbeat, redelivered)
                    .where(text(UNFINISHED_SQL))
                    .group_by(Job.state)
                )
            ).all()
    except Exception:  # any failure of the database means "no report now"
        return None
    now = now or utcnow()
    found = {row[0]: row for row in rows}

    def age(at: datetime | None) -> float:
        return max((now - at).total_seconds(), 0.0) if at is not None else 0.0

    running = found.get(JobState.RUNNING)
    return QueueReport(
        counts={state: found[state][1] if state in found else 0 for state in UNFINISHED},
        oldest_seconds={
            state: age(found[state][2]) if state in found else 0.0 for state in UNFINISHED
        },
        heartbeat_age_seconds=age(running[3]) if running is not None else 0.0,
        redelivered=sum(int(row[4] or 0) for row in rows),
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
        if job is None or job.state in FINISHED:
            return Outcome.DONE  # unknown, or already done by an earlier delivery
        if job.state == JobState.RUNNING and not _stalled(job, settings):
            return Outcome.HELD
        if job.deliveries >= settings.job_max_deliveries:
            await _give_up(session, settings, job)
            return Outcome.DONE
        if not await _claim(session, job):
            return Outcome.HELD  # another delivery claimed it first
        heartbeat = asyncio.create_task(_heartbeat(db, job_id, settings.job_heartbeat_seconds))
        try:
            return await _run_claimed(db, session, settings, cache, job)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat


async def _run_claimed(
    db: Database, session: AsyncSession, settings: Settings, cache: ReadCache, job: Job
) -> Outcome:
    job_id = job.id  # readable after a rollback, which expires the job's attributes
    started = time.monotonic()
    try:
        if job.kind == JobKind.IMPORT:
            limit = settings.task_time_limit - IMPORT_TIME_MARGIN_SECONDS
            await _run_import(db, session, settings, job, started + limit)
        elif not await _run_export(
            session, settings, job, started + settings.task_time_limit * EXPORT_SLICE_SHARE
        ):
            await _continue_later(session, job)
            return Outcome.CONTINUE
    except _TakenOver:
        # The run that claimed it after this one owns the job, its upload and its file.
        logger.warning("job taken over by a later delivery", extra=log_fields(job_id=str(job_id)))
        return Outcome.DONE
    except Exception:
        # The exception's text may hold SQL, parameters or paths: it goes to the log,
        # and the user reads a reference to it. An import keeps its upload for a retry.
        logger.exception("job failed", extra=log_fields(job_id=str(job_id)))
        _discard_partial(settings, job_id)
        await _roll_back(session, job)
        await _fail(session, job, f"the job failed on an internal error (job {job_id})")
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


class _TakenOver(Exception):
    """Another delivery claimed the job while this run worked on it: this run's heartbeat
    went stale (its process stalled, or died with its last statements still on their way
    to the database, which then ran them)."""


async def _hold_claim(session: AsyncSession, job: Job) -> None:
    """Before a run commits its outcome: lock the job's row in the run's transaction, on
    condition that the run's claim still stands (the delivery count it claimed with). Then
    no other delivery can claim it before this commit, and a run that lost its claim
    commits nothing: it rolls back, the rows it wrote with it, and raises _TakenOver."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.deliveries == job.deliveries, Job.state == JobState.RUNNING)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        await session.rollback()
        raise _TakenOver


async def _continue_later(session: AsyncSession, job: Job) -> None:
    """Queue the job again after a slice: a slice that ended by itself is not a start
    that was lost, so it does not count against JOB_MAX_DELIVERIES."""
    job.state, job.deliveries, job.updated_at = JobState.QUEUED, job.deliveries - 1, utcnow()
    await session.commit()
    logger.info("job continues", extra=log_fields(job_id=str(job.id), done=job.done))


def _stale_before(settings: Settings) -> datetime:
    # A live run beats every interval: 1.5 intervals without one, and it is gone.
    return utcnow() - timedelta(seconds=1.5 * settings.job_heartbeat_seconds)


def _stalled(job: Job, settings: Settings) -> bool:
    return job.heartbeat_at is None or job.heartbeat_at < _stale_before(settings)


async def _claim(session: AsyncSession, job: Job) -> bool:
    """Mark the job running for this delivery, unless another claimed it meanwhile (the
    delivery count is the version: of two claims, one matches it)."""
    now = utcnow()
    result = await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.deliveries == job.deliveries, Job.state.not_in(FINISHED))
        .values(
            state=JobState.RUNNING, deliveries=Job.deliveries + 1, heartbeat_at=now, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    if _rowcount(result) != 1:
        return False
    await session.refresh(job)
    return True


def _partial_path(settings: Settings, job_id: uuid.UUID) -> Path:
    """The export being written: renamed to its final name when complete."""
    return export_path(settings, job_id).with_suffix(".csv.partial")


def _discard_partial(settings: Settings, job_id: uuid.UUID) -> None:
    """An export that has failed for good leaves nothing half-written in storage."""
    _partial_path(settings, job_id).unlink(missing_ok=True)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _lost_message(deliveries: int) -> str:
    return f"the worker was lost {deliveries} times while running this job; it is not retried again"


async def _give_up(session: AsyncSession, settings: Settings, job: Job) -> None:
    # Every earlier start ended without an outcome: the worker died running it.
    _discard_partial(settings, job.id)
    await _fail(session, job, _lost_message(job.deliveries))
    logger.error("job given up", extra=log_fields(job_id=str(job.id), deliveries=job.deliveries))


async def _heartbeat(db: Database, job_id: uuid.UUID, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            async with db.session() as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.RUNNING)
                    .values(heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
        except Exception as exc:  # the next beat may get through; the reaper is the net
            logger.warning(
                "job heartbeat failed",
                extra=log_fields(job_id=str(job_id), error=describe_error(exc)),
            )


async def reap_stalled_jobs(db: Database, settings: Settings) -> tuple[list[uuid.UUID], int]:
    """Jobs whose run stopped beating (its worker died): put back to `queued`, or failed
    after JOB_MAX_DELIVERIES starts. Returns the re-queued ids (to send to the broker) and
    the number failed. Safe to run from several workers at once."""
    cutoff = _stale_before(settings)
    # Read through the index of the unfinished jobs (its predicate, literally), never the table.
    stalled = and_(
        text(UNFINISHED_SQL),
        Job.state == JobState.RUNNING,
        (Job.heartbeat_at < cutoff) | Job.heartbeat_at.is_(None),
    )
    requeued: list[uuid.UUID] = []
    ended: list[JobKind] = []  # the kinds of the jobs failed, counted once committed
    async with db.session() as session:
        found = (
            await session.execute(select(Job.id, Job.deliveries, Job.kind).where(stalled))
        ).all()
        for job_id, deliveries, kind in found:
            values: dict[str, Any] = {"state": JobState.QUEUED, "updated_at": utcnow()}
            if deliveries >= settings.job_max_deliveries:
                values.update(state=JobState.FAILED, error=_lost_message(deliveries))
            result = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.deliveries == deliveries, stalled)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) == 1:
                if values["state"] == JobState.QUEUED:
                    requeued.append(job_id)
                else:
                    _discard_partial(settings, job_id)
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


RESEND_BATCH = 1000  # jobs sent again per round at most; the next round takes the rest


async def resend_forgotten_jobs(db: Database, settings: Settings) -> list[uuid.UUID]:
    """Jobs `queued` for longer than JOB_RESEND_AFTER_SECONDS, to send to the broker again.

    The row is the truth, the broker's message only a copy: Redis may have lost it (evicted
    under memory pressure, flushed, restored from an older file), and then the job waited
    for ever. Each one found moves its `updated_at` on, so it is sent once per period and by
    one reaper of several; a message that was not lost after all makes a second delivery,
    which finds the job claimed or finished and does nothing."""
    cutoff = utcnow() - timedelta(seconds=settings.job_resend_after_seconds)
    # Through the index of the unfinished jobs (its predicate, literally), never the table.
    forgotten = and_(text(UNFINISHED_SQL), Job.state == JobState.QUEUED, Job.updated_at < cutoff)
    async with db.session() as session:
        found = list(
            await session.scalars(
                select(Job.id).where(forgotten).order_by(Job.updated_at).limit(RESEND_BATCH)
            )
        )
        if not found:
            return []
        result = await session.execute(
            update(Job)
            .where(Job.id.in_(found), forgotten)
            .values(updated_at=utcnow())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        resent = list(result.scalars())
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
        await _fail(session, job, "failed by an operator")
    else:
        job.state, job.error, job.deliveries, job.heartbeat_at = JobState.QUEUED, None, 0, None
        job.done, job.updated_at = 0, utcnow()
        await session.commit()
    return job


async def _progress(session: AsyncSession, job: Job, done: int) -> None:
    job.done, job.updated_at = done, utcnow()
    await session.commit()


async def _fail(session: AsyncSession, job: Job, error: str, **result: Any) -> None:
    job.state, job.error, job.updated_at = JobState.FAILED, error, utcnow()
    job.checkpoint = None
    if result:
        job.result = result
    kind = job.kind  # read before the commit expires it
    await session.commit()
    metrics.JOBS_FINISHED.labels(kind, JobState.FAILED).inc()


class _OutOfTime(Exception):
    """An import reached its deadline (TASK_TIME_LIMIT less a margin) between two batches."""


async def _run_import(
    db: Database, session: AsyncSession, settings: Settings, job: Job, deadline: float
) -> None:
    """Two streaming passes over the file, each holding a batch of rows at a time: count the
    rows (the progress total), then validate them and write the valid ones, in one
    transaction with the job's success. A file with any invalid row writes nothing: its
    transaction is rolled back, and the report lists the rows. The parsing and validation
    of the next batch run in a thread while the database writes the one before: the event
    loop keeps serving requests while an import runs in the web process (no broker)."""
    path = upload_path(settings, job.id)
    if not path.exists():  # deleted when the import was refused for it: nothing to retry
        await _fail(session, job, "the uploaded file is gone: upload it again")
        return
    try:
        job.total = await asyncio.to_thread(_count_rows, path, settings.import_max_rows)
        await _progress(session, job, 0)
        rejected = await _write_rows(db, session, job, path, settings.import_max_rows, deadline)
    except csvfiles.CsvProblem as problem:
        await _roll_back(session, job)
        await _fail(session, job, str(problem))
        return
    except _OutOfTime:
        await _roll_back(session, job)
        await _fail(
            session,
            job,
            f"the import did not finish within TASK_TIME_LIMIT ({settings.task_time_limit} s): "
            "nothing was imported; import the file in smaller parts",
        )
        return
    if rejected.count:
        await _roll_back(session, job)  # the rows written before the first invalid one
        await _fail(
            session,
            job,
            f"{rejected.count} of {job.total} rows are invalid: nothing was imported",
            imported=0,
            rejected=rejected.count,
            rows=rejected.rows,
        )
        return
    await _hold_claim(session, job)
    job.state, job.done, job.updated_at = JobState.SUCCEEDED, job.total, utcnow()
    job.result = {"imported": job.total, "rejected": 0, "rows": []}
    await session.commit()  # the rows and the job's success, together or not at all


async def _roll_back(session: AsyncSession, job: Job) -> None:
    """Roll the session back and read the job again: a rollback expires what the session
    holds, and an expired attribute cannot be loaded on first access under asyncio."""
    await session.rollback()
    await session.refresh(job)


def _count_rows(path: Path, max_rows: int) -> int:
    with csvfiles.ItemCsvReader(path, max_rows) as reader:
        return reader.count()


@dataclass
class _Rejected:
    count: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_REPORTED_ROWS

    def add(self, line: int, errors: list[str]) -> None:
        self.count += 1
        if len(self.rows) < MAX_REPORTED_ROWS:
            self.rows.append({"line": line, "errors": errors})


_IMPORTED = ("id", "title", "description", "owner_id", "created_at", "updated_at")
Record = tuple[uuid.UUID, str, str | None, uuid.UUID, datetime, datetime]


@dataclass(frozen=True)
class _Batch:
    rows: int  # read from the file: 0 at its end
    records: list[Record]  # the valid ones, as the items table's rows (_IMPORTED)


class _RecordMaker:
    """The items of one import's valid rows. Their ids are stable (a second run of the same
    job could not add other rows): the job's id with its last 32 bits replaced by the row's
    line, which is as unique as the job's id and a tenth of the cost of uuid5 (3.5 µs a row,
    a third of the whole import's budget at 100,000 rows/s)."""

    def __init__(self, job: Job) -> None:
        self.base = job.id.int >> 32 << 32
        self.owner = job.owner_id
        self.now = utcnow()

    def batch(self, reader: csvfiles.ItemCsvReader, rejected: _Rejected) -> _Batch:
        rows = reader.chunk(IMPORT_BATCH_ROWS)
        records: list[Record] = []
        for row in rows:
            if row.values is None:
                rejected.add(row.line, [str(row.error)])
                continue
            try:
                data = ItemCreate.model_validate(_clean(row.values))
            except ValidationError as exc:
                rejected.add(
                    row.line,
                    [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()],
                )
                continue
            item_id = uuid.UUID(int=self.base | row.line)
            records.append((item_id, data.title, data.description, self.owner, self.now, self.now))
        return _Batch(len(rows), records)


Progress = Callable[[int], Awaitable[None]]
Write = Callable[[list[Record]], Awaitable[None]]


async def _read_rows(
    job: Job, path: Path, max_rows: int, write: Write | None, progress: Progress | None
) -> _Rejected:
    """Read and validate every row, a batch at a time; `write` the valid ones of each batch
    until the first invalid row, and report the rows read to `progress`."""
    rejected = _Rejected()
    maker = _RecordMaker(job)
    with csvfiles.ItemCsvReader(path, max_rows) as reader:
        following = asyncio.create_task(asyncio.to_thread(maker.batch, reader, rejected))
        try:
            while (batch := await following).rows:
                # One thread reads the file at a time: the next batch starts after this one.
                following = asyncio.create_task(asyncio.to_thread(maker.batch, reader, rejected))
                if write is not None and not rejected.count:
                    await write(batch.records)
                if progress is not None:
                    await progress(reader.rows_read)
        finally:
            # A batch still being read ends before the file closes (a thread is not stopped
            # by cancelling the task that waits for it).
            with contextlib.suppress(Exception):
                await following
    return rejected


async def _write_rows(
    db: Database, session: AsyncSession, job: Job, path: Path, max_rows: int, deadline: float
) -> _Rejected:
    """Validate every row and write the valid ones inside the session's transaction
    (committed, or rolled back, by the caller). On Postgres in one pass, the progress going
    through a session of its own, outside that transaction. SQLite has one writer at a
    time, which the transaction is: the rows are validated first, with the progress
    committed as it goes, then written."""
    connection = await session.connection()

    async def write(records: list[Record]) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime
        await _insert(session, records)

    if connection.dialect.name == "postgresql":

        async def report(done: int) -> None:
            await _report_progress(db, job.id, done)

        return await _read_rows(job, path, max_rows, write, report)

    async def commit_progress(done: int) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime
        await _progress(session, job, done)

    rejected = await _read_rows(job, path, max_rows, None, commit_progress)
    if not rejected.count and (await _read_rows(job, path, max_rows, write, None)).count:
        raise csvfiles.CsvProblem("the file changed while it was imported")
    return rejected


async def _insert(session: AsyncSession, records: list[Record]) -> None:
    if not records:
        return
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        # COPY (binary, through asyncpg) on the session's own connection, so inside its
        # transaction: 4 to 5 times the rows per second of a multi-row INSERT.
        driver: Any = (await connection.get_raw_connection()).driver_connection
        await driver.copy_records_to_table("items", records=records, columns=_IMPORTED)
        return
    await session.execute(
        insert(_ITEMS_TABLE), [dict(zip(_IMPORTED, record, strict=True)) for record in records]
    )


async def _report_progress(db: Database, job_id: uuid.UUID, done: int) -> None:
    async with db.session() as progress:
        await progress.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(done=done, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        await progress.commit()


def _clean(row: Mapping[str, str | None]) -> dict[str, Any]:
    description = (row.get("description") or "").strip()
    return {"title": row.get("title") or "", "description": description or None}


Position = tuple[datetime, uuid.UUID]  # (created_at, id): where an export stands


def _export_range(everybody: bool, *columns: Any) -> Select[Any]:
    """The next EXPORT_CHUNK_ROWS rows after a position, oldest first, created before the
    export began: a range of the (owner, created_at, id) index, or for a superuser of the
    index of everybody's items (EVERY_ROW_SQL)."""
    scope = text(EVERY_ROW_SQL) if everybody else _items.owner_id == bindparam("owner_id")
    position = tuple_(_items.created_at, _items.id)
    after = tuple_(bindparam("at", type_=_items.created_at.type), bindparam("at_id", type_=Uuid()))
    return (
        select(*columns)
        .where(scope, _items.created_at <= bindparam("until", type_=_items.created_at.type))
        .where(position > after)
        .order_by(_items.created_at, _items.id)
        .limit(bindparam("limit"))
    )


def _export_end(everybody: bool) -> Precompiled:
    """The last position of the next chunk: read from the index alone."""
    chunk = _export_range(everybody, _items.created_at, _items.id).subquery()
    return Precompiled(
        select(chunk.c.created_at, chunk.c.id)
        .order_by(chunk.c.created_at.desc(), chunk.c.id.desc())
        .limit(literal_column("1"))  # a constant: Precompiled binds only named parameters
    )


def _iso_sql(column: str) -> str:
    """datetime.isoformat() of an aware UTC time, in Postgres's SQL."""
    at = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    return f"replace({at}, '.000000', '') || '+00:00'"


def _export_copy_sql(everybody: bool) -> str:
    """The rows after $1, $2 up to $3, $4 (positions), formatted by Postgres as
    csvfiles.writer formats them (compared byte for byte in the tests)."""
    scope = EVERY_ROW_SQL if everybody else "owner_id = $5"
    title = csvfiles.neutralised_sql("title")
    description = csvfiles.neutralised_sql("description")
    times = f"{_iso_sql('created_at')}, {_iso_sql('updated_at')}"
    # Constants only: the values are COPY's arguments.
    columns = f"id, {title}, NULLIF({description}, ''), {times}"
    return (
        f"SELECT {columns} FROM items WHERE {scope}"  # noqa: S608
        " AND (created_at, id) > ($1, $2) AND (created_at, id) <= ($3, $4)"
        " ORDER BY created_at, id"
    )


_EXPORT_CHUNKS = {everybody: Precompiled(_export_range(everybody, *_EXPORTED))
                  for everybody in (False, True)}  # fmt: skip
_EXPORT_ENDS = {everybody: _export_end(everybody) for everybody in (False, True)}
_EXPORT_COPIES = {everybody: _export_copy_sql(everybody) for everybody in (False, True)}
_START = (datetime(1, 1, 2, tzinfo=UTC), uuid.UUID(int=0))  # before every row
_HEADER: list[object] = ["id", "title", "description", "created_at", "updated_at"]


class _ExportWriter:
    """Writes an export's chunks to its file: `write_after` appends the chunk after a
    position and returns how many rows it wrote and the chunk's last position (None at the
    end). On SQLite the rows are read and formatted in Python; the file's bytes are the
    same either way."""

    def __init__(self, session: AsyncSession, handle: BinaryIO, scope: dict[str, Any]) -> None:
        self.session = session
        self.handle = handle
        self.scope = scope  # the parameters every chunk shares: owner_id, until, limit
        self.everybody = scope["owner_id"] is None

    async def write_after(self, at: Position) -> tuple[int, Position] | None:
        rows = await _EXPORT_CHUNKS[self.everybody].all(
            self.session, at=at[0], at_id=at[1], **self.scope
        )
        if not rows:
            return None
        text_handle = io.TextIOWrapper(self.handle, encoding="utf-8", newline="")
        try:
            await asyncio.to_thread(csvfiles.writer(text_handle).write_items, rows)
            text_handle.flush()
        finally:
            text_handle.detach()  # the file stays open: it is the caller's
        return len(rows), (rows[-1][3], rows[-1][0])  # its created_at and id


class _CopyExportWriter(_ExportWriter):
    """Postgres formats the rows (COPY ... TO STDOUT), 2 to 3 times the rows per second of
    formatting them in Python: the chunk's end is read from the index first, then the rows
    up to it are copied into the file as they arrive."""

    async def write_after(self, at: Position) -> tuple[int, Position] | None:
        ends = await _EXPORT_ENDS[self.everybody].all(
            self.session, at=at[0], at_id=at[1], **self.scope
        )
        if not ends:
            return None
        end_at, end_id = ends[0]
        connection = await self.session.connection()
        driver: Any = (await connection.get_raw_connection()).driver_connection
        line_ends = csvfiles.CrlfLineEnds()

        async def append(data: bytes) -> None:
            self.handle.write(line_ends(data))

        owner = () if self.everybody else (self.scope["owner_id"],)
        status = await driver.copy_from_query(
            _EXPORT_COPIES[self.everybody], at[0], at[1], end_at, end_id, *owner,
            output=append, format="csv",
        )  # fmt: skip
        self.handle.flush()
        return int(status.rsplit(" ", 1)[1]), (end_at, end_id)  # "COPY <rows>"


@dataclass
class _ExportCheckpoint:
    """Where an export stands: rows up to `until` are its own; those up to (at, at_id) are
    in the partial file's first `size` bytes; `done` of them."""

    until: datetime
    at: datetime
    at_id: uuid.UUID
    size: int
    done: int

    def saved(self) -> dict[str, Any]:
        return {
            "until": self.until.isoformat(),
            "at": self.at.isoformat(),
            "at_id": str(self.at_id),
            "size": self.size,
            "done": self.done,
        }

    @classmethod
    def of(cls, saved: dict[str, Any] | None, partial: Path) -> _ExportCheckpoint | None:
        """The checkpoint a run committed, if its file still holds what it says."""
        if saved is None:
            return None
        try:
            found = cls(
                until=datetime.fromisoformat(saved["until"]),
                at=datetime.fromisoformat(saved["at"]),
                at_id=uuid.UUID(saved["at_id"]),
                size=int(saved["size"]),
                done=int(saved["done"]),
            )
            return found if partial.stat().st_size >= found.size else None
        except (KeyError, TypeError, ValueError, OSError):
            return None


async def _run_export(session: AsyncSession, settings: Settings, job: Job, deadline: float) -> bool:
    """The caller's items (everybody's for a superuser) that exist when the export starts,
    oldest first, a chunk at a time: each chunk is its own short query after the last row
    of the one before (keyset), so memory stays bounded and no cursor is held across the
    progress commits.

    Each progress commit is a checkpoint (the file synced to disk first): a run after a
    lost worker, or the next slice, truncates the file to it and goes on from there. At
    `deadline` the run stops at a checkpoint and returns False (to continue later); True
    once the export is complete."""
    owner = await session.get(User, job.owner_id)
    everybody = owner is not None and owner.is_superuser
    target = export_path(settings, job.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(settings, job.id)
    resumed = _ExportCheckpoint.of(job.checkpoint, partial)
    if resumed is None:
        until = utcnow()  # rows created later are not this export's: progress never passes total
        counted = select(func.count()).select_from(Item).where(Item.created_at <= until)
        scope = text(EVERY_ROW_SQL) if everybody else Item.owner_id == job.owner_id
        job.total = await session.scalar(counted.where(scope)) or 0
        at: Position = _START
        done = 0
        with partial.open("w", newline="", encoding="utf-8") as header:
            csvfiles.writer(header).writerow(_HEADER)
    else:
        until, at, done = resumed.until, (resumed.at, resumed.at_id), resumed.done
        os.truncate(partial, resumed.size)  # what a lost run wrote after its checkpoint goes
        logger.info("export resumed", extra=log_fields(job_id=str(job.id), done=done))

    postgres = (await session.connection()).dialect.name == "postgresql"
    with partial.open("ab") as handle:
        chunks = (_CopyExportWriter if postgres else _ExportWriter)(session, handle, {
            "owner_id": None if everybody else job.owner_id, "until": until,
            "limit": EXPORT_CHUNK_ROWS,
        })  # fmt: skip
        while (written := await chunks.write_after(at)) is not None:
            rows, at = written
            done += rows
            await asyncio.to_thread(_sync, handle)
            job.checkpoint = _ExportCheckpoint(
                until, at[0], at[1], os.fstat(handle.fileno()).st_size, done
            ).saved()
            await _progress(session, job, done)
            # A short chunk was the last one (or lost rows deleted meanwhile): it ends the
            # export rather than its slice.
            if rows == EXPORT_CHUNK_ROWS and time.monotonic() > deadline:
                return False
    await _hold_claim(session, job)
    os.replace(partial, target)
    # Rows deleted meanwhile were counted but not written: the total is what was written.
    job.state, job.done, job.total, job.updated_at = JobState.SUCCEEDED, done, done, utcnow()
    job.result = {"file": target.name, "rows": done}
    job.checkpoint = None
    await session.commit()
    return True


def _sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


async def record_webhook(
    db: Database, job_id: uuid.UUID, ok: bool, detail: str, give_up: bool
) -> int:
    """Count one delivery attempt; returns the number of attempts so far."""
    async with db.session() as session:
        job = await session.get(Job, job_id)
        if job is None:
            return 0
        job.webhook_attempts += 1
        job.webhook_error = None if ok else detail
        if ok:
            job.webhook_state = WebhookState.DELIVERED
        elif give_up:
            job.webhook_state = WebhookState.FAILED
        job.updated_at = utcnow()
        await session.commit()
        return job.webhook_attempts


async def webhook_event(db: Database, job_id: uuid.UUID) -> tuple[str | None, dict[str, Any]]:
    """(callback URL, event) for a finished job; no URL when nothing is to be sent."""
    async with db.session() as session:
        job = await session.get(Job, job_id)
        if job is None or job.callback_url is None or job.state not in FINISHED:
            return None, {}
        if job.webhook_state.finished:
            return None, {}
        event = {
            "type": f"job.{job.state}",
            "job": JobPublic.of(job).model_dump(mode="json"),
        }
        return job.callback_url, event


async def attempt_webhook(
    db: Database, settings: Settings, job_id: uuid.UUID, attempt: int
) -> bool:
    """One delivery attempt of a finished job's event; True when another should follow."""
    url, event = await webhook_event(db, job_id)
    if url is None:
        return False
    message_id = f"msg_{job_id.hex}_{event['type'].removeprefix('job.')}"  # same on retries
    delivery = await asyncio.to_thread(webhooks.deliver, settings, url, message_id, event)
    give_up = not delivery.ok and (not delivery.retry or attempt >= settings.webhook_max_attempts)
    await record_webhook(db, job_id, delivery.ok, delivery.detail, give_up)
    if not delivery.ok:
        logger.warning(
            "webhook delivery failed",
            extra=log_fields(
                job_id=str(job_id), attempt=attempt, detail=delivery.detail, final=give_up
            ),
        )
    return not (delivery.ok or give_up)
