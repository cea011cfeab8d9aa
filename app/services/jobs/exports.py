"""An export's run: the caller's items into a CSV file, a chunk at a time, resumable.

The file is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.logging import log_fields
from app.core.states import JobState
from app.db.base import utcnow
from app.db.models import Job, User
from app.services import csvfiles
from app.services.jobs.claims import hold_claim, progress
from app.services.jobs.repository import JobRepository, Position
from app.services.retention import export_path

logger = logging.getLogger(__name__)

EXPORT_CHUNK_ROWS = 10_000  # rows exported at a time
_START = (datetime(1, 1, 2, tzinfo=UTC), uuid.UUID(int=0))  # before every row
_HEADER: list[object] = ["id", "title", "description", "created_at", "updated_at"]


def partial_path(settings: Settings, job_id: uuid.UUID) -> Path:
    """The export being written: renamed to its final name when complete."""
    return export_path(settings, job_id).with_suffix(".csv.partial")


def discard_partial(settings: Settings, job_id: uuid.UUID) -> None:
    """An export that has failed for good leaves nothing half-written in storage."""
    partial_path(settings, job_id).unlink(missing_ok=True)


class _ExportWriter:
    """Writes an export's chunks to its file: `write_after` appends the chunk after a
    position and returns how many rows it wrote and the chunk's last position (None at the
    end). On SQLite the rows are read and formatted in Python; the file's bytes are the
    same either way."""

    def __init__(
        self, repository: JobRepository, handle: BinaryIO, owner: uuid.UUID | None, until: datetime
    ) -> None:
        self.repository = repository
        self.handle = handle
        self.owner = owner  # None: everybody's items
        self.until = until

    async def write_after(self, at: Position) -> tuple[int, Position] | None:
        rows = await self.repository.export_chunk(self.owner, self.until, at, EXPORT_CHUNK_ROWS)
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
        end = await self.repository.export_end(self.owner, self.until, at, EXPORT_CHUNK_ROWS)
        if end is None:
            return None
        line_ends = csvfiles.CrlfLineEnds()

        async def append(data: bytes) -> None:
            self.handle.write(line_ends(data))

        rows = await self.repository.copy_export(self.owner, at, end, append)
        self.handle.flush()
        return rows, end


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


async def run_export(session: AsyncSession, settings: Settings, job: Job, deadline: float) -> bool:
    """The caller's items (everybody's for a superuser) that exist when the export starts,
    oldest first, a chunk at a time: each chunk is its own short query after the last row
    of the one before (keyset), so memory stays bounded and no cursor is held across the
    progress commits.

    Each progress commit is a checkpoint (the file synced to disk first): a run after a
    lost worker, or the next slice, truncates the file to it and goes on from there. At
    `deadline` the run stops at a checkpoint and returns False (to continue later); True
    once the export is complete."""
    repository = JobRepository(session)
    user = await session.get(User, job.owner_id)
    owner = None if user is not None and user.is_superuser else job.owner_id
    target = export_path(settings, job.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(settings, job.id)
    resumed = _ExportCheckpoint.of(job.checkpoint, partial)
    if resumed is None:
        until = utcnow()  # rows created later are not this export's: progress never passes total
        job.total = await repository.count_items(owner, until)
        at: Position = _START
        done = 0
        with partial.open("w", newline="", encoding="utf-8") as header:
            csvfiles.writer(header).writerow(_HEADER)
    else:
        until, at, done = resumed.until, (resumed.at, resumed.at_id), resumed.done
        os.truncate(partial, resumed.size)  # what a lost run wrote after its checkpoint goes
        logger.info("export resumed", extra=log_fields(job_id=str(job.id), done=done))

    writer = _CopyExportWriter if await repository.postgres() else _ExportWriter
    with partial.open("ab") as handle:
        chunks = writer(repository, handle, owner, until)
        while (written := await chunks.write_after(at)) is not None:
            rows, at = written
            done += rows
            await asyncio.to_thread(_sync, handle)
            job.checkpoint = _ExportCheckpoint(
                until, at[0], at[1], os.fstat(handle.fileno()).st_size, done
            ).saved()
            await progress(session, job, done)
            # A short chunk was the last one (or lost rows deleted meanwhile): it ends the
            # export rather than its slice.
            if rows == EXPORT_CHUNK_ROWS and time.monotonic() > deadline:
                return False
    await hold_claim(session, job)
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
