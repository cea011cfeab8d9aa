"""Without a broker (`make run`) the web process is the worker: a job it accepted is run even
if the process stopped before running it, or while running it."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.config import Settings
from app.core.states import JobState
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import Database
from app.main import create_app
from app.services.access import Principal
from app.services.jobs import create_import
from tests.docker_utils import wait_until
from tests.helpers import Headers, count_items


def _left_behind(settings: Settings, owner: uuid.UUID, state: JobState) -> str:
    """An import accepted by a process that stopped: `queued` and never sent anywhere, or
    `running` with a heartbeat that stopped 10 minutes ago."""

    async def run() -> str:
        db = Database(settings)
        try:
            async with db.session() as session:
                job = await create_import(
                    session,
                    settings,
                    Principal(id=owner, is_active=True, is_superuser=True, credential_version=0),
                    io.BytesIO(b"title\nleft behind\n"),
                    None,
                )
                long_ago = utcnow() - timedelta(minutes=10)
                await session.execute(
                    update(Job)
                    .where(Job.id == job.id)
                    .values(
                        state=state,
                        updated_at=long_ago,
                        heartbeat_at=long_ago if state == JobState.RUNNING else None,
                        deliveries=1 if state == JobState.RUNNING else 0,
                    )
                )
                await session.commit()
                return str(job.id)
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_jobs_a_stopped_process_left_behind_run_when_it_starts_again(
    client: TestClient, admin_headers: Headers, settings: Settings
) -> None:
    assert settings.jobs_run_in_process
    owner = uuid.UUID(client.get("/api/v1/users/me", headers=admin_headers).json()["id"])
    queued = _left_behind(settings, owner, JobState.QUEUED)
    running = _left_behind(settings, owner, JobState.RUNNING)
    again = settings.model_copy(
        update={"job_resend_after_seconds": 60.0, "job_heartbeat_seconds": 0.5}
    )
    with TestClient(create_app(again)) as restarted:

        def state(job_id: str) -> str:
            return str(
                restarted.get(f"/api/v1/jobs/{job_id}", headers=admin_headers).json()["state"]
            )

        wait_until(
            lambda: (state(queued), state(running)) == ("succeeded", "succeeded"),
            60,
            "both jobs to finish",
        )
    assert count_items(settings) == 2
