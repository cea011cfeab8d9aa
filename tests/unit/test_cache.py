"""Item read cache with an in-process Redis double (fakeredis): hit, miss, invalidation,
and a broken Redis that degrades to the database instead of to an error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fakeredis import FakeAsyncRedis
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.config import Settings
from app.db.models import Item
from app.db.session import Database
from app.main import create_app
from tests.helpers import login


def titles(client: TestClient, headers: dict[str, str], **params: str) -> list[str]:
    """The titles of the listing's first page."""
    page = client.get("/api/v1/items", params=params, headers=headers).json()
    return sorted(i["title"] for i in page["items"])


@pytest.fixture
def redis() -> FakeAsyncRedis:
    return FakeAsyncRedis()


@pytest.fixture
def client(settings: Settings, redis: FakeAsyncRedis) -> Iterator[TestClient]:
    with TestClient(create_app(settings, redis=redis)) as test_client:
        yield test_client


def change_title_behind_the_apps_back(settings: Settings, item_id: str, title: str) -> None:
    async def run() -> None:
        db = Database(settings)
        try:
            async with db.session() as session:
                await session.execute(
                    update(Item).where(Item.id == uuid.UUID(item_id)).values(title=title)
                )
                await session.commit()
        finally:
            await db.dispose()

    asyncio.run(run())


def test_item_read_is_cached_and_invalidated_on_write(
    client: TestClient, make_user, settings: Settings, redis
) -> None:
    alice = make_user("alice")
    item = client.post("/api/v1/items", json={"title": "original"}, headers=alice).json()
    assert (
        client.get(f"/api/v1/items/{item['id']}", headers=alice).json()["title"] == "original"
    )  # miss
    assert asyncio.run(redis.exists(f"item:{item['id']}")) == 1
    change_title_behind_the_apps_back(settings, item["id"], "changed in the database")
    assert (
        client.get(f"/api/v1/items/{item['id']}", headers=alice).json()["title"] == "original"
    )  # hit
    client.patch(f"/api/v1/items/{item['id']}", json={"description": "edit"}, headers=alice)
    fresh = client.get(f"/api/v1/items/{item['id']}", headers=alice).json()
    assert fresh["title"] == "changed in the database"
    assert fresh["description"] == "edit"


