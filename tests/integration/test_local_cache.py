"""Each process's memory cache against a real Redis: two caches with their own tracking
connections (two processes, as Redis sees them) never serve a stale page or principal once a
write has returned, and one whose connection is gone serves nothing from memory."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.core import metrics
from app.services.access import Principal
from app.services.cache import ReadCache
from app.services.local_cache import InvalidationListener, listener_for
from tests.integration.conftest import Services

pytestmark = pytest.mark.integration


async def _eventually(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Polls while the event loop runs the listeners (a thread's wait_until would block it)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.05)


class Process:
    """What one server process has: its Redis client, its listener, its ReadCache."""

    def __init__(self, url: str) -> None:
        self.redis = Redis.from_url(url)
        listener = listener_for(self.redis, 30, 100, 1 << 20)
        assert listener is not None
        self.listener: InvalidationListener = listener
        self.cache = ReadCache(self.redis, 60, self.listener)

    async def start(self) -> None:
        self.listener.start()
        await _eventually(self.listener.fresh, "tracking on")

    async def stop(self) -> None:
        await self.listener.stop()
        await self.redis.aclose()


@contextlib.asynccontextmanager
async def _two(url: str) -> AsyncIterator[tuple[Process, Process]]:
    first, second = Process(url), Process(url)
    try:
        await first.start()
        await second.start()
        yield first, second
    finally:
        await first.stop()
        await second.stop()


Scenario = Callable[[tuple[Process, Process]], Coroutine[Any, Any, None]]


def _direct_url(services: Services) -> str:
    """Redis at its container's address: as the app's containers reach it. Through the
    published port, Docker's userland proxy relays each connection on its own, and two
    connections' bytes can then arrive in another order than Redis wrote them."""
    address = services.redis.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    return f"redis://{address}:6379/0"


@pytest.fixture
def two(services: Services) -> Callable[[Scenario], None]:
    """Runs a scenario with two processes on the session's Redis, in an event loop."""

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            async with _two(_direct_url(services)) as processes:
                await scenario(processes)

        asyncio.run(main())

    return run


def _reads(kind: str, result: str) -> float:
    metrics.DEFERRED.flush()  # the reads counted so far, written
    labels = {"kind": kind, "result": result}
    return REGISTRY.get_sample_value("cache_local_reads_total", labels) or 0.0


def test_a_write_in_one_process_is_never_followed_by_a_stale_read_in_another(
    two: Callable[[Scenario], None],
) -> None:
    async def scenario(processes: tuple[Process, Process]) -> None:
        writer, reader = processes
        owner = uuid.uuid4()
        scope = str(owner)
        for round_ in range(300):
            body = f'{{"round": {round_}}}'.encode()
            await writer.cache.set_first_page(scope, 20, body, f"next-{round_}")
            # Filled from Redis, then served from memory.
            assert await reader.cache.get_first_page(scope, 20) == (body, f"next-{round_}")
            # Memory is used only while tracking is known to be on (a PING answered within
            # FRESH_SECONDS): on a busy machine the answer can be late, and the read goes to
            # Redis, correctly, but uncounted as a hit.
            await _eventually(reader.listener.fresh, "tracking known to be on")
            hits = _reads("page", "hit")
            assert await reader.cache.get_first_page(scope, 20) == (body, f"next-{round_}")
            assert _reads("page", "hit") == hits + 1
            # The write returns: the other process's very next read sees it.
            await writer.cache.invalidate(owner)
            assert await reader.cache.get_first_page(scope, 20) is None, round_
        assert len(reader.listener.copies) == 0 or all(
            key != f"items:pages:{scope}" for key in reader.listener.copies._fields
        )

    two(scenario)


def test_a_changed_principal_is_refused_everywhere_at_once(two: Callable[[Scenario], None]) -> None:
    """Deactivation and a new password publish the changed principal: no process keeps the
    old one for another request."""

    async def scenario(processes: tuple[Process, Process]) -> None:
        writer, reader = processes
        user = uuid.uuid4()
        for version in range(1, 101):
            old = Principal(id=user, is_active=True, is_superuser=False, credential_version=version)
            await writer.cache.set_principal(old, changed=True)
            assert await reader.cache.get_principal(user) == old
            assert await reader.cache.get_principal(user) == old  # from memory
            revoked = Principal(
                id=user, is_active=False, is_superuser=False, credential_version=version + 1
            )
            await writer.cache.set_principal(revoked, changed=True)
            assert await reader.cache.get_principal(user) == revoked, version
            assert await writer.cache.get_principal(user) == revoked, version

    two(scenario)


