"""Job payloads."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.states import JobKind, JobState, WebhookState
from app.schemas.common import CallbackUrl, Page

if TYPE_CHECKING:
    from app.db.models import Job


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callback_url: CallbackUrl | None = Field(
        None, description="Where the job's Standard Webhooks event is POSTed when it ends."
    )


class Progress(BaseModel):
    done: int
    total: int


class WebhookStatus(BaseModel):
    state: WebhookState
    attempts: int
    error: str | None


class JobPublic(BaseModel):
    id: uuid.UUID
    kind: JobKind
    state: JobState
    progress: Progress
    result: dict[str, Any] | None
    error: str | None
    callback_url: str | None
    webhook: WebhookStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            progress=Progress(done=job.done, total=job.total),
            result=job.result,
            error=job.error,
            callback_url=job.callback_url,
            webhook=WebhookStatus(
                state=job.webhook_state, attempts=job.webhook_attempts, error=job.webhook_error
            ),
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class JobPage(Page[JobPublic]):
    pass
