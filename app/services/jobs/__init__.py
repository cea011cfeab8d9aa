"""CSV import and export jobs, one module per concern; this package's public API is below.

- `service`: what the API and the web UI ask of jobs, and the report of the queue;
- `runner`: one delivery of a job, run to its end (`imports` and `exports` for each kind);
- `claims`: a run's hold on its job, its heartbeat, and how it records its progress;
- `reaper`: the jobs whose run or broker message was lost, handed on again;
- `deliveries`: the webhook of a finished job;
- `repository`: every statement of the feature, by name. No other module holds SQL.
"""

from app.services.jobs.deliveries import attempt_webhook, record_webhook, webhook_event
from app.services.jobs.reaper import jobs_to_send, reap_stalled_jobs, resend_forgotten_jobs
from app.services.jobs.runner import Outcome, run_job
from app.services.jobs.service import (
    JobAction,
    QueueReport,
    allowed_actions,
    create_import,
    create_job,
    delete_job,
    discard_job,
    get_job,
    list_jobs,
    open_export,
    queue_report,
    set_job_state,
)

__all__ = [
    "JobAction",
    "Outcome",
    "QueueReport",
    "allowed_actions",
    "attempt_webhook",
    "create_import",
    "create_job",
    "delete_job",
    "discard_job",
    "get_job",
    "jobs_to_send",
    "list_jobs",
    "open_export",
    "queue_report",
    "reap_stalled_jobs",
    "record_webhook",
    "resend_forgotten_jobs",
    "run_job",
    "set_job_state",
    "webhook_event",
]
