"""Background jobs on the embedded default: they run in-process right after the response."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.core.config import Settings
from app.main import create_app
from app.services.webhooks import receiver_secret, signed_headers, verify
from tests.helpers import every_row, http_server, login, make_settings


@pytest.fixture
def settings(db_path: Path, tmp_path: Path) -> Settings:
    """The receivers of these tests listen on 127.0.0.1: private targets allowed."""
    return make_settings(
        tmp_path, f"sqlite+aiosqlite:///{db_path}", webhook_allow_private_targets=True
    )


def csv_bytes(rows: list[list[str]], header: tuple[str, ...] = ("title", "description")) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def upload(client: TestClient, headers, content: bytes, **form: str) -> dict[str, Any]:
    response = client.post(
        "/api/v1/items/import",
        files={"file": ("items.csv", content, "text/csv")},
        data=form,
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return response.json()


def job(client: TestClient, headers, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def ended(kind: str, state: str) -> float:
    """jobs_finished_total{kind, state} of this process (the jobs run in it)."""
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value("jobs_finished_total", {"kind": kind, "state": state})
    return found or 0.0


def titles(client: TestClient, headers) -> list[str]:
    return sorted(
        i["title"] for i in client.get("/api/v1/items?limit=100", headers=headers).json()["items"]
    )


def test_import_of_a_valid_file(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    before = (ended("import", "succeeded"), ended("import", "failed"))
    accepted = upload(client, alice, csv_bytes([["one", "first"], ["two", ""], ["three", "x"]]))
    assert accepted["state"] == "queued"
    done = job(client, alice, accepted["id"])
    assert done["state"] == "succeeded"
    assert done["progress"] == {"done": 3, "total": 3}
    assert done["result"] == {"imported": 3, "rejected": 0, "rows": []}
    assert titles(client, alice) == ["one", "three", "two"]
    assert (ended("import", "succeeded"), ended("import", "failed")) == (before[0] + 1, before[1])


def test_import_with_bad_rows_reports_them_and_writes_nothing(
    client: TestClient, make_user
) -> None:
    alice = make_user("alice")
    content = csv_bytes([["fine", ""], ["", "no title"], ["also fine", ""], ["x" * 300, ""]])
    before = (ended("import", "succeeded"), ended("import", "failed"))
    done = job(client, alice, upload(client, alice, content)["id"])
    assert (ended("import", "succeeded"), ended("import", "failed")) == (before[0], before[1] + 1)
    assert done["state"] == "failed"
    assert done["error"] == "2 of 4 rows are invalid: nothing was imported"
    assert [r["line"] for r in done["result"]["rows"]] == [3, 5]  # line 1 is the header
    assert "title" in done["result"]["rows"][0]["errors"][0]
    assert titles(client, alice) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,description\nx,y\n", "must have a `title` column"),
        (b"title,colour\nx,red\n", "unknown CSV columns: colour"),
        (b"title\n\xff\xfe\xfa\n", "not UTF-8"),
    ],
)
def test_unusable_files_fail_with_a_reason(
    client: TestClient, make_user, content: bytes, message: str
) -> None:
    alice = make_user("alice")
    done = job(client, alice, upload(client, alice, content)["id"])
    assert done["state"] == "failed"
    assert message in done["error"]


def test_oversized_upload_is_413(db_path: Path, tmp_path: Path, make_user) -> None:
    make_user("alice")
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{db_path}", import_max_bytes=1000)
    with TestClient(create_app(settings)) as small:
        headers = login(small, "alice", "correct-horse-battery")
        response = small.post(
            "/api/v1/items/import",
            files={"file": ("big.csv", b"title\n" + b"x\n" * 1000, "text/csv")},
            headers=headers,
        )
    assert response.status_code == 413
    assert "IMPORT_MAX_BYTES" in response.json()["detail"]
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_progress_counts_every_row_of_a_large_import(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    done = job(
        client,
        alice,
        upload(client, alice, csv_bytes([[f"row {n}", ""] for n in range(1200)]))["id"],
    )
    assert done["state"] == "succeeded"
    assert done["progress"] == {"done": 1200, "total": 1200}
    assert len(every_row(client, "/api/v1/items", alice)) == 1200


def test_export_writes_the_callers_items_and_downloads(
    client: TestClient, make_user, settings: Settings
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    for title in ("a", "b, with comma", 'c "quoted"'):
        client.post("/api/v1/items", json={"title": title, "description": "d"}, headers=alice)
    client.post("/api/v1/items", json={"title": "bob's"}, headers=bob)
    before = ended("export", "succeeded")
    accepted = client.post("/api/v1/items/export", headers=alice)
    assert accepted.status_code == 202
    done = job(client, alice, accepted.json()["id"])
    assert done["state"] == "succeeded"
    assert ended("export", "succeeded") == before + 1
    assert done["result"] == {"file": f"{done['id']}.csv", "rows": 3}
    assert (Path(settings.storage_dir) / f"{done['id']}.csv").exists()
    download = client.get(f"/api/v1/jobs/{done['id']}/download", headers=alice)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert sorted(r["title"] for r in rows) == ["a", "b, with comma", 'c "quoted"']
    assert client.get(f"/api/v1/jobs/{done['id']}/download", headers=bob).status_code == 403


def test_jobs_are_private_and_unknown_ids_404(client: TestClient, make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    accepted = upload(client, alice, csv_bytes([["x", ""]]))
    assert client.get(f"/api/v1/jobs/{accepted['id']}", headers=bob).status_code == 403
    assert client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=alice).status_code == 404
    assert client.get(f"/api/v1/jobs/{accepted['id']}/download", headers=alice).status_code == 404


def test_an_unfinished_export_cannot_be_downloaded(settings: Settings) -> None:
    from app.db.models import Job
    from app.services.errors import Conflict
    from app.services.jobs import open_export

    with pytest.raises(Conflict, match="running"):
        open_export(settings, Job(id=uuid.uuid4(), kind="export", state="running"))


def redeliver(settings: Settings, job_id: str) -> None:
    """What a worker does with a job the broker delivers (again)."""
    import asyncio

    from app.db.session import Database
    from app.services.cache import ReadCache
    from app.services.jobs import run_job

    async def run() -> None:
        db = Database(settings)
        try:
            await run_job(db, settings, ReadCache(None, 0), uuid.UUID(job_id))
        finally:
            await db.dispose()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["import", "export"])
def test_a_run_that_lost_its_claim_commits_nothing(
    client: TestClient, make_user, settings: Settings, kind: str
) -> None:
    """The fault: a worker killed mid-import still had its last statements on their way to
    Postgres, which committed them after the reaper had handed the job to another worker:
    that run then failed on the rows already there (duplicate key) and the job ended
    `failed` with every row imported. A run commits its outcome only while its claim stands."""
    import asyncio

    from app.db.models import Job
    from app.db.session import Database
    from app.services.cache import ReadCache
    from app.services.jobs import Outcome, claims, runner

    alice = make_user("alice")
    content = csv_bytes([[f"row {n}", ""] for n in range(30)])
    if kind == "import":
        accepted = upload(client, alice, content)
    else:
        client.post("/api/v1/items", json={"title": "one"}, headers=alice)
        accepted = client.post("/api/v1/items/export", headers=alice).json()
    job_id = uuid.UUID(accepted["id"])
    items_before = len(every_row(client, "/api/v1/items", alice))
    _set_job(settings, accepted["id"], state="queued", deliveries=0, done=0, checkpoint=None)
    if kind == "import":  # as it was before it ran: its rows not written, its file there
        from app.services.retention import upload_path

        _delete_items(settings)
        items_before = 0
        upload_path(settings, job_id).write_bytes(content)

    async def runs() -> tuple[Outcome, Outcome]:
        db = Database(settings)
        cache = ReadCache(None, 0)
        try:
            async with db.session() as first, db.session() as second:
                stale = await first.get(Job, job_id)
                assert stale is not None
                assert await claims.claim(first, stale)  # the run whose worker stalls
                # Its heartbeat goes stale; the reaper hands the job on, a second run claims it.
                _set_job(settings, accepted["id"], state="queued", heartbeat_at=None)
                current = await second.get(Job, job_id)
                assert current is not None
                assert await claims.claim(second, current)
                late = await runner.run_claimed(db, first, settings, cache, stale)
                owner = await runner.run_claimed(db, second, settings, cache, current)
                return late, owner
        finally:
            await db.dispose()

    before = ended(kind, "succeeded")
    late, owner = asyncio.run(runs())
    assert (late, owner) == (Outcome.DONE, Outcome.DONE)
    assert ended(kind, "succeeded") == before + 1  # the owner's, not the late run's too
    done = job(client, alice, accepted["id"])
    assert done["state"] == "succeeded", done
    rows = len(every_row(client, "/api/v1/items", alice))
    assert rows == (30 if kind == "import" else items_before)


def test_a_finished_job_delivered_again_changes_nothing(
    client: TestClient, make_user, settings: Settings
) -> None:

    alice = make_user("alice")
    accepted = upload(client, alice, csv_bytes([["once", ""]]))

    redeliver(settings, accepted["id"])
    assert titles(client, alice) == ["once"]


# --- webhooks --------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local webhook receiver that answers with the given statuses, then 200."""

    statuses: list[int]
    secret: str
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver(settings: Settings) -> Iterator[Receiver]:
    state = Receiver(statuses=[], secret=receiver_secret(settings))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:  # what a receiver does, with the Standard Webhooks library
                Webhook(state.secret).verify(body, dict(self.headers))
                valid = True
            except Exception:
                valid = False
            state.received.append(
                {"valid": valid, "event": json.loads(body), "id": self.headers["webhook-id"]}
            )
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        yield state


