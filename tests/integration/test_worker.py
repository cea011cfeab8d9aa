"""A real Celery worker process against the Redis broker and Postgres."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.docker_utils import ROOT, wait_until
from tests.factories import PASSWORD, create_user
from tests.helpers import Headers, count_items, login, make_settings
from tests.integration.conftest import Services, pause, unpause
from tests.server import largest_import, memory
from tests.unit.test_jobs import csv_bytes


@pytest.fixture
def worker_settings(database: str, services: Services, tmp_path: Path) -> Settings:
    # The broker's queue is shared by the tests of a session: one worker at a time uses it.
    return make_settings(tmp_path, database, redis_url=services.redis_url)


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "UPLOADS_DIR": settings.uploads_dir,
        "STORAGE_DIR": settings.storage_dir,
        "WEBHOOK_BACKOFF_SECONDS": "0",
        "LOG_LEVEL": "info",
    }


@contextlib.contextmanager
def worker_process(
    settings: Settings, tmp_path: Path, **env: str
) -> Iterator[subprocess.Popen[str]]:
    """`python -m app worker` (one pool process) until the test ends, warm-shut-down then."""
    path = tmp_path / f"worker-{len(list(tmp_path.glob('worker-*.log')))}.log"
    log = path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--concurrency", "1"],
        cwd=ROOT, env={**_env(settings), **env}, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: "ready." in path.read_text(), 60, "the worker to start")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        # Shown by pytest only when the test failed: what the worker did.
        print(
            f"--- {path.name} (last lines) ---\n" + "\n".join(path.read_text().splitlines()[-80:])
        )


@pytest.fixture
def worker(worker_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    with worker_process(worker_settings, tmp_path) as process:
        yield process


@pytest.fixture
def api(worker_settings: Settings) -> Iterator[TestClient]:
    assert not worker_settings.jobs_run_in_process
    with TestClient(create_app(worker_settings)) as client:
        yield client


@pytest.fixture
def alice(api: TestClient, make_user) -> Headers:
    return make_user("alice")


@pytest.fixture
def make_user(api: TestClient, worker_settings: Settings) -> Callable[[str], Headers]:
    def make(username: str) -> Headers:
        create_user(worker_settings, username)
        return login(api, username, PASSWORD)

    return make


def _job(api: TestClient, headers: Headers, job_id: str) -> dict[str, Any]:
    return api.get(f"/api/v1/jobs/{job_id}", headers=headers).json()


def _finished(
    api: TestClient, headers: Headers, job_id: str, timeout: float = 90
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        found = _job(api, headers, job_id)
        return found if found["state"] in ("succeeded", "failed") else None

    return wait_until(
        finished,
        timeout,
        f"job {job_id} to finish",
    )


def test_a_job_runs_on_the_worker(api: TestClient, alice: Headers, worker) -> None:
    accepted = api.post(
        "/api/v1/items/import",
        files={"file": ("i.csv", csv_bytes([["from the worker", ""]]), "text/csv")},
        headers=alice,
    )
    assert accepted.status_code == 202
    assert accepted.json()["state"] == "queued"  # the API returned before the job ran
    done = _finished(api, alice, accepted.json()["id"])
    assert done["state"] == "succeeded"
    assert api.get("/api/v1/items", headers=alice).json()["items"][0]["title"] == "from the worker"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _start_import(api: TestClient, headers: Headers, content: bytes) -> str:
    """Upload `content`; its job's id once a worker is running it."""
    job_id: str = api.post(
        "/api/v1/items/import", files={"file": ("big.csv", content, "text/csv")}, headers=headers
    ).json()["id"]
    wait_until(
        lambda: _job(api, headers, job_id)["state"] == "running", 60, "the import to start",
        interval=0.05,
    )  # fmt: skip
    return job_id


def test_a_job_whose_worker_is_killed_is_redelivered_and_done_once(
    api: TestClient, alice: Headers, worker, worker_settings: Settings
) -> None:
    rows = 60_000
    content = csv_bytes([[f"row {n}", "x"] for n in range(rows)])
    job_id = _start_import(api, alice, content)
    [child] = _children(worker.pid)  # the pool process running the job (concurrency 1)
    os.kill(child, signal.SIGKILL)
    started = time.monotonic()
    done = _finished(api, alice, job_id, timeout=180)
    print(f"\nredelivered and finished {time.monotonic() - started:.1f}s after SIGKILL")
    assert done["state"] == "succeeded", done
    assert count_items(worker_settings) == rows
    assert done["result"]["imported"] == rows