def test_a_change_made_outside_the_service_reaches_memory_too(
    two: Callable[[Scenario], None], services: Services
) -> None:
    """Expiry, a write by another client, a flush: Redis tracks the key, not the writer."""

    async def scenario(processes: tuple[Process, Process]) -> None:
        _, reader = processes
        scope = str(uuid.uuid4())
        outside = Redis.from_url(_direct_url(services))
        try:
            await outside.hset(f"items:pages:{scope}", "5:cursor", b"\nfirst")
            assert await reader.cache.get_first_page(scope, 5) == (b"first", None)
            await outside.hset(f"items:pages:{scope}", "5:cursor", b"\nsecond")
            await _eventually(
                lambda: (
                    len(reader.listener.copies) == 0
                    or f"items:pages:{scope}" not in reader.listener.copies._fields
                ),
                "the outside write's invalidation",
            )
            assert await reader.cache.get_first_page(scope, 5) == (b"second", None)
            key = f"items:pages:{scope}"
            await outside.pexpire(key, 3000)  # itself a change: the copy goes
            await _eventually(lambda: reader.listener.copies.get(key, "5:cursor") is None,
                              "the PEXPIRE's invalidation")  # fmt: skip
            assert await reader.cache.get_first_page(scope, 5) == (b"second", None)
            assert reader.listener.copies.get(key, "5:cursor") is not None
            # Redis expires the key by itself: that too reaches every copy.
            await _eventually(lambda: reader.listener.copies.get(key, "5:cursor") is None,
                              "the expiry's invalidation")  # fmt: skip
            assert await reader.cache.get_first_page(scope, 5) is None
        finally:
            await outside.aclose()

    two(scenario)


def test_a_dropped_connection_serves_nothing_from_memory_until_it_is_back(
    two: Callable[[Scenario], None], services: Services
) -> None:
    async def scenario(processes: tuple[Process, Process]) -> None:
        writer, reader = processes
        scope = str(uuid.uuid4())
        admin = Redis.from_url(_direct_url(services))
        try:
            await writer.cache.set_first_page(scope, 10, b"old", None)
            assert await reader.cache.get_first_page(scope, 10) == (b"old", None)
            assert len(reader.listener.copies) >= 1
            # Every tracking connection of the reader's process is killed by Redis.
            clients = await admin.client_list()
            tracking = [c for c in clients if "t" in c.get("flags", "") or c.get("sub") == "1"]
            assert tracking
            for client in tracking:
                await admin.client_kill_filter(_id=client["id"])
            offs = _reads("page", "off")
            # Whatever the reader does next, its memory is not used: empty, and read through.
            await writer.cache.set_first_page(scope, 10, b"new", None)
            assert await reader.cache.get_first_page(scope, 10) in (None, (b"new", None))
            assert len(reader.listener.copies) == 0
            assert _reads("page", "off") >= offs + 1 or reader.listener.tracking
            # Back by itself, from an empty memory.
            await _eventually(reader.listener.fresh, "tracking back on")
            assert await reader.cache.get_first_page(scope, 10) == (b"new", None)
        finally:
            await admin.aclose()

    two(scenario)


def test_a_fill_overtaken_by_an_invalidation_is_not_kept(
    two: Callable[[Scenario], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race every client-side cache has: the read answers the old value, the write
    lands, its invalidation arrives, then the fill would store the old value for good."""

    async def scenario(processes: tuple[Process, Process]) -> None:
        writer, reader = processes
        owner = uuid.uuid4()
        scope = str(owner)
        await writer.cache.set_first_page(scope, 10, b"old", None)
        original = reader.cache._call

        async def read_then_write(operation: str, *args: Any, **kwargs: Any) -> Any:
            value = await original(operation, *args, **kwargs)
            if operation == "hget":
                await writer.cache.invalidate(owner)  # lands after the read answered
                await _eventually(
                    lambda: not reader.listener.copies._tickets.get(f"items:pages:{scope}"),
                    "the invalidation to void the fill's ticket",
                )
            return value

        monkeypatch.setattr(reader.cache, "_call", read_then_write)
        assert await reader.cache.get_first_page(scope, 10) == (b"old", None)  # what Redis said
        monkeypatch.setattr(reader.cache, "_call", original)
        assert reader.listener.copies.get(f"items:pages:{scope}", "10:cursor") is None
        assert await reader.cache.get_first_page(scope, 10) is None

    two(scenario)