def test_webhook_is_signed_and_verifiable(
    client: TestClient, make_user, receiver: Receiver
) -> None:
    alice = make_user("alice")
    accepted = upload(client, alice, csv_bytes([["hooked", ""]]), callback_url=receiver.url)
    done = job(client, alice, accepted["id"])
    assert done["webhook"] == {"state": "delivered", "attempts": 1, "error": None}
    [delivery] = receiver.received
    assert delivery["valid"] is True
    assert delivery["event"]["type"] == "job.succeeded"
    assert delivery["event"]["job"]["id"] == accepted["id"]


def export_with_callback(client: TestClient, headers, url: str) -> dict[str, Any]:
    """Start an export that reports to `url`; returns the finished job."""
    accepted = client.post("/api/v1/items/export", json={"callback_url": url}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    return job(client, headers, accepted.json()["id"])


def test_webhook_retries_on_5xx_then_delivers(
    client: TestClient, make_user, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    alice = make_user("alice")
    done = export_with_callback(client, alice, receiver.url)
    assert done["webhook"]["state"] == "delivered"
    assert done["webhook"]["attempts"] == 3
    assert len(receiver.received) == 3
    assert len({r["id"] for r in receiver.received}) == 1  # one message, retried


def test_webhook_gives_up_after_the_last_attempt(
    client: TestClient, make_user, receiver: Receiver, settings: Settings
) -> None:
    receiver.statuses = [500] * 10
    alice = make_user("alice")
    done = export_with_callback(client, alice, receiver.url)
    assert done["webhook"]["state"] == "failed"
    assert done["webhook"]["attempts"] == settings.webhook_max_attempts
    assert done["webhook"]["error"] == "HTTP 500"
    assert done["state"] == "succeeded"  # the job itself is unaffected


def test_webhook_does_not_retry_a_4xx(client: TestClient, make_user, receiver: Receiver) -> None:
    receiver.statuses = [404]
    alice = make_user("alice")
    done = export_with_callback(client, alice, receiver.url)
    assert done["webhook"] == {"state": "failed", "attempts": 1, "error": "HTTP 404"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "String should match pattern"),
        ("https://user:secret@example.com/hook", "must not carry credentials"),
        ("https:///nohost", "has no host"),
    ],
)
def test_callback_urls_are_validated(client: TestClient, make_user, url: str, message: str) -> None:
    response = client.post(
        "/api/v1/items/export", json={"callback_url": url}, headers=make_user("alice")
    )
    assert response.status_code == 422
    assert message in response.json()["detail"][0]["msg"]


