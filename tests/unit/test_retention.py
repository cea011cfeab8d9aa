"""Retention: finished jobs and their files expire, a user deletes one sooner, uploads go
when their import ends, files without a job are swept; with an injected clock."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.config import Settings
from app.core.states import JobState
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import Database
from app.services import retention
from tests.helpers import Headers, make_settings
from tests.unit.test_jobs import csv_bytes, upload


def _db(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        db = Database(settings)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def sweep(settings: Settings, now: datetime) -> retention.Swept:
    swept = _db(settings, lambda db: retention.sweep(db, settings, now))
    assert swept is not None
    return swept


def set_state(settings: Settings, job_id: str, state: JobState) -> None:
    async def work(db: Database) -> None:
        async with db.session() as session:
            await session.execute(
                update(Job).where(Job.id == uuid.UUID(job_id)).values(state=state)
            )
            await session.commit()

    _db(settings, work)


def export(client: TestClient, headers: Headers) -> dict[str, Any]:
    response = client.post("/api/v1/items/export", headers=headers)
    assert response.status_code == 202, response.text
    return client.get(f"/api/v1/jobs/{response.json()['id']}", headers=headers).json()


def job_ids(client: TestClient, headers: Headers) -> set[str]:
    return {j["id"] for j in client.get("/api/v1/jobs?limit=100", headers=headers).json()["items"]}


def aged(path: Path, age: timedelta) -> Path:
    stamp = time.time() - age.total_seconds()
    os.utime(path, (stamp, stamp))
    return path


def test_finished_jobs_expire_with_their_files_and_unfinished_ones_stay(
    client: TestClient, make_user, settings: Settings
) -> None:
    alice = make_user("alice")
    client.post("/api/v1/items", json={"title": "exported"}, headers=alice)
    done = export(client, alice)
    assert done["state"] == "succeeded"
    exported = Path(settings.storage_dir) / done["result"]["file"]
    assert exported.exists()
    refused = upload(client, alice, csv_bytes([["", ""]]))  # no title: refused, finished
    running = upload(client, alice, csv_bytes([["kept", ""]]))
    set_state(settings, running["id"], JobState.RUNNING)
    kept_upload = Path(settings.uploads_dir) / f"{running['id']}.csv"
    kept_upload.write_bytes(b"title\nkept\n")  # a running import's file
    aged(kept_upload, timedelta(days=30))
    retain = timedelta(days=settings.job_retention_days)

    assert sweep(settings, utcnow() + retain - timedelta(minutes=5)) == retention.Swept(0, 0)
    assert job_ids(client, alice) == {done["id"], refused["id"], running["id"]}

    assert sweep(settings, utcnow() + retain + timedelta(minutes=5)) == retention.Swept(2, 0)
    assert job_ids(client, alice) == {running["id"]}
    assert not exported.exists()
    assert kept_upload.exists()
    assert client.get(f"/api/v1/jobs/{done['id']}", headers=alice).status_code == 404


def test_files_without_a_job_are_swept_once_they_stop_changing(
    client: TestClient, make_user, settings: Settings
) -> None:
    alice = make_user("alice")
    client.post("/api/v1/items", json={"title": "exported"}, headers=alice)
    done = export(client, alice)
    storage, uploads = Path(settings.storage_dir), Path(settings.uploads_dir)
    uploads.mkdir(exist_ok=True)
    files = {
        "orphan export": storage / f"{uuid.uuid4()}.csv",
        "abandoned partial": storage / f"{uuid.uuid4()}.csv.partial",
        "abandoned upload": uploads / f".upload-{uuid.uuid4()}.partial",
        "orphan upload": uploads / f"{uuid.uuid4()}.csv",
        "fresh orphan": storage / f"{uuid.uuid4()}.csv",
        "someone else's file": storage / "notes.txt",
    }
    for name, path in files.items():
        path.write_text("x")
        aged(path, timedelta(minutes=5) if name == "fresh orphan" else timedelta(hours=2))
    exported = aged(storage / done["result"]["file"], timedelta(days=2))

    assert sweep(settings, utcnow()) == retention.Swept(jobs=0, orphans=4)
    assert {n for n, p in files.items() if p.exists()} == {"fresh orphan", "someone else's file"}
    assert exported.exists()  # its job is there
    assert sweep(settings, utcnow() + timedelta(hours=2)) == retention.Swept(jobs=0, orphans=1)


def test_a_sweep_deletes_in_batches(
    client: TestClient, make_user, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "SWEEP_BATCH", 2)
    alice = make_user("alice")
    for _ in range(5):
        export(client, alice)
    later = utcnow() + timedelta(days=settings.job_retention_days, hours=1)
    assert sweep(settings, later) == retention.Swept(jobs=5, orphans=0)
    assert job_ids(client, alice) == set()


def test_a_user_deletes_a_finished_job_and_its_file_at_once(
    client: TestClient, make_user, admin_headers: Headers, settings: Settings
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    client.post("/api/v1/items", json={"title": "exported"}, headers=alice)
    done, other = export(client, alice), export(client, alice)
    exported = Path(settings.storage_dir) / done["result"]["file"]
    running = upload(client, alice, csv_bytes([["x", ""]]))
    set_state(settings, running["id"], JobState.RUNNING)

    busy = client.delete(f"/api/v1/jobs/{running['id']}", headers=alice)
    assert busy.status_code == 409
    assert busy.json() == {"detail": "the job is running: it can be deleted once it has finished"}
    assert client.delete(f"/api/v1/jobs/{done['id']}", headers=bob).status_code == 403
    assert client.delete(f"/api/v1/jobs/{uuid.uuid4()}", headers=alice).status_code == 404
    assert client.delete(f"/api/v1/jobs/{done['id']}", headers=alice).status_code == 204
    assert not exported.exists()
    assert client.get(f"/api/v1/jobs/{done['id']}/download", headers=alice).status_code == 404
    assert client.delete(f"/api/v1/jobs/{done['id']}", headers=alice).status_code == 404
    assert client.delete(f"/api/v1/jobs/{other['id']}", headers=admin_headers).status_code == 204
    assert job_ids(client, alice) == {running["id"]}


def test_a_download_under_way_survives_its_jobs_deletion(
    client: TestClient, make_user, settings: Settings
) -> None:
    from app.api.exports import export_download

    alice = make_user("alice")
    rows = [[f"row {n:04d} " + "x" * 40, ""] for n in range(3000)]  # a file of several chunks
    assert client.get(f"/api/v1/jobs/{upload(client, alice, csv_bytes(rows))['id']}",
                      headers=alice).json()["state"] == "succeeded"  # fmt: skip
    done = export(client, alice)
    whole = client.get(f"/api/v1/jobs/{done['id']}/download", headers=alice).content

    async def read_while_deleted() -> bytes:
        db = Database(settings)
        try:
            async with db.session() as session:
                job = await session.get(Job, uuid.UUID(done["id"]))
                assert job is not None
                response = export_download(settings, job)  # the file is open from here
            body = aiter(response.body_iterator)
            first = await anext(body)
            deleted = client.delete(f"/api/v1/jobs/{done['id']}", headers=alice)
            assert deleted.status_code == 204
            rest = [chunk async for chunk in body]
            assert all(isinstance(chunk, bytes) for chunk in [first, *rest])  # a file's chunks
            return b"".join(cast(list[bytes], [first, *rest]))
        finally:
            await db.dispose()

    assert len(whole) > 3 * 64 * 1024
    assert asyncio.run(read_while_deleted()) == whole
    assert not (Path(settings.storage_dir) / done["result"]["file"]).exists()
    assert client.get(f"/api/v1/jobs/{done['id']}/download", headers=alice).status_code == 404


def test_an_upload_goes_when_its_import_ends(
    client: TestClient, make_user, admin_headers: Headers, settings: Settings
) -> None:
    alice = make_user("alice")
    uploads = Path(settings.uploads_dir)
    imported = upload(client, alice, csv_bytes([["fine", ""]]))
    refused = upload(client, alice, csv_bytes([["", ""]]))
    states = [client.get(f"/api/v1/jobs/{j['id']}", headers=alice).json()["state"]
              for j in (imported, refused)]  # fmt: skip
    assert states == ["succeeded", "failed"]
    assert list(uploads.iterdir()) == []
    again = client.post(f"/api/v1/jobs/{refused['id']}/retry", headers=admin_headers)
    assert again.status_code == 200
    retried = client.get(f"/api/v1/jobs/{refused['id']}", headers=alice).json()
    assert (retried["state"], retried["error"]) == (
        "failed",
        "the uploaded file is gone: upload it again",
    )


def test_an_import_that_fails_inside_keeps_its_upload_for_a_retry(
    client: TestClient, make_user, admin_headers: Headers, monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:  # fmt: skip
    from app.services.jobs.repository import JobRepository

    alice = make_user("alice")
    real = JobRepository.insert_items

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("the database fell over")

    monkeypatch.setattr(JobRepository, "insert_items", broken)
    failed = upload(client, alice, csv_bytes([["second try", ""]]))
    assert client.get(f"/api/v1/jobs/{failed['id']}", headers=alice).json()["state"] == "failed"
    assert (Path(settings.uploads_dir) / f"{failed['id']}.csv").exists()
    monkeypatch.setattr(JobRepository, "insert_items", real)
    client.post(f"/api/v1/jobs/{failed['id']}/retry", headers=admin_headers)
    assert client.get(f"/api/v1/jobs/{failed['id']}", headers=alice).json()["state"] == "succeeded"
    assert list(Path(settings.uploads_dir).iterdir()) == []


def test_storage_in_use_is_a_metric(
    client: TestClient, make_user, settings: Settings, tmp_path: Path
) -> None:
    from app.main import create_app

    alice = make_user("alice")
    client.post("/api/v1/items", json={"title": "exported"}, headers=alice)
    done = export(client, alice)
    size = (Path(settings.storage_dir) / done["result"]["file"]).stat().st_size
    operator = make_settings(tmp_path, settings.database_url, metrics_token="m" * 32)
    with TestClient(create_app(operator)) as metrics_client:
        metrics = metrics_client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
    assert metrics.status_code == 200, metrics.text
    assert 'storage_files{volume="exports"} 1.0' in metrics.text
    assert f'storage_bytes{{volume="exports"}} {float(size)}' in metrics.text
    assert 'storage_files{volume="uploads"} 0.0' in metrics.text


def test_the_ui_deletes_a_finished_job(client: TestClient, make_user, settings: Settings) -> None:
    from tests.unit.test_web_ui import PASSWORD, sign_in

    alice = make_user("alice", PASSWORD)
    client.post("/api/v1/items", json={"title": "exported"}, headers=alice)
    done = export(client, alice)
    csrf = sign_in(client, "alice", PASSWORD)
    page = client.get(f"/ui/jobs/{done['id']}")
    assert f'action="/ui/jobs/{done["id"]}/delete"' in page.text
    deleted = client.post(f"/ui/jobs/{done['id']}/delete", data={"csrf_token": csrf})
    assert "Job deleted, with its file." in deleted.text
    assert not (Path(settings.storage_dir) / done["result"]["file"]).exists()
    assert (
        client.post(f"/ui/jobs/{done['id']}/delete", data={"csrf_token": "x" * 43}).status_code
        == 403
    )


def test_the_sweep_command_says_what_it_deleted(
    client: TestClient, make_user, settings: Settings
) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    orphan = Path(settings.storage_dir) / f"{uuid.uuid4()}.csv"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_text("x")
    aged(orphan, timedelta(hours=2))
    env = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.sqlalchemy_url,
        "STORAGE_DIR": settings.storage_dir,
        "UPLOADS_DIR": settings.uploads_dir,
    }
    run = CliRunner().invoke(cli, ["sweep"], env=env)
    assert run.exit_code == 0, run.output
    assert run.stdout.strip() == "deleted 0 expired jobs and 1 files without a job"
    assert not orphan.exists()
