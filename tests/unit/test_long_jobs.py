"""Long jobs: an export resumes from its last checkpoint and runs in slices; an import that
cannot finish in time says so; a job that failed for good leaves no partial file.

The fault: a 256,000-row export with its worker killed once at 80,000 rows started again from
zero, twice ran into the task time limit, ended `failed` with "the worker was lost 3 times",
and left a 26.5 MB `.csv.partial` in storage.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.states import JobState
from app.db.session import Database
from app.services.cache import ReadCache
from app.services.jobs import Outcome, exports, imports, run_job, runner
from app.services.retention import export_path
from tests.helpers import Headers
from tests.unit.test_jobs import csv_bytes, job, upload

ITEMS = 35
CHUNK = 10  # rows per export chunk here: 4 chunks, 4 checkpoints


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "EXPORT_CHUNK_ROWS", CHUNK)


@pytest.fixture
def alice(client: TestClient, make_user) -> Headers:
    headers: Headers = make_user("alice")
    upload(client, headers, csv_bytes([[f"item {n:02}", ""] for n in range(ITEMS)]))
    return headers


def _database(settings) -> str:
    return str(settings.sqlalchemy_url.removeprefix("sqlite+aiosqlite:///"))


def _row(settings, job_id: str, columns: str) -> tuple[Any, ...]:
    with sqlite3.connect(_database(settings)) as connection:
        found = connection.execute(
            f"SELECT {columns} FROM jobs WHERE id = ?", (uuid.UUID(job_id).hex,)
        ).fetchone()
    assert found is not None
    return tuple(found)


def _queue_export_without_running_it(settings, job_id: str) -> None:
    """As the broker holds it: `queued`, nothing run yet."""
    with sqlite3.connect(_database(settings)) as connection:
        connection.execute(
            "UPDATE jobs SET state = 'queued', deliveries = 0, done = 0, total = 0, "
            "result = NULL, checkpoint = NULL WHERE id = ?",
            (uuid.UUID(job_id).hex,),
        )
    export_path(settings, uuid.UUID(job_id)).unlink(missing_ok=True)


def _deliver(settings, job_id: str) -> Outcome:
    async def run() -> Outcome:
        db = Database(settings)
        try:
            return await run_job(db, settings, ReadCache(None, 0), uuid.UUID(job_id))
        finally:
            await db.dispose()

    return asyncio.run(run())


def _exported_titles(settings, job_id: str) -> list[str]:
    text = export_path(settings, uuid.UUID(job_id)).read_text(encoding="utf-8")
    assert text.count("id,title,description,created_at,updated_at") == 1
    return [row["title"] for row in csv.DictReader(io.StringIO(text))]


def _first_slice(client: TestClient, alice: Headers, settings, monkeypatch) -> str:
    """An export whose first slice ran (one chunk, then queued again); its job's id."""
    job_id = str(client.post("/api/v1/items/export", headers=alice).json()["id"])
    _queue_export_without_running_it(settings, job_id)
    monkeypatch.setattr(runner, "EXPORT_SLICE_SHARE", 0.0)  # every chunk ends its slice
    assert _deliver(settings, job_id) is Outcome.CONTINUE
    return job_id


def _worker_lost(settings, job_id: str, deliveries: int) -> None:
    """As a worker that died running the job leaves it: `running`, no heartbeat."""
    with sqlite3.connect(_database(settings)) as connection:
        connection.execute(
            "UPDATE jobs SET state = 'running', deliveries = ?, heartbeat_at = NULL WHERE id = ?",
            (deliveries, uuid.UUID(job_id).hex),
        )