def test_callback_allow_list(db_path: Path, tmp_path: Path, make_user) -> None:
    make_user("alice")
    settings = make_settings(
        tmp_path, f"sqlite+aiosqlite:///{db_path}", webhook_allowed_hosts="hooks.example.com"
    )
    with TestClient(create_app(settings)) as restricted:
        headers = login(restricted, "alice", "correct-horse-battery")
        refused = restricted.post(
            "/api/v1/items/export",
            json={"callback_url": "https://evil.example.net/x"},
            headers=headers,
        )
        allowed = restricted.post(
            "/api/v1/items/export",
            json={"callback_url": "https://hooks.example.com/x"},
            headers=headers,
        )
    assert refused.status_code == 422
    assert "is not allowed" in refused.json()["detail"][0]["msg"]
    assert allowed.status_code == 202


def test_signature_verification_rejects_tampering_and_replays(settings: Settings) -> None:
    body = b'{"type":"job.succeeded"}'
    secret = receiver_secret(settings)
    headers = signed_headers(settings, "msg_1", body)
    assert verify(secret, body, headers)
    assert not verify(secret, body + b" ", headers)
    assert not verify("whsec_" + "b3RoZXI=" * 4, body, headers)
    assert not verify(secret, body, {**headers, "webhook-id": "msg_2"})
    old = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    assert not verify(secret, body, old)
    assert not verify(secret, body, {**headers, "webhook-timestamp": "not-a-number"})


