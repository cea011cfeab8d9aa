"""The memory cache's parts without a Redis: the RESP2 reader at every cut of the stream,
the bounds and tickets of the copies, and the tracking connection against a scripted server
(what it sends, what an invalidation, a flush, a closed or silent connection do)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.services import local_cache
from app.services.local_cache import (
    InvalidationListener,
    LocalCopies,
    ProtocolError,
    RedisAddress,
    encode,
    parse,
)

MESSAGES = [
    (b"*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n",
     [b"subscribe", b"__redis__:invalidate", 1]),
    (b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$13\r\nprincipal:abc\r\n"
     b"$14\r\nitems:pages:al\r\n",
     [b"message", b"__redis__:invalidate", [b"principal:abc", b"items:pages:al"]]),
    (b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*-1\r\n",
     [b"message", b"__redis__:invalidate", None]),
    (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", [b"pong", b""]),
    (b"+OK\r\n", b"OK"),
    (b":42\r\n", 42),
    (b"$-1\r\n", None),
]  # fmt: skip


def test_every_reply_is_read_whole_or_not_at_all_wherever_the_stream_is_cut() -> None:
    stream = b"".join(raw for raw, _ in MESSAGES)
    expected = [value for _, value in MESSAGES]
    for cut in range(len(stream) + 1):
        got: list[Any] = []
        buffer = bytearray(stream[:cut])
        start = 0
        while True:
            value, start_after = parse(buffer, start)
            if value is local_cache._MISSING:
                assert start_after == start
                break
            got.append(value)
            start = start_after
        buffer += stream[cut:]
        while start < len(buffer):
            value, start = parse(buffer, start)
            got.append(value)
        assert got == expected, cut


def test_errors_come_back_as_values_and_commands_are_bulk_arrays() -> None:
    error, used = parse(b"-NOAUTH Authentication required.\r\n")
    assert isinstance(error, ProtocolError)
    assert str(error) == "NOAUTH Authentication required."
    assert used == 34
    assert encode("CLIENT", "ID") == b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"
    assert encode("SUBSCRIBE", b"a\r\nb") == b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\na\r\nb\r\n"
    with pytest.raises(ProtocolError):
        parse(b"?what\r\n")


def _filled(copies: LocalCopies, key: str, field: str, value: Any, size: int) -> bool:
    return copies.put(copies.ticket(key), key, field, value, size)


def test_copies_are_bounded_in_number_and_bytes_least_recently_used_first() -> None:
    copies = LocalCopies(max_entries=3, max_bytes=100, max_age_seconds=60)
    for name in ("a", "b", "c"):
        assert _filled(copies, f"principal:{name}", "", name, 10)
    assert copies.get("principal:a", "") == "a"  # now the most recently used
    assert _filled(copies, "principal:d", "", "d", 10)
    assert [copies.get(f"principal:{n}", "") for n in "abcd"] == ["a", None, "c", "d"]
    assert copies.size_bytes == 30
    # Used in the order a, c, d: 80 bytes more make 110, and `a` goes.
    assert _filled(copies, "items:pages:x", "10:cursor", "big", 80)
    assert (len(copies), copies.size_bytes) == (3, 100)
    assert copies.get("principal:a", "") is None
    assert _filled(copies, "items:pages:z", "10:cursor", "more", 15)  # c and d go for it
    assert (len(copies), copies.size_bytes) == (2, 95)
    assert [copies.get("principal:c", ""), copies.get("principal:d", "")] == [None, None]
    assert not _filled(copies, "items:pages:y", "10:cursor", "huge", 101)  # never fits
    assert copies.get("items:pages:y", "10:cursor") is None
    assert copies.size_bytes == 95


def test_copies_expire_after_their_age(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    copies = LocalCopies(max_entries=10, max_bytes=1000, max_age_seconds=30)
    assert _filled(copies, "principal:a", "", "a", 1)
    now[0] += 30
    assert copies.get("principal:a", "") == "a"
    now[0] += 0.001
    assert copies.get("principal:a", "") is None
    assert len(copies) == 0
    assert copies.size_bytes == 0


def test_a_fill_is_kept_only_if_no_invalidation_of_its_key_came_first() -> None:
    copies = LocalCopies(max_entries=10, max_bytes=1000, max_age_seconds=60)
    first, other = copies.ticket("items:pages:all"), copies.ticket("principal:a")
    copies.invalidate("items:pages:all")
    assert not copies.put(first, "items:pages:all", "10:cursor", "old", 3)
    assert copies.put(other, "principal:a", "", "a", 1)  # another key's fill is unaffected
    ticket = copies.ticket("principal:a")
    copies.clear()  # the connection dropped: every fill in flight is void too
    assert not copies.put(ticket, "principal:a", "", "a", 1)
    ticket = copies.ticket("principal:b")
    copies.release(ticket, "principal:b")
    assert copies._tickets == {}
    assert _filled(copies, "items:pages:all", "10:cursor", "p10", 3)
    assert _filled(copies, "items:pages:all", "20:cursor", "p20", 3)
    copies.invalidate("items:pages:all")  # every page size of the listing
    assert (len(copies), copies.size_bytes) == (0, 0)


class FakeRedis:
    """A scripted Redis: answers the handshake, records every command, answers PING while
    `answering`, and pushes what the test sends."""

    def __init__(self) -> None:
        self.commands: list[list[bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.answering = True
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buffer = bytearray()
        while chunk := await reader.read(65536):
            buffer += chunk
            while True:
                command, used = parse(buffer)
                if command is local_cache._MISSING:
                    break
                del buffer[:used]
                self.commands.append(command)
                name = command[0].upper()
                if name == b"CLIENT" and command[1].upper() == b"ID":
                    writer.write(b":7\r\n")
                elif name == b"SUBSCRIBE":
                    writer.write(MESSAGES[0][0])
                elif name == b"PING":
                    if self.answering:
                        writer.write(MESSAGES[3][0])
                else:
                    writer.write(b"+OK\r\n")
                await writer.drain()

    async def push(self, raw: bytes) -> None:
        self.writers[-1].write(raw)
        await self.writers[-1].drain()

    async def close_connections(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def stop(self) -> None:
        await self.close_connections()
        if self.server is not None:
            self.server.close()


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def _with_listener(
    scenario: Callable[[FakeRedis, InvalidationListener], Awaitable[None]],
) -> None:
    async def main() -> None:
        redis = FakeRedis()
        port = await redis.start()
        copies = LocalCopies(max_entries=10, max_bytes=1000, max_age_seconds=60)
        address = RedisAddress("127.0.0.1", port, db=3, username="app", password="s3cret")
        listener = InvalidationListener(address, copies)
        listener.start()
        try:
            await _until(listener.fresh, "tracking on")
            await scenario(redis, listener)
        finally:
            await listener.stop()
            await redis.stop()

    asyncio.run(main())


def test_the_connection_asks_redis_to_broadcast_the_tracked_prefixes_to_itself() -> None:
    async def scenario(redis: FakeRedis, listener: InvalidationListener) -> None:
        assert redis.commands[:5] == [
            [b"AUTH", b"app", b"s3cret"],
            [b"SELECT", b"3"],
            [b"CLIENT", b"ID"],
            [b"CLIENT", b"TRACKING", b"ON", b"REDIRECT", b"7", b"BCAST",
             b"PREFIX", b"items:pages:", b"PREFIX", b"principal:"],
            [b"SUBSCRIBE", b"__redis__:invalidate"],
        ]  # fmt: skip
        await _until(lambda: [b"PING"] in redis.commands, "a PING")

    _with_listener(scenario)


def test_invalidations_drop_their_keys_and_a_flush_drops_everything() -> None:
    async def scenario(redis: FakeRedis, listener: InvalidationListener) -> None:
        copies = listener.copies
        for key in ("principal:abc", "items:pages:al", "principal:other"):
            assert _filled(copies, key, "", key, 1)
        await redis.push(MESSAGES[1][0])
        await _until(lambda: len(copies) == 1, "the two keys dropped")
        assert copies.get("principal:other", "") == "principal:other"
        await redis.push(MESSAGES[2][0])
        await _until(lambda: len(copies) == 0, "everything dropped")
        assert listener.fresh()

    _with_listener(scenario)


def test_a_closed_connection_empties_the_memory_until_tracking_is_back() -> None:
    async def scenario(redis: FakeRedis, listener: InvalidationListener) -> None:
        assert _filled(listener.copies, "principal:a", "", "a", 1)
        connections = len(redis.writers)
        await redis.close_connections()
        await _until(lambda: not listener.fresh(), "tracking off")
        assert len(listener.copies) == 0
        await _until(lambda: len(redis.writers) > 0, "a new connection")
        await _until(listener.fresh, "tracking back on")
        assert connections == 1
        assert [b"SUBSCRIBE", b"__redis__:invalidate"] in redis.commands[5:]

    _with_listener(scenario)


def test_a_connection_that_stops_answering_serves_nothing_from_memory() -> None:
    """A partition shows no closed socket: the PINGs go unanswered, and after FRESH_SECONDS
    nothing is served from memory, whatever it holds."""

    async def scenario(redis: FakeRedis, listener: InvalidationListener) -> None:
        redis.answering = False
        assert _filled(listener.copies, "principal:a", "", "a", 1)
        await _until(lambda: not listener.fresh(), "copies off without answers")
        redis.answering = True
        await _until(listener.fresh, "tracking back on")
        assert listener.copies.get("principal:a", "") is None

    _with_listener(scenario)


class _AlwaysFresh:
    """A listener whose connection is up: the copies may be served."""

    def __init__(self) -> None:
        self.copies = LocalCopies(max_entries=10, max_bytes=1000, max_age_seconds=60)
        self.up = True

    def fresh(self) -> bool:
        return self.up


class _SlowRedis:
    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()

    async def get(self, key: str) -> bytes:
        self.reads += 1
        await self.release.wait()
        return b"[true, false, 4]"


def test_requests_that_miss_the_same_principal_share_one_redis_read() -> None:
    """The fault: a burst of requests for one user made one Redis GET each (11-21 per second
    where about one would do): every request in flight missed at once."""
    import uuid

    from app.services.cache import ReadCache

    async def main() -> None:
        redis, listener = _SlowRedis(), _AlwaysFresh()
        cache = ReadCache(redis, 60, listener)  # type: ignore[arg-type]
        user = uuid.uuid4()
        readers = [asyncio.create_task(cache.get_principal(user)) for _ in range(20)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        redis.release.set()
        found = await asyncio.gather(*readers)
        assert redis.reads == 1
        assert {(p.id, p.is_active, p.credential_version) for p in found if p} == {(user, True, 4)}
        assert len([p for p in found if p]) == 20
        assert await cache.get_principal(user) == found[0]  # from memory now
        assert redis.reads == 1
        listener.up = False  # the connection is down: memory is not used
        assert await cache.get_principal(user) == found[0]
        assert redis.reads == 2

    asyncio.run(main())


class _RedisThatFailsWrites(_SlowRedis):
    def __init__(self) -> None:
        super().__init__()
        self.release.set()

    async def set(self, *args: object, **kwargs: object) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        raise RedisConnectionError("gone")


def test_a_change_redis_did_not_take_is_not_served_from_this_processs_memory() -> None:
    """A deactivation whose SET failed left the old principal in this process's memory,
    served as active until its copy aged out (LOCAL_CACHE_SECONDS)."""
    import uuid

    from app.services.access import Principal
    from app.services.cache import ReadCache

    async def main() -> None:
        redis, listener = _RedisThatFailsWrites(), _AlwaysFresh()
        cache = ReadCache(redis, 60, listener)  # type: ignore[arg-type]
        user = uuid.uuid4()
        assert (await cache.get_principal(user)) is not None  # now in memory
        assert redis.reads == 1
        deactivated = Principal(id=user, is_active=False, is_superuser=False, credential_version=5)
        await cache.set_principal(deactivated, changed=True)
        # Not the active principal from memory: Redis is skipped for a moment after the
        # failure, so the caller reads the database (None here), as on any miss.
        assert await cache.get_principal(user) is None

    asyncio.run(main())
