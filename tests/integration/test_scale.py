"""Cost does not grow with the data: every listing's and count's plan on Postgres, with
200,000 rows in each table, reads a page's worth of rows, not the table.

The statements checked are the ones the service sends: every SELECT reaching asyncpg while
the API answers is recorded with its arguments, then run again under EXPLAIN (ANALYZE,
FORMAT JSON). The check is the plan's shape and the rows each node read, never a timing:
no sequential scan, no window aggregate, no sort over the table, and at most a page and one
row read by the scans (the rows a search matches, for a search). Each statement is planned
twice: as the first executions of a prepared statement are (a plan for its values), and as
Postgres may plan it after five (a generic plan, for any values, through PREPARE and EXPLAIN
EXECUTE); a title search, which the service prepares anew for each run, only the first way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.db.session import Database
from app.main import create_app
from app.services import items as items_service
from app.services import jobs as jobs_service
from app.services import retention
from app.services.pagination import CursorCodec, Direction, Position
from tests.helpers import Headers, login, make_settings

ROWS = 200_000
PAGE = 50
METRICS_TOKEN = "scale-test-metrics-token"
SEEDED = [
    # alice's items: the rows of one "import" share a created_at (1,000 each), as real ones do
    f"""INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
        SELECT gen_random_uuid(), 'item ' || n, NULL, :alice,
               now() - (n / 1000) * interval '1 second', now()
        FROM generate_series(1, {ROWS}) AS n""",
    """INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
        SELECT gen_random_uuid(), 'other ' || n, NULL, :bob, now() - n * interval '1 ms', now()
        FROM generate_series(1, 1000) AS n""",
    # alice's jobs: all finished but 15
    f"""INSERT INTO jobs (id, kind, owner_id, state, done, total, deliveries, webhook_state,
                          webhook_attempts, heartbeat_at, created_at, updated_at)
        SELECT gen_random_uuid(), 'import', :alice,
               CASE WHEN n <= 10 THEN 'queued' WHEN n <= 15 THEN 'running' ELSE 'succeeded' END,
               0, 0, 1, 'none', 0, now(), now() - n * interval '1 second', now()
        FROM generate_series(1, {ROWS}) AS n""",
    f"""INSERT INTO users (id, username, email, hashed_password, is_active, is_superuser,
                           created_at)
        SELECT gen_random_uuid(), 'user' || n, 'user' || n || '@example.com', 'x', true, false,
               now() - n * interval '1 second'
        FROM generate_series(1, {ROWS}) AS n""",
    "ANALYZE",
]
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Index Scan", "Bitmap Heap Scan"}


class Recorder:
    """Every SELECT the service sends through asyncpg, with its arguments."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        taken, self.statements = self.statements, []
        return [(sql, args) for sql, args in taken if sql.lstrip().upper().startswith("SELECT")]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    found = Recorder()
    fetch = asyncpg.connection.Connection.fetch
    prepared_fetch = asyncpg.prepared_stmt.PreparedStatement.fetch

    async def fetch_recorded(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        found.statements.append((query, args))
        return await fetch(self, query, *args, **kwargs)

    async def prepared_recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        found.statements.append((self.get_query(), args))
        return await prepared_fetch(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch_recorded)
    monkeypatch.setattr(asyncpg.prepared_stmt.PreparedStatement, "fetch", prepared_recorded)
    return found


def _connect(settings: Settings) -> Any:
    url = make_url(settings.database_url)
    return asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        database=url.database,
    )  # fmt: skip


def _sql(settings: Settings, statements: list[str], **values: str) -> list[Any]:
    async def run() -> list[Any]:
        connection = await _connect(settings)
        try:
            found = []
            for statement in statements:
                for name, value in values.items():
                    statement = statement.replace(f":{name}", f"'{value}'")
                found.append(await connection.fetch(statement))
            return found
        finally:
            await connection.close()

    return asyncio.run(run())


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