def test_a_job_is_refused_and_removed_when_the_broker_cannot_be_reached(
    db_path: Path, tmp_path: Path, make_user
) -> None:
    make_user("alice")
    settings = make_settings(
        tmp_path, f"sqlite+aiosqlite:///{db_path}", redis_url="redis://127.0.0.1:1/0"
    )  # nothing listens on port 1
    with TestClient(create_app(settings)) as down:
        headers = login(down, "alice", "correct-horse-battery")
        started = time.monotonic()
        response = down.post(
            "/api/v1/items/import",
            files={"file": ("a.csv", csv_bytes([["x", ""]]), "text/csv")},
            headers=headers,
        )
        took = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert took < 5
    import sqlite3

    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert not [p for p in Path(settings.uploads_dir).glob("*") if p.is_file()]


def test_a_job_whose_worker_keeps_dying_is_failed_after_the_last_delivery(
    client: TestClient, make_user, settings: Settings
) -> None:
    """The fault: a job that got its worker OOM-killed was redelivered for ever (15 kills in
    3.5 min). Each start counts; past JOB_MAX_DELIVERIES the job fails with the reason."""
    import sqlite3

    alice = make_user("alice")
    accepted = upload(client, alice, csv_bytes([["fine", ""]]))
    database = settings.sqlalchemy_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT deliveries FROM jobs").fetchone() == (1,)
        # As a worker that died mid-job leaves it, on its last allowed start.
        connection.execute(
            "UPDATE jobs SET state = 'running', deliveries = ?, heartbeat_at = NULL",
            (settings.job_max_deliveries,),
        )

    before = ended("import", "failed")
    redeliver(settings, accepted["id"])
    done = job(client, alice, accepted["id"])
    assert ended("import", "failed") == before + 1
    assert done["state"] == "failed"
    assert done["error"] == (
        f"the worker was lost {settings.job_max_deliveries} times while running this job; "
        "it is not retried again"
    )


def _set_job(settings: Settings, job_id: str, **columns: object) -> None:
    import sqlite3

    database = settings.sqlalchemy_url.removeprefix("sqlite+aiosqlite:///")
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with sqlite3.connect(database) as connection:
        connection.execute(f"UPDATE jobs SET {assignments} WHERE id = ?",
                           (*columns.values(), uuid.UUID(job_id).hex))  # fmt: skip


def _delete_items(settings: Settings) -> None:
    import sqlite3

    with sqlite3.connect(settings.sqlalchemy_url.removeprefix("sqlite+aiosqlite:///")) as db:
        db.execute("DELETE FROM items")