def _seed_items(settings: Settings, owner: str, rows: int) -> None:
    """`rows` items of `owner`, 1,000 to a created_at (as the rows of one import)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))
        try:
            await connection.execute(
                f"""INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
                    SELECT gen_random_uuid(), 'row ' || n, NULL, '{owner}',
                           now() - (n / 1000) * interval '1 second', now()
                    FROM generate_series(1, {rows}) AS n"""
            )
        finally:
            await connection.close()

    asyncio.run(run())


def test_an_export_whose_worker_is_killed_resumes_where_it_stopped(
    api: TestClient, alice: Headers, worker, worker_settings: Settings, tmp_path: Path
) -> None:
    """The fault: a worker killed 80,000 rows into a 256,000-row export made the next run
    start from zero; with the time limit it ended `failed` as "the worker was lost 3 times"
    and left its partial file. Now the next run goes on from the last checkpoint."""
    rows = 400_000
    _seed_items(worker_settings, api.get("/api/v1/users/me", headers=alice).json()["id"], rows)
    job_id = api.post("/api/v1/items/export", headers=alice).json()["id"]
    wait_until(
        lambda: _job(api, alice, job_id)["progress"]["done"] >= 20_000, 60,
        "the export to pass a checkpoint", interval=0.02,
    )  # fmt: skip
    [child] = _children(worker.pid)
    os.kill(child, signal.SIGKILL)
    done = _finished(api, alice, job_id, timeout=180)
    assert done["state"] == "succeeded", done
    assert done["progress"] == {"done": rows, "total": rows}
    exported = (Path(worker_settings.storage_dir) / f"{job_id}.csv").read_text().splitlines()
    assert len(exported) == rows + 1
    assert len({line.split(",", 1)[0] for line in exported[1:]}) == rows  # each row once
    assert not list(Path(worker_settings.storage_dir).glob("*.partial"))
    resumed = [
        json.loads(line)
        for log in tmp_path.glob("worker-*.log")
        for line in log.read_text().splitlines()
        if '"message":"export resumed"' in line
    ]
    assert len(resumed) == 1, resumed
    assert resumed[0]["done"] >= 20_000, resumed
    print(f"\nresumed after {resumed[0]['done']:,} of {rows:,} rows")


def test_redis_down_reads_still_come_from_the_database(
    api: TestClient, alice: Headers, services: Services
) -> None:
    item = api.post("/api/v1/items", json={"title": "durable"}, headers=alice).json()
    pause(services.redis)
    try:
        assert api.get(f"/api/v1/items/{item['id']}", headers=alice).json()["title"] == "durable"
        assert len(api.get("/api/v1/items", headers=alice).json()["items"]) == 1
        ready = api.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["status"] == "error"
    finally:
        unpause(services.redis)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(largest_import(), id="100,000 rows of 4.2 MB"),
        pytest.param(b"title\n" + b"x\n" * 1_000_000, id="IMPORT_MAX_ROWS: 1,000,000 rows"),
    ],
)
def test_the_largest_import_runs_in_bounded_memory_on_the_worker(
    api: TestClient, alice: Headers, worker, content: bytes, worker_settings: Settings
) -> None:
    """The attack: a 100k-row CSV OOM-killed the worker (512 MiB); 40k rows peaked at
    304 MiB. The largest allowed file must stay far below that, with progress moving."""
    [child] = _children(worker.pid)  # the pool process that runs the job (concurrency 1)
    idle = memory(child)
    job_id = api.post(
        "/api/v1/items/import", files={"file": ("big.csv", content, "text/csv")}, headers=alice
    ).json()["id"]
    seen: set[int] = set()

    def finished() -> dict[str, Any] | None:
        job = _job(api, alice, job_id)
        seen.add(job["progress"]["done"])
        return job if job["state"] in ("succeeded", "failed") else None

    started = time.monotonic()
    done = wait_until(finished, 180, "the import to finish", interval=0.1)
    peak = memory(child, "VmHWM")
    print(
        f"\nworker: {done['progress']['total']} rows in {time.monotonic() - started:.1f} s, "
        f"peak RSS {peak / 2**20:.0f} MiB ({(peak - idle) / 2**20:.0f} MiB over idle)"
    )
    assert done["state"] == "succeeded", done
    assert count_items(worker_settings) == content.count(b"\n") - 1
    assert len(seen) >= 3
    assert peak - idle < 150 * 2**20


def test_a_job_is_refused_fast_and_not_left_queued_when_the_broker_is_down(
    api: TestClient, alice: Headers, services: Services, worker_settings: Settings
) -> None:
    """The fault: with Redis down an import answered 500 after 19 s, and its job row stayed
    `queued` for ever (committed, never enqueued)."""
    import asyncio

    from sqlalchemy import func, select

    from app.db.models import Job
    from app.db.session import Database

    async def jobs() -> int:
        db = Database(worker_settings)
        try:
            async with db.session() as session:
                return int(await session.scalar(select(func.count()).select_from(Job)) or 0)
        finally:
            await db.dispose()

    before = asyncio.run(jobs())
    pause(services.redis)
    try:
        started = time.monotonic()
        imported = api.post(
            "/api/v1/items/import",
            files={"file": ("i.csv", csv_bytes([["x", ""]]), "text/csv")},
            headers=alice,
        )
        exported = api.post("/api/v1/items/export", headers=alice)
        took = time.monotonic() - started
    finally:
        unpause(services.redis)
    for response in (imported, exported):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {"detail": "the job queue is unavailable; nothing was queued"}
    print(f"\ntwo refusals with Redis paused: {took:.1f} s")
    assert took < 16  # each: up to 2 s for the cache's principal lookup, 2 s to enqueue
    assert asyncio.run(jobs()) == before  # no job left `queued` for ever
    assert not list(Path(worker_settings.uploads_dir).glob("*.csv"))


def test_a_job_that_keeps_killing_its_worker_ends_failed(
    api: TestClient, alice: Headers, worker_settings: Settings, tmp_path: Path
) -> None:
    """The fault: with reject_on_worker_lost, a job that got its worker OOM-killed was
    delivered again and again, for ever. With JOB_MAX_DELIVERIES=1 one lost worker ends it."""
    content = csv_bytes([[f"row {n}", "x"] for n in range(60_000)])
    fast = {"JOB_MAX_DELIVERIES": "1", "JOB_HEARTBEAT_SECONDS": "1"}
    with worker_process(worker_settings, tmp_path, **fast) as process:
        job_id = _start_import(api, alice, content)
        [child] = _children(process.pid)
        os.kill(child, signal.SIGKILL)
        done = _finished(api, alice, job_id, timeout=120)
    assert done["state"] == "failed", done
    assert done["error"].startswith("the worker was lost 1 times")
    assert count_items(worker_settings) == 0


def test_a_job_of_a_dead_worker_ends_within_two_heartbeats_of_a_worker_returning(
    api: TestClient, alice: Headers, worker_settings: Settings, tmp_path: Path
) -> None:
    """The fault: `docker kill` of the worker during an import left the job `running` for
    an hour (its message waits in Redis for VISIBILITY_TIMEOUT). The next worker's reaper
    finds the stopped heartbeat and hands the job on."""
    rows = 60_000
    content = csv_bytes([[f"row {n}", "x"] for n in range(rows)])
    fast = {"JOB_HEARTBEAT_SECONDS": "1"}
    with worker_process(worker_settings, tmp_path, **fast) as first:
        job_id = _start_import(api, alice, content)
        for pid in [*_children(first.pid), first.pid]:  # the whole worker, at once
            os.kill(pid, signal.SIGKILL)
        first.wait(timeout=10)
    assert _job(api, alice, job_id)["state"] == "running"
    with worker_process(worker_settings, tmp_path, **fast):
        returned = time.monotonic()
        wait_until(
            lambda: _job(api, alice, job_id)["state"] != "running", 10, "the job to be handed on",
            interval=0.05,
        )  # fmt: skip
        handed_on = time.monotonic() - returned
        done = _finished(api, alice, job_id, timeout=120)
    print(f"\nhanded on {handed_on:.1f} s after a worker returned (heartbeat 1 s)")
    assert handed_on <= 2 * 1 + 1  # two heartbeats, and a second of slack for the polling
    assert done["state"] == "succeeded", done
    assert count_items(worker_settings) == rows
