"""The jobs' metrics the alert rules read (monitoring/prometheus/rules): how long the oldest
job of each unfinished state has waited, the stalest heartbeat, the jobs delivered again;
with an injected clock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.states import JobKind, JobState
from app.db.models import Job
from app.db.session import Database
from app.main import create_app
from app.services import jobs
from tests.helpers import Headers, make_settings

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _add_jobs(settings: Settings, owner: str) -> None:
    """(state, minutes since its last change, heartbeat minutes ago, deliveries)"""
    rows = [
        (JobState.QUEUED, 3, None, 0),
        (JobState.QUEUED, 12, None, 2),  # the oldest queued: 12 minutes, delivered twice
        (JobState.RUNNING, 30, 1, 1),
        (JobState.RUNNING, 5, 7, 3),  # the stalest heartbeat: 7 minutes
        (JobState.RUNNING, 2, None, 1),  # claimed, no heartbeat yet: its change counts
        (JobState.SUCCEEDED, 600, 600, 5),  # finished: none of this counts
        (JobState.FAILED, 900, None, 3),
    ]

    async def add() -> None:
        db = Database(settings)
        try:
            async with db.session() as session:
                for state, changed, beat, deliveries in rows:
                    session.add(Job(
                        id=uuid.uuid4(), kind=JobKind.EXPORT, owner_id=uuid.UUID(owner),
                        state=state, deliveries=deliveries,
                        heartbeat_at=None if beat is None else NOW - timedelta(minutes=beat),
                        created_at=NOW - timedelta(hours=1),
                        updated_at=NOW - timedelta(minutes=changed),
                    ))  # fmt: skip
                await session.commit()
        finally:
            await db.dispose()

    asyncio.run(add())


def _report(settings: Settings) -> jobs.QueueReport | None:
    async def read() -> jobs.QueueReport | None:
        db = Database(settings)
        try:
            return await jobs.queue_report(db, NOW)
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_the_queue_report_reads_the_unfinished_jobs(
    client: TestClient, make_user, settings: Settings
) -> None:
    alice: Headers = make_user("alice")
    assert _report(settings) == jobs.QueueReport(
        counts={JobState.QUEUED: 0, JobState.RUNNING: 0},
        oldest_seconds={JobState.QUEUED: 0.0, JobState.RUNNING: 0.0},
        heartbeat_age_seconds=0.0,
        redelivered=0,
    )
    _add_jobs(settings, client.get("/api/v1/users/me", headers=alice).json()["id"])
    assert _report(settings) == jobs.QueueReport(
        counts={JobState.QUEUED: 2, JobState.RUNNING: 3},
        oldest_seconds={JobState.QUEUED: 720.0, JobState.RUNNING: 1800.0},
        heartbeat_age_seconds=420.0,
        redelivered=2,
    )


def test_the_queue_report_is_a_metric(
    client: TestClient, make_user, settings: Settings, tmp_path: Path
) -> None:
    alice: Headers = make_user("alice")
    _add_jobs(settings, client.get("/api/v1/users/me", headers=alice).json()["id"])
    operator = make_settings(tmp_path, settings.database_url, metrics_token="m" * 32)
    with TestClient(create_app(operator)) as metrics_client:
        text = metrics_client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32}).text
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
             if line.startswith("jobs")}  # fmt: skip
    assert lines['jobs{state="queued"}'] == 2
    assert lines['jobs{state="running"}'] == 3
    assert lines["jobs_redelivered"] == 2
    # /metrics measures against the real clock.
    waited = (datetime.now(UTC) - (NOW - timedelta(minutes=12))).total_seconds()
    assert waited - 60 < lines['jobs_oldest_age_seconds{state="queued"}'] <= waited + 60
    beat = (datetime.now(UTC) - (NOW - timedelta(minutes=7))).total_seconds()
    assert beat - 60 < lines["jobs_heartbeat_age_seconds"] <= beat + 60