def test_an_export_runs_in_slices_each_ending_at_a_checkpoint(
    client: TestClient, alice: Headers, settings, small_chunks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each slice stops at its deadline after a chunk and is queued again; the next goes on
    from the checkpoint. No slice counts as a lost start."""
    accepted = client.post("/api/v1/items/export", headers=alice).json()
    _queue_export_without_running_it(settings, accepted["id"])
    monkeypatch.setattr(runner, "EXPORT_SLICE_SHARE", 0.0)  # every chunk ends its slice
    outcomes = []
    for _ in range(ITEMS // CHUNK + 2):  # bounded: a slice that went back to the start loops
        if (outcome := _deliver(settings, accepted["id"])) is not Outcome.CONTINUE:
            break
        state, deliveries, done = _row(settings, accepted["id"], "state, deliveries, done")
        assert (state, deliveries) == ("queued", 0)
        outcomes.append(done)
    assert outcome is Outcome.DONE
    assert outcomes == [10, 20, 30]  # the fourth chunk ended the export
    finished = job(client, alice, accepted["id"])
    assert finished["state"] == "succeeded"
    assert finished["progress"] == {"done": ITEMS, "total": ITEMS}
    assert finished["result"] == {"file": f"{accepted['id']}.csv", "rows": ITEMS}
    assert _row(settings, accepted["id"], "checkpoint, deliveries") == (None, 1)
    assert _exported_titles(settings, accepted["id"]) == [f"item {n:02}" for n in range(ITEMS)]


def test_an_export_whose_worker_was_lost_resumes_from_its_checkpoint(
    client: TestClient, alice: Headers, settings, small_chunks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _first_slice(client, alice, settings, monkeypatch)
    assert _deliver(settings, job_id) is Outcome.CONTINUE  # 20 rows written, checkpointed
    checkpoint = json.loads(_row(settings, job_id, "checkpoint")[0])
    partial = export_path(settings, uuid.UUID(job_id)).with_suffix(".csv.partial")
    assert checkpoint["done"] == 20
    assert checkpoint["size"] == partial.stat().st_size
    # The worker died during the third chunk: it had written some rows after the checkpoint,
    # and the job was `running` with a stale heartbeat, then handed on by the reaper.
    with partial.open("a", encoding="utf-8") as handle:
        handle.write("half,written,row\n" * 3)
    with sqlite3.connect(_database(settings)) as connection:
        # Rows before the checkpoint are not read again: a change to one is not exported.
        connection.execute("UPDATE items SET title = 'changed' WHERE title = 'item 00'")
    _worker_lost(settings, job_id, 1)
    monkeypatch.setattr(runner, "EXPORT_SLICE_SHARE", 0.5)
    assert _deliver(settings, job_id) is Outcome.DONE
    finished = job(client, alice, job_id)
    assert finished["state"] == "succeeded"
    assert finished["progress"] == {"done": ITEMS, "total": ITEMS}
    assert _row(settings, job_id, "deliveries")[0] == 2
    assert _exported_titles(settings, job_id) == [f"item {n:02}" for n in range(ITEMS)]
    assert not partial.exists()


def test_a_checkpoint_whose_file_is_gone_starts_the_export_again(
    client: TestClient, alice: Headers, settings, small_chunks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _first_slice(client, alice, settings, monkeypatch)
    export_path(settings, uuid.UUID(job_id)).with_suffix(".csv.partial").unlink()
    monkeypatch.setattr(runner, "EXPORT_SLICE_SHARE", 0.5)
    assert _deliver(settings, job_id) is Outcome.DONE
    assert _exported_titles(settings, job_id) == [f"item {n:02}" for n in range(ITEMS)]


def test_an_import_that_cannot_finish_in_time_fails_with_that_reason(
    client: TestClient, make_user, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import is all or nothing, so it cannot be cut into slices: at its deadline it is
    rolled back and fails saying so, instead of being killed and reported as a lost worker."""
    monkeypatch.setattr(runner, "IMPORT_TIME_MARGIN_SECONDS", float(settings.task_time_limit))
    monkeypatch.setattr(imports, "IMPORT_BATCH_ROWS", 10)
    alice = make_user("alice")
    accepted = upload(client, alice, csv_bytes([[f"row {n}", ""] for n in range(50)]))
    done = job(client, alice, accepted["id"])
    assert done["state"] == "failed"
    assert done["error"] == (
        f"the import did not finish within TASK_TIME_LIMIT ({settings.task_time_limit} s): "
        "nothing was imported; import the file in smaller parts"
    )
    assert client.get("/api/v1/items", headers=alice).json()["items"] == []


def test_an_export_given_up_after_its_last_delivery_leaves_no_partial_file(
    client: TestClient, alice: Headers, settings, small_chunks, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _first_slice(client, alice, settings, monkeypatch)
    partial = export_path(settings, uuid.UUID(job_id)).with_suffix(".csv.partial")
    assert partial.exists()
    _worker_lost(settings, job_id, settings.job_max_deliveries)
    assert _deliver(settings, job_id) is Outcome.DONE
    assert job(client, alice, job_id)["state"] == JobState.FAILED
    assert _row(settings, job_id, "checkpoint")[0] is None
    assert not partial.exists()


def test_rows_added_during_an_export_are_not_its_own_and_progress_never_passes_total(
    client: TestClient, alice: Headers, settings, small_chunks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault: progress exceeded its total when rows were added while an export ran."""
    job_id = _first_slice(client, alice, settings, monkeypatch)
    for n in range(15):
        client.post("/api/v1/items", json={"title": f"later {n}"}, headers=alice)
    while _deliver(settings, job_id) is Outcome.CONTINUE:
        progress = job(client, alice, job_id)["progress"]
        assert progress["done"] <= progress["total"] == ITEMS
    finished = job(client, alice, job_id)
    assert finished["progress"] == {"done": ITEMS, "total": ITEMS}
    assert _exported_titles(settings, job_id) == [f"item {n:02}" for n in range(ITEMS)]
