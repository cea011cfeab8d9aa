"""Retention: nothing the jobs leave behind grows without bound. The jobs' files are named
here (`upload_path`, `export_path`), beside what deletes them.

- A finished job (succeeded or failed) is deleted JOB_RETENTION_DAYS after it ended, with its
  files (an export's CSV, an import's upload), by `sweep`; a user may delete one sooner
  (`delete_job`, in app/services/jobs/service.py).
- An import's upload is deleted as soon as the import succeeds or is refused for its content
  (app/services/jobs/runner.py); one that failed otherwise stays for a retry until the job expires.
- A password reset link (app/services/passwords.py) is deleted once it has expired; a used
  one goes at once, with the other links of its user.
- A file in the uploads or storage folder without a job (its job was deleted while the file
  was written, or a run died half-way and left a `.partial`) is deleted by `sweep` once it has
  not changed for ORPHAN_GRACE: a file being written changes all the time.

The sweep runs in every worker every SWEEP_INTERVAL_SECONDS (and in the web process when it
runs the jobs itself); on Postgres an advisory lock lets one run at a time in the whole stack,
and the others skip that round. Each deletion is idempotent, so two sweeps at once (SQLite,
or a lock lost with its connection) do no harm either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, text

from app.core.config import Settings
from app.core.logging import describe_error, log_fields
from app.db.base import utcnow
from app.db.models import FINISHED_SQL, Job, PasswordReset
from app.db.session import Database

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 3600.0
FIRST_SWEEP_SECONDS = 60.0  # in a process that runs the jobs itself
SWEEP_BATCH = 500  # jobs deleted per statement and transaction
ORPHAN_GRACE = timedelta(hours=1)
# pg_try_advisory_lock's key for "a sweep runs": any constant the service uses for nothing else.
_SWEEP_LOCK = 0x5348_4950_5357  # "SHIPSW"


@dataclass(frozen=True)
class Swept:
    jobs: int  # finished jobs deleted with their files
    orphans: int  # files deleted that had no job
    resets: int = 0  # expired password reset links deleted


def upload_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return Path(settings.uploads_dir) / f"{job_id}.csv"


def export_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return Path(settings.storage_dir) / f"{job_id}.csv"


def job_files(settings: Settings, job_id: uuid.UUID) -> list[Path]:
    """Every file a job may have: its upload, its export and the export being written."""
    export = export_path(settings, job_id)
    return [upload_path(settings, job_id), export, export.with_suffix(".csv.partial")]


def remove_files(settings: Settings, job_id: uuid.UUID) -> None:
    for path in job_files(settings, job_id):
        path.unlink(missing_ok=True)


async def sweep(db: Database, settings: Settings, now: datetime | None = None) -> Swept | None:
    """Delete the expired jobs and their files, then the files without a job. None when
    another sweep holds the lock (Postgres)."""
    now = now or utcnow()
    async with db.engine.connect() as lock:
        postgres = lock.dialect.name == "postgresql"
        if postgres:
            if not await lock.scalar(text(f"SELECT pg_try_advisory_lock({_SWEEP_LOCK})")):
                return None
            await lock.commit()  # the lock is the session's: it outlives this transaction
        try:
            jobs = await _expired_jobs(
                db, settings, now - timedelta(days=settings.job_retention_days)
            )
            orphans = await _orphans(db, settings, now)
            resets = await _expired_resets(db, now)
        finally:
            if postgres:
                await lock.execute(text(f"SELECT pg_advisory_unlock({_SWEEP_LOCK})"))
                await lock.commit()
    if jobs or orphans or resets:
        logger.info(
            "retention sweep",
            extra=log_fields(jobs=jobs, orphan_files=orphans, password_resets=resets),
        )
    return Swept(jobs=jobs, orphans=orphans, resets=resets)


async def _expired_resets(db: Database, now: datetime) -> int:
    """Expired password reset links, through their index by expiry. Each account holds a
    few at most (PASSWORD_RESET_REQUESTS_PER_ADDRESS): one statement deletes them all."""
    async with db.session() as session:
        result = await session.execute(delete(PasswordReset).where(PasswordReset.expires_at <= now))
        await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


async def _expired_jobs(db: Database, settings: Settings, ended_before: datetime) -> int:
    """Finished jobs that ended before the cutoff, a batch at a time through the index of
    the finished jobs by end (its predicate, literally: a generic plan could not prove it)."""
    deleted = 0
    while True:
        async with db.session() as session:
            ids = list(
                await session.scalars(
                    select(Job.id)
                    .where(text(FINISHED_SQL), Job.updated_at < ended_before)
                    .order_by(Job.updated_at)
                    .limit(SWEEP_BATCH)
                )
            )
            if not ids:
                return deleted
            await session.execute(delete(Job).where(Job.id.in_(ids)))
            await session.commit()
        for job_id in ids:  # rows first: a file left by a crash here is an orphan, swept later
            remove_files(settings, job_id)
        deleted += len(ids)


def _candidates(settings: Settings, now: datetime) -> Iterator[tuple[Path, uuid.UUID | None]]:
    """Files of the two folders unchanged for ORPHAN_GRACE: (path, the job id its name holds,
    or None for a name no job has, such as an abandoned `.partial`)."""
    cutoff = (now - ORPHAN_GRACE).timestamp()
    for folder in {Path(settings.uploads_dir), Path(settings.storage_dir)}:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            name = entry.name
            job_id = None
            if name.endswith(".csv") and not name.startswith("."):
                try:
                    job_id = uuid.UUID(name.removesuffix(".csv"))
                except ValueError:
                    continue  # not a name the service writes: left alone
            elif not name.endswith(".partial"):
                continue
            yield Path(entry.path), job_id


async def _orphans(db: Database, settings: Settings, now: datetime) -> int:
    removed = 0
    batch: list[tuple[Path, uuid.UUID | None]] = []
    for candidate in _candidates(settings, now):
        batch.append(candidate)
        if len(batch) >= SWEEP_BATCH:
            removed += await _remove_orphans(db, batch)
            batch = []
    return removed + (await _remove_orphans(db, batch) if batch else 0)


async def _remove_orphans(db: Database, batch: list[tuple[Path, uuid.UUID | None]]) -> int:
    ids = [job_id for _, job_id in batch if job_id is not None]
    async with db.session() as session:
        known = set(await session.scalars(select(Job.id).where(Job.id.in_(ids)))) if ids else set()
    removed = 0
    for path, job_id in batch:
        if job_id is not None and job_id in known:
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


async def sweep_periodically(db: Database, settings: Settings) -> None:
    """The sweep of a process that runs the jobs itself (no broker, no worker): a minute
    after start, then every SWEEP_INTERVAL_SECONDS, until cancelled."""
    await asyncio.sleep(FIRST_SWEEP_SECONDS)
    while True:
        try:
            await sweep(db, settings)
        except Exception as exc:  # the database is down: the next round tries again
            logger.warning("retention sweep failed", extra=log_fields(error=describe_error(exc)))
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


def storage_in_use(settings: Settings) -> dict[str, tuple[int, int]]:
    """(files, bytes) in the uploads and the storage folder, for the metrics."""
    used = {}
    for name, folder in (("uploads", settings.uploads_dir), ("exports", settings.storage_dir)):
        files = size = 0
        try:
            for entry in os.scandir(folder):
                try:
                    if entry.is_file(follow_symlinks=False):
                        files, size = files + 1, size + entry.stat().st_size
                except FileNotFoundError:
                    continue
        except FileNotFoundError:
            pass
        used[name] = (files, size)
    return used
