"""The states and kinds of the domain, one enum per concept, shared by every layer.

StrEnum members are their values: they compare equal to the strings stored in the
database and written in JSON, and the API schema lists them.
"""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    IMPORT = "import"  # CSV rows into items
    EXPORT = "export"  # items into a CSV file


class JobState(StrEnum):
    """queued -> running -> succeeded | failed (running -> queued when a worker was lost)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class WebhookState(StrEnum):
    """The delivery of a job's webhook: none (no callback URL) or pending -> delivered | failed."""

    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (WebhookState.DELIVERED, WebhookState.FAILED)


class TaskOutcome(StrEnum):
    """How one run of a worker task ended (the `outcome` label of worker_tasks_total)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # raised, or rejected
    RETRIED = "retried"  # asked to run again later (a held job, a webhook to retry)

    @classmethod
    def of(cls, celery_state: str | None) -> TaskOutcome:
        """From the state Celery reports when a run ends (SUCCESS, RETRY, FAILURE, ...)."""
        return {"SUCCESS": cls.SUCCEEDED, "RETRY": cls.RETRIED}.get(celery_state or "", cls.FAILED)
