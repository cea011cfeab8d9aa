"""An export on Postgres is formatted by Postgres (COPY ... TO STDOUT): its file must be the
one the Python writer (the SQLite path) makes of the same rows, byte for byte, whatever the
rows hold and wherever the chunks end."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.services import csvfiles
from app.services.jobs import exports
from tests.helpers import Headers

TITLES = [
    "=1+1", "'=already neutral", "''@twice", "-5", "+x", "@SUM(A1)", "\tTab", "\rcarriage",
    "plain", "a,b", 'say "hi"', "é€😀", "'", "''", " spaces around ", "\\.", "NULL", "x" * 255,
]  # fmt: skip
DESCRIPTIONS = [None, "", "line\nbreak", "a\rb", "x\r\ny", '"', ",", "=cmd|' /C calc'!A0", "\n",
                "ends in a newline\n", "'-", "\\N"]  # fmt: skip


def _on(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """What `work` returns, run on a connection of its own to the test's database."""
    url = make_url(settings.database_url)

    async def run() -> Any:
        connection = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password,
            database=url.database,
        )  # fmt: skip
        try:
            return await work(connection)
        finally:
            await connection.close()

    return asyncio.run(run())


def _insert(settings: Settings, owner: str) -> None:
    """The rows straight into the table, past the API's validation: whatever the table can
    hold. Some share a created_at (the id orders them), some have no microseconds."""
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = []
    for n, title in enumerate(TITLES * 2):
        created = start + timedelta(seconds=n // 3, microseconds=(n % 3) * 250_001 * (n % 2))
        description = DESCRIPTIONS[n % len(DESCRIPTIONS)]
        rows.append((uuid.uuid4(), title, description, uuid.UUID(owner), created, created))
    columns = ("id", "title", "description", "owner_id", "created_at", "updated_at")
    _on(settings, lambda connection: connection.copy_records_to_table(
        "items", records=rows, columns=columns
    ))  # fmt: skip


def _as_python_writes_it(settings: Settings, owner: str | None) -> bytes:
    scope, args = ("WHERE owner_id = $1", [uuid.UUID(owner)]) if owner else ("", [])
    rows = _on(settings, lambda connection: connection.fetch(
        "SELECT id, title, description, created_at, updated_at FROM items "
        f"{scope} ORDER BY created_at, id", *args
    ))  # fmt: skip
    text = io.StringIO(newline="")
    writer = csvfiles.writer(text)
    writer.writerow(["id", "title", "description", "created_at", "updated_at"])
    writer.write_items(rows)
    return text.getvalue().encode()


def _export(client: TestClient, headers: Headers) -> bytes:
    accepted = client.post("/api/v1/items/export", headers=headers)
    assert accepted.status_code == 202, accepted.text
    job = client.get(f"/api/v1/jobs/{accepted.json()['id']}", headers=headers).json()
    assert job["state"] == "succeeded", job
    downloaded = client.get(f"/api/v1/jobs/{job['id']}/download", headers=headers)
    assert downloaded.status_code == 200
    return bytes(downloaded.content)


@pytest.mark.parametrize("chunk", [exports.EXPORT_CHUNK_ROWS, 1, 4])
def test_postgres_writes_the_file_the_python_writer_writes(
    client: TestClient,
    make_user: Callable[[str], Headers],
    admin_headers: Headers,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    monkeypatch.setattr(exports, "EXPORT_CHUNK_ROWS", chunk)
    alice = make_user("alice")
    bob = make_user("bob")
    for headers in (alice, bob):
        _insert(settings, client.get("/api/v1/users/me", headers=headers).json()["id"])
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]

    exported = _export(client, alice)
    expected = _as_python_writes_it(settings, alice_id)
    assert exported.count(b"\r\n") >= 2 * len(TITLES) + 1  # every row ends in CRLF
    assert exported == expected
    assert _export(client, admin_headers) == _as_python_writes_it(settings, None)
