"""The webhook of a finished job: its event, one delivery attempt, and the attempts' record."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from app.core.config import Settings
from app.core.logging import log_fields
from app.core.states import WebhookState
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import Database
from app.schemas.jobs import JobPublic
from app.services import webhooks

logger = logging.getLogger(__name__)


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
        if job is None or job.callback_url is None or not job.state.finished:
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
