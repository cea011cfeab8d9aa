"""CSV import and export jobs. Each run is idempotent: a redelivered job never writes twice.

An import validates every row first and writes nothing unless all rows are valid; the
rows and the job's "succeeded" state are committed in one transaction, so a worker
killed mid-import leaves no rows behind, and a redelivered import after success is a
no-op. An export writes to a temporary file and renames it into place.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.logging import log_fields
from app.db.base import utcnow
from app.db.models import Item, Job, User
from app.db.session import Database
from app.schemas.items import ItemCreate
from app.schemas.jobs import JobPublic
from app.services import webhooks
from app.services.access import Actor, get_owned
from app.services.cache import ReadCache
from app.services.errors import Conflict, NotFound

logger = logging.getLogger(__name__)

FINISHED = ("succeeded", "failed")
CSV_COLUMNS = ("title", "description")
PROGRESS_EVERY = 500
MAX_REPORTED_ROWS = 100  # a report of the first rejected rows; the count says how many


def upload_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return Path(settings.uploads_dir) / f"{job_id}.csv"


def export_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return Path(settings.storage_dir) / f"{job_id}.csv"


async def create_job(
    session: AsyncSession, user: Actor, kind: str, callback_url: str | None
) -> Job:
    job = Job(
        kind=kind,
        owner_id=user.id,
        state="queued",
        done=0,
        total=0,
        callback_url=callback_url,
        webhook_state="pending" if callback_url else "none",
        webhook_attempts=0,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(job)
    await session.commit()
    return job


async def get_job(session: AsyncSession, user: Actor, job_id: uuid.UUID) -> Job:
    return await get_owned(session, user, Job, job_id, "job")


def export_file(settings: Settings, job: Job) -> Path:
    if job.kind != "export":
        raise NotFound("only export jobs have a download")
    if job.state != "succeeded":
        raise Conflict(f"the export is {job.state}, not finished")
    path = export_path(settings, job.id)
    if not path.exists():
        raise NotFound("the export file is gone")
    return path


async def run_job(db: Database, settings: Settings, cache: ReadCache, job_id: uuid.UUID) -> None:
    """Run one job to its end. Safe to call again for the same job (redelivery)."""
    async with db.session() as session:
        job = await session.get(Job, job_id)
        if job is None or job.state in FINISHED:
            return  # unknown, or already done by an earlier delivery
        job.state = "running"
        job.updated_at = utcnow()
        await session.commit()
        try:
            if job.kind == "import":
                await _run_import(session, settings, job)
            else:
                await _run_export(session, settings, job)
        except Exception as exc:
            await session.rollback()
            job.state, job.error, job.updated_at = (
                "failed",
                f"{type(exc).__name__}: {exc}",
                utcnow(),
            )
            await session.commit()
            logger.exception("job failed", extra=log_fields(job_id=str(job_id)))
            return
        if job.kind == "import" and job.state == "succeeded":
            await cache.invalidate(job.owner_id)
        logger.info(
            "job finished",
            extra=log_fields(job_id=str(job_id), kind=job.kind, state=job.state, rows=job.total),
        )


def _parse(text: str) -> tuple[list[tuple[int, dict[str, str]]], str | None]:
    """(line number, row) pairs, or an error about the file as a whole."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "title" not in header:
        return [], "the CSV header must have a `title` column (and optionally `description`)"
    unknown = sorted(set(header) - set(CSV_COLUMNS))
    if unknown:
        return [], f"unknown CSV columns: {', '.join(unknown)}"
    reader.fieldnames = header
    rows = [(reader.line_num, row) for row in reader]
    return rows, None


async def _progress(session: AsyncSession, job: Job, done: int) -> None:
    job.done, job.updated_at = done, utcnow()
    await session.commit()


async def _run_import(session: AsyncSession, settings: Settings, job: Job) -> None:
    try:
        text = upload_path(settings, job.id).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        job.state, job.error = "failed", "the file is not UTF-8 text"
        await session.commit()
        return
    rows, problem = _parse(text)
    if problem:
        job.state, job.error, job.updated_at = "failed", problem, utcnow()
        await session.commit()
        return
    job.total = len(rows)
    valid: list[tuple[int, ItemCreate]] = []
    rejected: list[dict[str, Any]] = []
    for index, (line, row) in enumerate(rows, start=1):
        try:
            valid.append((line, ItemCreate.model_validate(_clean(row))))
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            rejected.append({"line": line, "errors": errors})
        if index % PROGRESS_EVERY == 0:
            await _progress(session, job, index)
    if rejected:
        job.state, job.done, job.updated_at = "failed", len(rows), utcnow()
        job.error = f"{len(rejected)} of {len(rows)} rows are invalid: nothing was imported"
        job.result = {
            "imported": 0,
            "rejected": len(rejected),
            "rows": rejected[:MAX_REPORTED_ROWS],
        }
        await session.commit()
        return
    now = utcnow()
    for line, data in valid:
        # Stable ids: a second run of the same job could not add different rows.
        item_id = uuid.uuid5(job.id, str(line))
        session.add(
            Item(
                id=item_id,
                title=data.title,
                description=data.description,
                owner_id=job.owner_id,
                created_at=now,
                updated_at=now,
            )
        )
    job.state, job.done, job.updated_at = "succeeded", len(rows), utcnow()
    job.result = {"imported": len(valid), "rejected": 0, "rows": []}
    await session.commit()  # the rows and the job's success, together or not at all


def _clean(row: Mapping[str, str | None]) -> dict[str, Any]:
    description = (row.get("description") or "").strip()
    return {"title": row.get("title") or "", "description": description or None}


async def _run_export(session: AsyncSession, settings: Settings, job: Job) -> None:
    owner = await session.get(User, job.owner_id)
    query = select(Item).order_by(Item.created_at, Item.id)
    if owner is None or not owner.is_superuser:
        query = query.where(Item.owner_id == job.owner_id)
    items = list(await session.scalars(query))
    job.total = len(items)
    target = export_path(settings, job.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".csv.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "description", "created_at", "updated_at"])
        for index, item in enumerate(items, start=1):
            writer.writerow(
                [item.id, item.title, item.description or "", item.created_at.isoformat(),
                 item.updated_at.isoformat()]
            )  # fmt: skip
            if index % PROGRESS_EVERY == 0:
                await _progress(session, job, index)
    os.replace(partial, target)
    job.state, job.done, job.updated_at = "succeeded", len(items), utcnow()
    job.result = {"file": target.name, "rows": len(items)}
    await session.commit()


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
            job.webhook_state = "delivered"
        elif give_up:
            job.webhook_state = "failed"
        job.updated_at = utcnow()
        await session.commit()
        return job.webhook_attempts


async def webhook_event(db: Database, job_id: uuid.UUID) -> tuple[str | None, dict[str, Any]]:
    """(callback URL, event) for a finished job; no URL when nothing is to be sent."""
    async with db.session() as session:
        job = await session.get(Job, job_id)
        if job is None or job.callback_url is None or job.state not in FINISHED:
            return None, {}
        if job.webhook_state in ("delivered", "failed"):
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
    delivery = await asyncio.to_thread(webhooks.deliver, settings, url, event)
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