def test_cached_item_still_checks_permissions(client: TestClient, make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    item = client.post("/api/v1/items", json={"title": "private"}, headers=alice).json()
    client.get(f"/api/v1/items/{item['id']}", headers=alice)  # now cached
    assert client.get(f"/api/v1/items/{item['id']}", headers=bob).status_code == 403


def test_first_page_is_cached_and_moves_on_after_a_write(
    client: TestClient, make_user, settings: Settings
) -> None:
    alice = make_user("alice")
    first = client.post("/api/v1/items", json={"title": "first"}, headers=alice).json()
    assert titles(client, alice) == ["first"]  # miss, cached
    change_title_behind_the_apps_back(settings, first["id"], "renamed")
    assert client.get("/api/v1/items", headers=alice).json()["items"][0]["title"] == "first"  # hit
    client.post("/api/v1/items", json={"title": "second"}, headers=alice)  # invalidates
    assert titles(client, alice) == ["renamed", "second"]
    assert titles(client, alice, q="ren") == ["renamed"]  # searches bypass


def test_delete_and_import_invalidate(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    item = client.post("/api/v1/items", json={"title": "doomed"}, headers=alice).json()
    client.get(f"/api/v1/items/{item['id']}", headers=alice)
    client.get("/api/v1/items", headers=alice)
    client.delete(f"/api/v1/items/{item['id']}", headers=alice)
    assert client.get(f"/api/v1/items/{item['id']}", headers=alice).status_code == 404
    assert titles(client, alice) == []
    client.post(
        "/api/v1/items/import",
        files={"file": ("i.csv", b"title\nimported\n", "text/csv")},
        headers=alice,
    )
    assert titles(client, alice) == ["imported"]


def test_superuser_pages_are_invalidated_by_any_owner(
    client: TestClient, make_user, admin_headers
) -> None:
    alice = make_user("alice")
    assert titles(client, admin_headers) == []
    client.post("/api/v1/items", json={"title": "alice's"}, headers=alice)
    assert titles(client, admin_headers) == ["alice's"]


class BrokenRedis:
    """Every command fails, as when Redis is down or unreachable; `calls` records them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            self.calls.append(name)
            raise ConnectionError("Redis is down")

        return fail


def test_a_broken_cache_degrades_to_the_database(settings: Settings, make_user) -> None:
    make_user("alice")
    with TestClient(create_app(settings, redis=BrokenRedis())) as broken:  # type: ignore[arg-type]
        alice = login(broken, "alice", "correct-horse-battery")
        item = broken.post("/api/v1/items", json={"title": "still works"}, headers=alice)
        assert item.status_code == 201
        assert broken.get(f"/api/v1/items/{item.json()['id']}", headers=alice).status_code == 200
        assert titles(broken, alice) == ["still works"]
        ready = broken.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] == "error"


def test_a_changed_principal_is_seen_by_every_process_at_once_and_a_late_fill_loses(
    redis: FakeAsyncRedis,
) -> None:
    """Revocation is at once everywhere: no process keeps a copy Redis cannot take back, a
    change replaces the cached principal, and a fill from a read that began before the
    change (SET NX) cannot put the old one back."""
    from app.services.access import Principal
    from app.services.cache import ReadCache

    user = Principal(id=uuid.uuid4(), is_active=True, is_superuser=False, credential_version=3)
    revoked = Principal(id=user.id, is_active=False, is_superuser=False, credential_version=4)

    async def scenario() -> list[Principal | None]:
        here, elsewhere = ReadCache(redis, 60), ReadCache(redis, 60)
        await here.set_principal(user)
        seen = [await elsewhere.get_principal(user.id)]  # another process reads Redis
        await elsewhere.set_principal(revoked, changed=True)
        seen.append(await here.get_principal(user.id))  # the very next read, no delay
        await here.set_principal(user)  # a read that started before the change fills late
        seen.append(await elsewhere.get_principal(user.id))
        alone = ReadCache(None, 0)  # no Redis (or the cache off): nothing kept at all
        await alone.set_principal(user)
        seen.append(await alone.get_principal(user.id))
        return seen

    shared, after_change, after_late_fill, without_redis = asyncio.run(scenario())
    assert shared == user
    assert after_change == revoked
    assert after_late_fill == revoked
    assert without_redis is None


def test_after_a_failure_reads_skip_redis_for_a_while_but_invalidations_do_not() -> None:
    """During an outage each request waited for Redis' timeout, twice, before the database
    answered; now only the first does, for SKIP_AFTER_FAILURE_SECONDS."""
    from app.services.cache import ReadCache

    down = BrokenRedis()
    cache = ReadCache(down, ttl_seconds=60)  # type: ignore[arg-type]

    async def use() -> None:
        assert await cache.get_item(uuid.uuid4()) is None
        assert await cache.get_principal(uuid.uuid4()) is None
        await cache.set_item(uuid.uuid4(), {"x": 1})
        await cache.invalidate(uuid.uuid4())
        cache._skip_until = 0.0  # the skip is over: Redis is tried again
        assert await cache.get_item(uuid.uuid4()) is None

    asyncio.run(use())
    assert down.calls == ["get", "transaction", "get"]  # the invalidation's DELs, tried


def test_every_key_the_cache_writes_expires(
    client: TestClient, redis: FakeAsyncRedis, make_user
) -> None:
    """Redis evicts only keys with a TTL (`volatile-lru`), so that it never evicts the job
    queue's: a cache key without one would stay for good, and fill Redis until it refuses
    writes."""
    alice = make_user("alice")
    item = client.post("/api/v1/items", json={"title": "kept"}, headers=alice).json()
    client.get(f"/api/v1/items/{item['id']}", headers=alice)
    for limit in ("10", "50"):
        titles(client, alice, limit=limit)

    async def ttls() -> dict[bytes, int]:
        return {key: await redis.ttl(key) async for key in redis.scan_iter()}

    found = asyncio.run(ttls())
    assert {key.split(b":")[0] for key in found} == {b"principal", b"item", b"items"}
    assert all(0 < ttl <= 60 for ttl in found.values()), found


def test_a_revocation_in_one_process_is_refused_by_another_from_the_next_request(
    settings: Settings,
) -> None:
    """Two processes (or replicas) sharing Redis: once the deactivation or the new password
    has been answered in one, the other refuses the old token on its very next request
    (it used to keep a principal of its own for a second: 33-73 requests got 200)."""
    from fakeredis import FakeServer

    from app.services.users import ensure_superuser_standalone

    shared = FakeServer()
    asyncio.run(ensure_superuser_standalone(settings))
    first = create_app(settings, redis=FakeAsyncRedis(server=shared))
    second = create_app(settings, redis=FakeAsyncRedis(server=shared))
    with TestClient(first) as here, TestClient(second) as there:
        admin = login(here, settings.admin_username, settings.admin_password)
        person = {"username": "alice", "email": "alice@example.com", "password": "pw-of-alice"}
        alice_id = here.post("/api/v1/users", json=person, headers=admin).json()["id"]
        alice = login(here, "alice", "pw-of-alice")
        for _ in range(3):  # the principal is cached; the other process has read it
            assert there.get("/api/v1/items", headers=alice).status_code == 200
        off = here.patch(f"/api/v1/users/{alice_id}", json={"is_active": False}, headers=admin)
        assert off.status_code == 200
        assert there.get("/api/v1/items", headers=alice).status_code == 401
        here.patch(f"/api/v1/users/{alice_id}", json={"is_active": True}, headers=admin)
        alice = login(there, "alice", "pw-of-alice")
        assert here.get("/api/v1/items", headers=alice).status_code == 200
        changed = there.post(
            "/api/v1/users/me/password",
            json={"current_password": "pw-of-alice", "new_password": "new-pw-of-alice"},
            headers=alice,
        )
        assert changed.status_code == 200
        assert here.get("/api/v1/items", headers=alice).status_code == 401