def plans(
    settings: Settings, sql: str, args: tuple[Any, ...], *, generic: bool = True
) -> list[dict[str, Any]]:
    """The statement's plan, run (ANALYZE): for its values, as the first runs of a prepared
    statement are planned, and (`generic`) for any values, as Postgres may plan a prepared
    statement from its sixth run on."""

    async def run() -> list[dict[str, Any]]:
        connection = await _connect(settings)
        try:
            explained = [await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)]
            if generic:
                await connection.execute(f"PREPARE listed AS {sql}")
                await connection.execute("SET plan_cache_mode = force_generic_plan")
                values = ", ".join(_literal(arg) for arg in args)
                call = f"EXECUTE listed({values})" if args else "EXECUTE listed"
                explained.append(
                    await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {call}")
                )
            return [json.loads(found)[0]["Plan"] for found in explained]
        finally:
            await connection.close()

    return asyncio.run(run())


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_read(node: dict[str, Any]) -> int:
    loops = node.get("Actual Loops", 1)
    return int(
        (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
         + node.get("Rows Removed by Index Recheck", 0)) * loops
    )  # fmt: skip


def problems(settings: Settings, sql: str, args: tuple[Any, ...], bound: int) -> list[str]:
    """What reads more than `bound` rows in the statement's plans. A search through its
    matches (the CTE) is planned for its pattern on every run (the service prepares it anew),
    so only that plan counts."""
    found = []
    for plan in plans(settings, sql, args, generic="MATERIALIZED" not in sql):
        for node in nodes(plan):
            kind = node["Node Type"]
            if kind in ("Seq Scan", "WindowAgg"):
                found.append(f"{kind} on {node.get('Relation Name', '?')}")
            if kind in SCANS and rows_read(node) > bound:
                index = node.get("Index Name", node.get("Relation Name", "?"))
                found.append(f"{kind} of {index} read {rows_read(node)} rows (bound {bound})")
            if kind == "Sort" and node.get("Actual Rows", 0) > bound:
                found.append(f"Sort of {node['Actual Rows']} rows")
    return [f"{p}\n    in: {' '.join(sql.split())[:300]}" for p in found]


@pytest.fixture
def seeded(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, Headers]]]:
    from app.services.users import ensure_superuser_standalone

    # The seeded unfinished jobs are rows to count, not runs: this process's reaper (every
    # half heartbeat, without a broker) must not hand them on or fail them because the
    # seed's transaction, which stamps their heartbeat, took longer than 1.5 heartbeats to
    # commit (it took 25 s on a busy machine).
    scaled = make_settings(
        tmp_path, settings.database_url, metrics_token=METRICS_TOKEN,
        job_heartbeat_seconds=3600, job_resend_after_seconds=86400,
    )  # fmt: skip
    asyncio.run(ensure_superuser_standalone(scaled))
    with TestClient(create_app(scaled)) as client:
        admin = login(client, scaled.admin_username, scaled.admin_password)
        ids = {}
        for name in ("alice", "bob"):
            body = {"username": name, "email": f"{name}@example.com", "password": "x" * 12}
            created = client.post("/api/v1/users", json=body, headers=admin)
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
        _sql(scaled, SEEDED, **ids)
        people = {"admin": admin, **{n: login(client, n, "x" * 12) for n in ids}}
        yield client, people


def _deep(settings: Settings, listing: str, scope: str, table: str, where: str) -> list[str]:
    """Cursors (both ways) at the row 150,000 deep into a listing."""
    [[row]] = _sql(
        settings,
        [f"SELECT created_at, id FROM {table} {where} "
         f"ORDER BY created_at DESC, id DESC OFFSET 150000 LIMIT 1"],
    )  # fmt: skip
    codec = CursorCodec(settings.secret_key, listing, scope)
    at = Position(row["created_at"], row["id"])
    return [codec.encode(direction, at) for direction in Direction]