def test_the_reaper_hands_on_jobs_whose_heartbeat_stopped(
    client: TestClient, make_user, settings: Settings
) -> None:
    """The fault: a worker killed mid-job left the job `running` for an hour."""
    import asyncio

    from app.db.session import Database
    from app.services.jobs import reap_stalled_jobs

    alice = make_user("alice")
    lost, twice_lost, alive = (upload(client, alice, csv_bytes([[n, ""]]))["id"]
                               for n in ("lost", "twice", "alive"))  # fmt: skip
    _set_job(settings, lost, state="running", deliveries=1, heartbeat_at="2020-01-01 00:00:00")
    _set_job(settings, twice_lost, state="running", deliveries=settings.job_max_deliveries,
             heartbeat_at="2020-01-01 00:00:00")  # fmt: skip
    _set_job(settings, alive, state="running", deliveries=1, heartbeat_at=None)

    async def reap() -> tuple[list[uuid.UUID], int]:
        db = Database(settings)
        try:
            return await reap_stalled_jobs(db, settings)
        finally:
            await db.dispose()

    before = ended("import", "failed")
    requeued, failed = asyncio.run(reap())
    assert ended("import", "failed") == before + 1
    assert sorted(requeued) == sorted([uuid.UUID(lost), uuid.UUID(alive)])
    assert failed == 1
    assert job(client, alice, lost)["state"] == "queued"
    assert job(client, alice, twice_lost)["error"].startswith("the worker was lost 3 times")
    assert job(client, alice, alive)["state"] == "queued"  # never beat: treated as lost too


def test_superusers_fail_or_retry_a_job_by_hand(
    client: TestClient, make_user, admin_headers, settings: Settings
) -> None:
    alice = make_user("alice")
    content = csv_bytes([["stuck", ""]])
    stuck = upload(client, alice, content)["id"]
    # As a worker that died mid-import leaves it: running, its rows rolled back, the upload
    # still there (an import that ended deleted it).
    _set_job(settings, stuck, state="running", deliveries=1)
    _delete_items(settings)
    (Path(settings.uploads_dir) / f"{stuck}.csv").write_bytes(content)
    assert client.post(f"/api/v1/jobs/{stuck}/fail", headers=alice).status_code == 403
    failed = client.post(f"/api/v1/jobs/{stuck}/fail", headers=admin_headers)
    assert failed.status_code == 200, failed.text
    assert (failed.json()["state"], failed.json()["error"]) == ("failed", "failed by an operator")
    assert client.post(f"/api/v1/jobs/{stuck}/fail", headers=admin_headers).status_code == 409

    retried = client.post(f"/api/v1/jobs/{stuck}/retry", headers=admin_headers)
    assert retried.status_code == 200, retried.text
    assert job(client, alice, stuck)["state"] == "succeeded"  # run again, in-process here
    assert client.post(f"/api/v1/jobs/{stuck}/retry", headers=admin_headers).status_code == 409
    # Not an action: no route has this path (404), rather than a route refusing it (422).
    assert client.post(f"/api/v1/jobs/{stuck}/explode", headers=admin_headers).status_code == 404
    unknown = client.post(f"/api/v1/jobs/{uuid.uuid4()}/fail", headers=admin_headers)
    assert unknown.status_code == 404


def test_the_jobs_command_fails_a_job(client: TestClient, make_user, settings: Settings) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    alice = make_user("alice")
    stuck = upload(client, alice, csv_bytes([["stuck", ""]]))["id"]
    _set_job(settings, stuck, state="running")
    env = {"ENVIRONMENT": "test", "DATABASE_URL": settings.sqlalchemy_url}
    run = CliRunner().invoke(cli, ["jobs", "fail", stuck], env=env)
    assert run.exit_code == 0, run.output
    assert run.stdout.strip() == f"job {stuck}: failed"
    assert job(client, alice, stuck)["error"] == "failed by an operator"
    again = CliRunner().invoke(cli, ["jobs", "fail", stuck], env=env)
    assert again.exit_code == 1
    assert again.stderr.strip() == f"job {stuck}: the job is already failed"