def test_every_listing_and_count_reads_a_page_not_the_table(
    seeded: tuple[TestClient, dict[str, Headers]], settings: Settings, recorder: Recorder
) -> None:
    client, people = seeded
    alice, admin = people["alice"], people["admin"]
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    recorder.take()
    checked: list[tuple[str, int]] = []  # (what, bound on the rows read)

    def get(what: str, path: str, headers: Headers, bound: int = PAGE + 1, **params: Any) -> Any:
        """The page (its JSON), once every statement it sent has passed the checks."""
        recorder.take()
        response = client.get(path, params={"limit": PAGE, **params}, headers=headers)
        assert response.status_code == 200, (what, response.text)
        statements = recorder.take()
        assert statements, f"{what}: no statement reached the database"
        for sql, args in statements:
            failures = problems(settings, sql, args, bound)
            assert not failures, f"{what}:\n" + "\n".join(failures)
        checked.append((what, bound))
        return response.json() if path != "/metrics" else response.text

    mine = f"WHERE owner_id = '{alice_id}'"
    for who, headers, scope, where in (
        ("alice", alice, alice_id, mine),
        ("a superuser", admin, "all", ""),
    ):
        first = get(f"{who}'s first items page", "/api/v1/items", headers)
        assert len(first["items"]) == PAGE
        get(f"{who}'s second items page", "/api/v1/items", headers, cursor=first["next"])
        for cursor in _deep(settings, "items", scope, "items", where):
            deep = get(f"{who}'s items page 3,000 pages deep", "/api/v1/items", headers,
                       cursor=cursor)  # fmt: skip
            assert len(deep["items"]) == PAGE
    # A search matching 111 of alice's titles, none of them among the newest rows read
    # first, and one matching all of them: each reads at most those newest rows.
    scan = items_service.SEARCH_SCAN_ROWS
    rare = get("a rare title search", "/api/v1/items", alice, bound=scan, q="item 1999")
    assert len(rare["items"]) == PAGE
    assert rare["items"][0]["title"] == "item 1999"
    found, page = [i["title"] for i in rare["items"]], rare
    while page["next"]:
        page = get("its next page", "/api/v1/items", alice, bound=scan, q="item 1999",
                   cursor=page["next"])  # fmt: skip
        found += [i["title"] for i in page["items"]]
    expected = {"item 1999"} | {f"item 1999{d}" for d in range(10)}
    expected |= {f"item 1999{d:02d}" for d in range(100)}
    assert sorted(found) == sorted(expected)
    get("a title search matching every row", "/api/v1/items", alice, q="tem")
    assert all(
        items_service._statement(own, items_service._Stage.MATCHES, direction).planned_each_time
        for own in (False, True)
        for direction in (None, *Direction)
    )

    for who, headers, scope, where in (
        ("alice", alice, alice_id, mine),
        ("a superuser", admin, "all", ""),
    ):
        first = get(f"{who}'s first jobs page", "/api/v1/jobs", headers)
        for cursor in _deep(settings, "jobs", scope, "jobs", where):
            get(f"{who}'s jobs page 3,000 pages deep", "/api/v1/jobs", headers, cursor=cursor)
    first = get("the first users page", "/api/v1/users", admin)
    for cursor in _deep(settings, "users", "all", "users", ""):
        get("the users page 3,000 pages deep", "/api/v1/users", admin, cursor=cursor)

    # The counts: the metrics' jobs per state, and the reaper's searches for stalled jobs
    # and for queued ones to send again.
    metrics = get("/metrics", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"}, bound=15)
    assert 'jobs{state="queued"} 10.0' in metrics

    async def reap_and_sweep() -> None:
        db = Database(settings)
        try:
            await jobs_service.jobs_to_send(db, settings)
            assert await retention.sweep(db, settings) == retention.Swept(0, 0)
        finally:
            await db.dispose()

    asyncio.run(reap_and_sweep())
    swept = recorder.take()
    assert any("updated_at <" in sql for sql, _ in swept)
    for sql, args in swept:
        assert not (failures := problems(settings, sql, args, 15)), "\n".join(failures)
    assert len(checked) == 22


def test_the_counts_are_the_unfinished_jobs_alone(
    seeded: tuple[TestClient, dict[str, Headers]], settings: Settings
) -> None:
    client, _ = seeded
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert 'jobs{state="queued"} 10.0' in metrics
    assert 'jobs{state="running"} 5.0' in metrics
